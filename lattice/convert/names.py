"""Where each Hugging Face tensor goes in lattice's parameter tree, and how.

Shape legend: D model width, V vocabulary, H query heads, K kv heads, Dh head width,
F FFN width, E experts.

HF stores a Linear as weight[out, in] and computes x @ W^T; lattice's kernels are
[in..., out...], so every projection is transposed and its fused head axis split
(q_proj [H*Dh, D] -> query/kernel [D, H, Dh]). HF Llama's RoPE is the half-split
("rotate_half") layout, which is lattice's (nn/attention.rope), so q/k rows need no
permutation. lattice's tied output divides the logits by sqrt(D)
(nn/layers.Embed.attend); HF's does not, so a tied model's final norm scale is
multiplied by sqrt(D) on import and divided on export (exact in the forward pass).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lattice import config as config_lib

Path = tuple[str, ...]
# lattice path -> (HF tensor names, fn(arrays in that order) -> lattice array).
Plan = dict[Path, tuple[tuple[str, ...], Callable[..., np.ndarray]]]


def _linear(n: int | None = None, heads_out: bool = True):
  """weight[out, in] -> kernel[in, out] (out split into (n, Dh) when n is given), or
  for an output projection (heads_out=False) weight[D, n*Dh] -> kernel[n, Dh, D]."""
  def fn(w):
    if n is None:
      return w.T
    if heads_out:
      return w.T.reshape(w.shape[1], n, -1)
    return w.T.reshape(n, -1, w.shape[0])
  return fn


def _stack_linear(*ws):
  """E expert weights [out, in] -> [E, in, out]."""
  return np.stack([w.T for w in ws])


def _same(w):
  return w


def _bias(n: int):
  return lambda b: b.reshape(n, -1)


def _attention(plan: Plan, p: Path, hf: str, m: config_lib.ModelConfig) -> None:
  H, K = m.n_heads, m.n_kv_heads
  for name, hf_name, n in (('query', 'q', H), ('key', 'k', K), ('value', 'v', K)):
    plan[p + (name, 'kernel')] = ((f'{hf}.{hf_name}_proj.weight',), _linear(n))
    if m.attention.qkv_bias:
      plan[p + (name, 'bias')] = ((f'{hf}.{hf_name}_proj.bias',), _bias(n))
  plan[p + ('out', 'kernel')] = ((f'{hf}.o_proj.weight',), _linear(H, heads_out=False))
  if m.attention.qk_norm:
    plan[p + ('query_norm', 'scale')] = ((f'{hf}.q_norm.weight',), _same)
    plan[p + ('key_norm', 'scale')] = ((f'{hf}.k_norm.weight',), _same)


def _dense_ffn(plan: Plan, p: Path, hf: str, names=('gate_proj', 'up_proj', 'down_proj')):
  for lattice_name, hf_name in zip(('wi_0', 'wi_1', 'wo'), names):
    plan[p + (lattice_name, 'kernel')] = ((f'{hf}.{hf_name}.weight',), _linear())


def _moe(plan: Plan, p: Path, hf: str, m: config_lib.ModelConfig, family: str,
         layer: int) -> None:
  E = m.ffn.n_experts
  if family == 'mixtral':
    hf = hf.replace('.mlp', '.block_sparse_moe')
    names = ('w1', 'w3', 'w2')
  else:
    names = ('gate_proj', 'up_proj', 'down_proj')
  plan[p + ('router',)] = ((f'{hf}.gate.weight',), _linear())
  for lattice_name, hf_name in zip(('wi_0', 'wi_1', 'wo'), names):
    plan[p + (lattice_name,)] = (
        tuple(f'{hf}.experts.{e}.{hf_name}.weight' for e in range(E)), _stack_linear)
  if m.ffn.n_shared:
    _dense_ffn(plan, p + ('shared',), f'{hf}.shared_experts')
  if m.ffn.router_bias:
    plan[('extra', 'moe_bias', f'layers_{layer}', 'ffn', 'bias')] = (
        (f'{hf}.gate.e_score_correction_bias',), _same)


def plan(m: config_lib.ModelConfig, family: str) -> Plan:
  """The import plan: every lattice leaf that comes from the checkpoint."""
  out: Plan = {('params', 'embed', 'embedding'): (('model.embed_tokens.weight',), _same)}
  for i in range(m.n_layers):
    p, hf = ('params', f'layers_{i}'), f'model.layers.{i}'
    out[p + ('attention_norm', 'scale')] = ((f'{hf}.input_layernorm.weight',), _same)
    out[p + ('ffn_norm', 'scale')] = ((f'{hf}.post_attention_layernorm.weight',), _same)
    _attention(out, p + ('attention',), f'{hf}.self_attn', m)
    if m.ffn.kind == 'moe':
      _moe(out, p + ('ffn',), f'{hf}.mlp', m, family, i)
    else:
      _dense_ffn(out, p + ('ffn',), f'{hf}.mlp')
  if m.tie_embeddings:
    scale = np.sqrt(m.d_model)
    out[('params', 'final_norm', 'scale')] = (('model.norm.weight',), lambda w: w * scale)
  else:
    out[('params', 'final_norm', 'scale')] = (('model.norm.weight',), _same)
    out[('params', 'unembed', 'kernel')] = (('lm_head.weight',), _linear())
  return out


# HF tensors that carry nothing lattice needs (recomputed buffers).
IGNORED_SUFFIXES = ('rotary_emb.inv_freq',)
