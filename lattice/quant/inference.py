"""Packed ternary inference: a trained BitNet b1.58 model with its projections stored
as 2-bit packed codes (4 a byte) and one float scale each, decoded through
`kernels.ternary_matmul` (the Pallas kernel on GPU/TPU; on CPU the native AVX2 /
AVX-512 kernel of `kernels.ternary_cpu` when built, else XLA's unpack-then-dot).

Shape legend: K the contracted features (flattened), N the output features
(flattened), Kq = ceil(K / 4), M tokens.

    packed_cfg, packed_params = pack_model(model_cfg, params)   # host-side export
    logits = Transformer(packed_cfg).apply({'params': packed_params}, tokens)
    sampling.generate({'params': packed_params}, prompt, key, model_cfg=packed_cfg)

`model.linear.kind='bitnet_packed'` builds every projection the `dense()` factory
makes (attention, dense FFN, MTP heads) as a `PackedBitLinear` holding `w_packed`
(uint8 [Kq, N]) and `w_scale` instead of a float `kernel`; embeddings, norms and the
output head stay float, as in training. The forward pass is the fake-quantized
BitLinear's, computed on integer codes: y = (x_q @ w_t) / (sx * sw), so logits match
the fake-quantized model up to float summation order. MoE experts are not packed
(their weights are stacked per expert outside `dense()`); `pack_model` says so.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kernels.ternary_matmul import ops
from lattice import config as config_lib
from lattice import model as model_lib
from lattice.quant import packing

from lattice.quant.packed_linear import KIND


def _pack_kernel(kernel: np.ndarray, n: int, stacked: int) -> tuple[np.ndarray, np.ndarray]:
  """float kernel ([stacked,] *in, *out) -> (uint8 [stacked,] Kq x N, f32 [stacked,])."""
  per = kernel.reshape(max(stacked, 1), -1, n)  # [S, K, N]
  packed, scales = zip(*(ops.pack_weight(w_KxN) for w_KxN in per))
  packed, scales = np.stack([np.asarray(p) for p in packed]), np.asarray(scales, np.float32)
  return (packed, scales) if stacked else (packed[0], scales[0])


def pack_model(model_cfg: config_lib.ModelConfig, params: Any
               ) -> tuple[config_lib.ModelConfig, dict]:
  """(packed model config, packed params) from a trained `linear.kind='bitnet'` model.

  Walks the packed model's own parameter tree (from `eval_shape`): every `w_packed` /
  `w_scale` pair is made from the float `kernel` at the same path, everything else is
  copied. Scanned layers (a leading 'layers' axis) are packed layer by layer.
  """
  if model_cfg.linear.kind != 'bitnet':
    raise config_lib.ConfigError(
        f'model.linear.kind: packing needs a BitNet b1.58 model (bitnet), got '
        f'{model_cfg.linear.kind!r}')
  if model_cfg.ffn.kind != 'dense':
    raise config_lib.ConfigError(
        f'model.ffn.kind: packed inference covers dense FFNs; {model_cfg.ffn.kind!r} '
        f'experts keep their fake-quantized weights (not packed)')
  packed_cfg = dataclasses.replace(
      model_cfg, linear=dataclasses.replace(model_cfg.linear, kind=KIND))
  model = model_lib.make_model(packed_cfg)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))
  want = flax.traverse_util.flatten_dict(nn.unbox(shapes['params']))
  have = flax.traverse_util.flatten_dict(jax.device_get(nn.unbox(params)))
  out = {}
  for path, shape in want.items():
    if path[-1] == 'w_packed':
      kernel = np.asarray(have[path[:-1] + ('kernel',)], np.float32)
      stacked = kernel.shape[0] if len(shape.shape) == 3 else 0
      out[path], out[path[:-1] + ('w_scale',)] = _pack_kernel(kernel, shape.shape[-1],
                                                              stacked)
    elif path[-1] != 'w_scale':
      if path not in have:
        raise ValueError(f'pack_model: the trained params have no {"/".join(path)}')
      out[path] = np.asarray(have[path])
  for path, shape in want.items():
    if out[path].shape != shape.shape:
      raise ValueError(f'pack_model: {"/".join(path)} packed to {out[path].shape}, '
                       f'the packed model wants {shape.shape}')
  return packed_cfg, flax.traverse_util.unflatten_dict(
      jax.tree.map(jnp.asarray, out))


def weight_bytes(params: Any) -> dict[str, int]:
  """Bytes of the model's weights: projections (packed or float) and the rest."""
  flat = flax.traverse_util.flatten_dict(nn.unbox(params))
  proj = sum(v.nbytes for p, v in flat.items() if p[-1] in ('kernel', 'w_packed', 'w_scale')
             and 'unembed' not in p)
  total = sum(v.nbytes for v in flat.values())
  return {'projection_bytes': int(proj), 'total_bytes': int(total)}


def projection_bytes_at(params: Any, bits_per_weight: float) -> int:
  """Bytes the float projection kernels of `params` take at `bits_per_weight` (one
  float32 scale per projection): 16 for bf16, 2 for 2-bit, 1.6 for base-3 packing."""
  flat = flax.traverse_util.flatten_dict(nn.unbox(params))
  kernels = [v for p, v in flat.items() if p[-1] == 'kernel' and 'unembed' not in p]
  return int(sum(math.ceil(v.size * bits_per_weight / 8) + 4 for v in kernels))


def base3_bytes(codes) -> int:
  """Bytes of ternary codes packed 5 a byte (1.6 bits per weight), for memory tables."""
  return int(packing.pack_ternary_base3(codes).data.nbytes)
