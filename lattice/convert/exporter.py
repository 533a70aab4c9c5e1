"""`export_hf(run, out)`: a lattice run's plain decoder -> a Hugging Face directory.

Plain means float linears, a dense gated FFN (SwiGLU or tanh-GeGLU), no MTP heads,
a text frontend and no SubLN; anything else raises ConvertError naming the field.
The directory (`config.json`, `model.safetensors`, and the tokenizer files an
imported run kept) loads with `transformers.AutoModelForCausalLM` as
LlamaForCausalLM, or Qwen2ForCausalLM when the run has q/k/v biases, or
Qwen3ForCausalLM when it normalizes q/k. Tensors are the inverse of
`lattice.convert.names` (kernel[in, out] -> weight[out, in]; a tied model's final
norm scale divided by sqrt(D)).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lattice import config as config_lib
from lattice.convert.hf_config import ConvertError
from lattice.convert.importer import TOKENIZER_DIR

INVERSE_ACT = {'swiglu': 'silu', 'geglu': 'gelu_pytorch_tanh'}


def _check_plain(m: config_lib.ModelConfig) -> None:
  for field, value, want in (('model.linear.kind', m.linear.kind, 'float'),
                             ('model.ffn.kind', m.ffn.kind, 'dense'),
                             ('model.mtp.kind', m.mtp.kind, 'none'),
                             ('model.frontend.kind', m.frontend.kind, 'text'),
                             ('model.subln', m.subln, False),
                             ('model.linear.use_bias', m.linear.use_bias, False),
                             ('model.scan_layers', m.scan_layers, False)):
    if value != want:
      raise ConvertError(f'{field}: {value!r}; export writes the plain decoder only '
                         f'(needs {want!r})')
  if m.ffn.activation not in INVERSE_ACT:
    raise ConvertError(f'model.ffn.activation: {m.ffn.activation!r}; export needs a '
                       f'gated FFN ({", ".join(INVERSE_ACT)})')


def hf_config(m: config_lib.ModelConfig, dtype: str) -> dict[str, Any]:
  """The HF config.json of the lattice model `m`."""
  a = m.attention
  if a.qk_norm and a.qkv_bias:
    raise ConvertError('model.attention.qk_norm: with qkv_bias there is no HF Llama-'
                       'family layout to export to')
  arch, model_type = (('Qwen3ForCausalLM', 'qwen3') if a.qk_norm else
                      ('Qwen2ForCausalLM', 'qwen2') if a.qkv_bias else
                      ('LlamaForCausalLM', 'llama'))
  rope: dict[str, Any] = {'rope_type': 'default', 'rope_theta': a.rope_theta}
  if a.rope_scaling == 'linear':
    rope.update(rope_type='linear', factor=a.rope_factor)
  elif a.rope_scaling == 'llama3':
    rope.update(rope_type='llama3', factor=a.rope_factor,
                low_freq_factor=a.rope_low_freq_factor,
                high_freq_factor=a.rope_high_freq_factor,
                original_max_position_embeddings=a.rope_original_max_len)
  return {
      'architectures': [arch], 'model_type': model_type,
      'vocab_size': m.vocab_size, 'hidden_size': m.d_model,
      'intermediate_size': m.d_ff, 'num_hidden_layers': m.n_layers,
      'num_attention_heads': m.n_heads, 'num_key_value_heads': m.n_kv_heads,
      'head_dim': m.head_dim, 'hidden_act': INVERSE_ACT[m.ffn.activation],
      'max_position_embeddings': m.max_len, 'rms_norm_eps': m.norm_eps,
      'tie_word_embeddings': m.tie_embeddings, 'attention_bias': False,
      'mlp_bias': False, 'rope_theta': a.rope_theta, 'rope_parameters': rope,
      # transformers 4.x reads rope_scaling; 5.x rope_parameters.
      'rope_scaling': None if rope['rope_type'] == 'default' else rope,
      'use_sliding_window': False, 'sliding_window': None,
      'torch_dtype': dtype, 'dtype': dtype,
  }


def hf_tensors(params: Any, m: config_lib.ModelConfig) -> dict[str, np.ndarray]:
  """HF tensor name -> array for the plain decoder's `params`."""
  p = jax.tree.map(np.asarray, params)
  out = {'model.embed_tokens.weight': p['embed']['embedding']}
  for i in range(m.n_layers):
    layer, hf = p[f'layers_{i}'], f'model.layers.{i}'
    att = layer['attention']
    out[f'{hf}.input_layernorm.weight'] = layer['attention_norm']['scale']
    out[f'{hf}.post_attention_layernorm.weight'] = layer['ffn_norm']['scale']
    for name, short in (('query', 'q'), ('key', 'k'), ('value', 'v')):
      kernel = att[name]['kernel']  # [D, n, Dh]
      out[f'{hf}.self_attn.{short}_proj.weight'] = kernel.reshape(kernel.shape[0], -1).T
      if m.attention.qkv_bias:
        out[f'{hf}.self_attn.{short}_proj.bias'] = att[name]['bias'].reshape(-1)
    o = att['out']['kernel']  # [H, Dh, D]
    out[f'{hf}.self_attn.o_proj.weight'] = o.reshape(-1, o.shape[-1]).T
    if m.attention.qk_norm:
      out[f'{hf}.self_attn.q_norm.weight'] = att['query_norm']['scale']
      out[f'{hf}.self_attn.k_norm.weight'] = att['key_norm']['scale']
    for name, hf_name in (('wi_0', 'gate_proj'), ('wi_1', 'up_proj'), ('wo', 'down_proj')):
      out[f'{hf}.mlp.{hf_name}.weight'] = layer['ffn'][name]['kernel'].T
  norm = p['final_norm']['scale']
  if m.tie_embeddings:
    norm = norm / np.sqrt(m.d_model).astype(norm.dtype)
  else:
    out['lm_head.weight'] = p['unembed']['kernel'].T
  out['model.norm.weight'] = norm
  return {k: np.ascontiguousarray(v) for k, v in out.items()}


def export_hf(run: str | os.PathLike[str], out: str | os.PathLike[str], *,
              step: int | None = None) -> Path:
  """Writes the run `run` (at `step`, default latest) as a HF directory `out`.

  Raises ConvertError naming the config field when the model is not the plain
  decoder (see module docstring). Returns `out`.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  from lattice.train import artifacts  # pylint: disable=g-import-not-at-top
  run, out = Path(run), Path(out)
  _check_plain(artifacts.load_config(run).model)
  cfg, params = artifacts.load_run(run, step=step)
  m = cfg.model
  out.mkdir(parents=True, exist_ok=True)
  config = hf_config(m, m.param_dtype)
  tensors = hf_tensors(params, m)
  del params
  save_file(tensors, out / 'model.safetensors', metadata={'format': 'pt'})
  (out / 'config.json').write_text(json.dumps(config, indent=1))
  for src, name in tokenizer_files(run, cfg.data.tokenizer):
    shutil.copy2(src, out / name)
  return out


def tokenizer_files(run: Path, spec: str) -> list[tuple[Path, str]]:
  """(file, name in the HF directory) of the run's tokenizer: the files an imported
  run kept in RUN/tokenizer/, else those `data.tokenizer` names when it is a local
  `hf:` file or folder or a `sentencepiece:` model (a fine-tuned imported model);
  none for the byte tokenizer or a hub name."""
  from lattice.convert.safetensors_reader import TOKENIZER_FILES  # pylint: disable=g-import-not-at-top
  kept = run / TOKENIZER_DIR
  kind, _, arg = (spec or 'byte').partition(':')
  if kept.is_dir():
    folder = kept
  elif kind == 'hf' and Path(arg).is_dir():
    folder = Path(arg)
  elif kind == 'hf' and Path(arg).is_file():
    return [(Path(arg), 'tokenizer.json')]
  elif kind in ('sentencepiece', 'spm') and Path(arg).is_file():
    return [(Path(arg), 'tokenizer.model')]
  else:
    return []
  return [(folder / f, f) for f in TOKENIZER_FILES if (folder / f).is_file()]
