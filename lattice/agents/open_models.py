"""Open instruction models that agent experiments import as teachers and proposers.

An agents experiment's `medium`/`full` mode starts from an imported open model
(`lattice convert hf --from HF_NAME --out runs/DIR`, then
`--config.train.init_from=runs/DIR`). The mode's `model` section must hold that
model's dimensions so `lattice plan` prices it offline, before any download; this
table gives them, copied from each model's `config.json` on the Hugging Face hub
(Qwen2: q/k/v biases, tied embeddings, RoPE theta 1e6, RMSNorm eps 1e-6, SwiGLU),
and `model_section(name, max_len)` turns an entry into `model` fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lattice.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class OpenModel:
  hf_name: str       # the hub repo `lattice convert hf --from` reads
  tokenizer: str     # its `data.tokenizer` spec
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  d_ff: int
  vocab_size: int
  rope_theta: float = 1_000_000.0
  norm_eps: float = 1e-6
  qkv_bias: bool = True
  tie_embeddings: bool = True


OPEN_MODELS: dict[str, OpenModel] = {
    'qwen2.5-0.5b-instruct': OpenModel('Qwen/Qwen2.5-0.5B-Instruct',
                                       'hf:Qwen/Qwen2.5-0.5B-Instruct',
                                       896, 24, 14, 2, 4864, 151_936),
    'qwen2.5-1.5b-instruct': OpenModel('Qwen/Qwen2.5-1.5B-Instruct',
                                       'hf:Qwen/Qwen2.5-1.5B-Instruct',
                                       1536, 28, 12, 2, 8960, 151_936),
}


def model_section(name: str, max_len: int) -> dict[str, Any]:
  """The `model` config fields of OPEN_MODELS[name] (float32 params, bf16 compute
  on accelerators). Raises ConfigError listing the known names."""
  if name not in OPEN_MODELS:
    raise ConfigError(f'open model: unknown {name!r}; choose one of '
                      f'{", ".join(OPEN_MODELS)}')
  m = OPEN_MODELS[name]
  return dict(d_model=m.d_model, n_layers=m.n_layers, vocab_size=m.vocab_size,
              max_len=max_len, norm_eps=m.norm_eps, tie_embeddings=m.tie_embeddings,
              dtype='auto',
              attention=dict(n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                             head_dim=m.d_model // m.n_heads, rope_theta=m.rope_theta,
                             qkv_bias=m.qkv_bias),
              ffn=dict(d_ff=m.d_ff, activation='swiglu'))
