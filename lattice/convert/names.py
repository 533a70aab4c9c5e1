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
BitNet's projections are packed ternary codes plus a scale, unpacked into the float
kernel of lattice's `bitnet` linear with the same ternary weight (convert/ternary.py);
its SubLN norms (attn_sub_norm, ffn_sub_norm) are lattice's `subln` scales.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from lattice import config as config_lib
from lattice.convert import ternary

Path = tuple[str, ...]
# read(hf_name, transpose=False, out=None) -> the tensor (transposed), already in the
# leaf's dtype: `HFCheckpoint.get` with the dtype bound.
Read = Callable[..., np.ndarray]
# lattice path -> (HF tensor names, fn(read) -> lattice array).
Plan = dict[Path, tuple[tuple[str, ...], Callable[[Read], np.ndarray]]]


def _heads(w_T: np.ndarray, n: int | None, heads_out: bool) -> np.ndarray:
  """kernel[in, out] -> [in, n, Dh] (heads_out) or [n, Dh, out] (an output
  projection reading the heads); unchanged for n None. Views, no copies."""
  if n is None:
    return w_T
  if heads_out:
    return w_T.reshape(w_T.shape[0], n, -1)
  return w_T.reshape(n, -1, w_T.shape[1])


def _linear(name: str, n: int | None = None, heads_out: bool = True):
  """weight[out, in] -> kernel[in, out] (out split into (n, Dh) when n is given), or
  for an output projection (heads_out=False) weight[D, n*Dh] -> kernel[n, Dh, D].
  The transpose is done by the reader into a fresh array; the reshapes are views."""
  return lambda read: _heads(read(name, transpose=True), n, heads_out)


def _ternary_linear(name: str, n: int | None = None, heads_out: bool = True):
  """BitNet's packed weight[out/4, in] + weight_scale -> the float kernel of
  lattice's `bitnet` linear with the same ternary weight (convert/ternary.py)."""
  def fn(read):
    packed = read(name, dtype=np.uint8)
    return _heads(ternary.unpack_kernel(packed, read(_scale(name), dtype=np.float64),
                                        name), n, heads_out)
  return fn


def _scale(name: str) -> str:
  return name.removesuffix('.weight') + '.weight_scale'


def _stack_linear(names: tuple[str, ...]):
  """E expert weights [out, in] -> [E, in, out], each read straight into its slot."""
  def fn(read):
    first = read(names[0], transpose=True)
    out = np.empty((len(names), *first.shape), first.dtype)
    out[0] = first
    del first
    for e, name in enumerate(names[1:], 1):
      read(name, transpose=True, out=out[e])
    return out
  return fn


def _same(name: str):
  return lambda read: read(name)


def _bias(name: str, n: int):
  return lambda read: read(name).reshape(n, -1)


def _add(plan: Plan, path: Path, make, name: str, *args, **kwargs) -> None:
  """plan[path] = ((name,), make(name, ...)): one HF tensor -> one lattice leaf
  (two for a packed ternary weight: it and its scale)."""
  names = (name, _scale(name)) if make is _ternary_linear else (name,)
  plan[path] = (names, make(name, *args, **kwargs))


def _attention(plan: Plan, p: Path, hf: str, m: config_lib.ModelConfig,
               linear=_linear) -> None:
  H, K = m.n_heads, m.n_kv_heads
  for name, hf_name, n in (('query', 'q', H), ('key', 'k', K), ('value', 'v', K)):
    _add(plan, p + (name, 'kernel'), linear, f'{hf}.{hf_name}_proj.weight', n)
    if m.attention.qkv_bias:
      _add(plan, p + (name, 'bias'), _bias, f'{hf}.{hf_name}_proj.bias', n)
  _add(plan, p + ('out', 'kernel'), linear, f'{hf}.o_proj.weight', H, heads_out=False)
  if m.subln:  # BitNet 2B4T: RMSNorm over the concatenated heads before o_proj
    _add(plan, p + ('subln', 'scale'), _same, f'{hf}.attn_sub_norm.weight')
  if m.attention.qk_norm:
    _add(plan, p + ('query_norm', 'scale'), _same, f'{hf}.q_norm.weight')
    _add(plan, p + ('key_norm', 'scale'), _same, f'{hf}.k_norm.weight')


def _dense_ffn(plan: Plan, p: Path, hf: str, names=('gate_proj', 'up_proj', 'down_proj'),
               linear=_linear, subln: bool = False):
  for lattice_name, hf_name in zip(('wi_0', 'wi_1', 'wo'), names):
    _add(plan, p + (lattice_name, 'kernel'), linear, f'{hf}.{hf_name}.weight')
  if subln:  # BitNet 2B4T: RMSNorm over the FFN width before down_proj
    _add(plan, p + ('subln', 'scale'), _same, f'{hf}.ffn_sub_norm.weight')


def _moe(plan: Plan, p: Path, hf: str, m: config_lib.ModelConfig, family: str,
         layer: int) -> None:
  E = m.ffn.n_experts
  if family == 'mixtral':
    hf = hf.replace('.mlp', '.block_sparse_moe')
    names = ('w1', 'w3', 'w2')
  else:
    names = ('gate_proj', 'up_proj', 'down_proj')
  _add(plan, p + ('router',), _linear, f'{hf}.gate.weight')
  for lattice_name, hf_name in zip(('wi_0', 'wi_1', 'wo'), names):
    experts = tuple(f'{hf}.experts.{e}.{hf_name}.weight' for e in range(E))
    plan[p + (lattice_name,)] = (experts, _stack_linear(experts))
  if m.ffn.n_shared:
    _dense_ffn(plan, p + ('shared',), f'{hf}.shared_experts')
  if m.ffn.router_bias:
    _add(plan, ('extra', 'moe_bias', f'layers_{layer}', 'ffn', 'bias'), _same,
         f'{hf}.gate.e_score_correction_bias')


def plan(m: config_lib.ModelConfig, family: str) -> Plan:
  """The import plan: every lattice leaf that comes from the checkpoint."""
  out: Plan = {}
  # BitNet's projections are packed ternary; its embedding and output head are float.
  linear = _ternary_linear if family == 'bitnet' else _linear
  _add(out, ('params', 'embed', 'embedding'), _same, 'model.embed_tokens.weight')
  for i in range(m.n_layers):
    p, hf = ('params', f'layers_{i}'), f'model.layers.{i}'
    _add(out, p + ('attention_norm', 'scale'), _same, f'{hf}.input_layernorm.weight')
    _add(out, p + ('ffn_norm', 'scale'), _same, f'{hf}.post_attention_layernorm.weight')
    _attention(out, p + ('attention',), f'{hf}.self_attn', m, linear)
    if m.ffn.kind == 'moe':
      _moe(out, p + ('ffn',), f'{hf}.mlp', m, family, i)
    else:
      _dense_ffn(out, p + ('ffn',), f'{hf}.mlp', linear=linear, subln=m.subln)
  if m.tie_embeddings:
    scale = np.sqrt(m.d_model)
    out[('params', 'final_norm', 'scale')] = (
        ('model.norm.weight',),
        lambda read: read('model.norm.weight', dtype=np.float32) * scale)
  else:
    _add(out, ('params', 'final_norm', 'scale'), _same, 'model.norm.weight')
    _add(out, ('params', 'unembed', 'kernel'), _linear, 'lm_head.weight')
  return out


# HF tensors that carry nothing lattice needs (recomputed buffers).
IGNORED_SUFFIXES = ('rotary_emb.inv_freq',)
