"""Tool calls from a trained model: batched greedy decoding of requests (optionally
constrained to the call schema) and the forward FLOPs of one call.

Shape legend: B rows per decode batch.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lattice.agents import toolcall
from lattice import config as config_lib
from lattice.data import tokenizer as tok_lib
from lattice.data.tasks import toolcalls
from lattice.decode import sampling
from lattice.train import flops as flops_lib


def answer(cfg, variables: Any, requests: list[str], *, constrained: bool,
           batch: int, max_new: int) -> list[str]:
  """Greedy calls (text up to EOS) for `requests` from the model of Config `cfg`,
  in batches of `batch` rows (a short last batch is padded: one compiled shape per
  model); `constrained` compiles the call schema into the decoder."""
  if (cfg.data.tokenizer or 'byte') != 'byte':
    # The call constraint and the task's prompts are built over byte ids.
    raise config_lib.ConfigError(
        f'data.tokenizer: tool-call answers are decoded over the byte vocabulary; '
        f'set data.tokenizer=byte, got {cfg.data.tokenizer!r}')
  tok = tok_lib.ByteTokenizer()
  prompts = np.stack([tok.encode(toolcalls.prompt_of(r), bos=True) for r in requests])
  index = toolcall.call_constraint(cfg.model.vocab_size) if constrained else None
  out = []
  for i in range(0, len(prompts), batch):
    chunk_BxL = prompts[i:i + batch]
    chunk_BxL = np.concatenate([chunk_BxL, np.repeat(chunk_BxL[-1:],
                                                     batch - len(chunk_BxL), 0)])
    new = sampling.generate(variables, chunk_BxL, jax.random.key(0),
                            model_cfg=cfg.model, max_new_tokens=max_new,
                            sampling=sampling.SamplingConfig(0.0), constraint=index,
                            eos_id=tok_lib.EOS_ID, pad_id=tok_lib.PAD_ID)
    for row in np.asarray(new)[:len(prompts[i:i + batch])].tolist():
      out.append(tok.decode(row[:row.index(tok_lib.EOS_ID)] if tok_lib.EOS_ID in row
                            else row))
  return out


def flops_per_call(params: Any, model_cfg, prompt_len: int, call_bytes: float,
                   axes: Any = None) -> float:
  """Forward FLOPs of one call: 2N per token (N active matmul parameters) plus
  attention, 4 L D T^2 / 2 over the T = prompt + call + EOS tokens (Kaplan et al.
  2020, arXiv 2001.08361 table 1, causal half). `params` boxed, or unboxed with their
  logical `axes` (`Setup.param_axes`)."""
  n = flops_lib.matmul_params(params, model_cfg, axes=axes)
  tokens = prompt_len + call_bytes + 1  # + EOS
  attn = 4 * model_cfg.n_layers * model_cfg.d_model * tokens * tokens / 2
  return 2 * n * tokens + attn
