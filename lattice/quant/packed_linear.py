"""`model.linear.kind='bitnet_packed'`: BitLinear at inference on 2-bit packed codes.

Shape legend: K the contracted features (flattened), N the output features
(flattened), Kq = ceil(K / 4).

Holds `w_packed` (uint8 [Kq, N]) and `w_scale` instead of a float `kernel`, decoded
through `kernels.ternary_matmul` (see lattice.quant.inference for the export).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels.ternary_matmul import ops
from lattice.quant import linear

KIND = 'bitnet_packed'


class PackedBitLinear(linear.Linear):
  """BitLinear at inference: int8 activations x 2-bit packed ternary weights."""
  impl: str = 'auto'  # ternary_matmul's impl: auto | pallas | xla | reference

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n_in = len(self.in_axes)
    k = math.prod(x.shape[x.ndim - n_in:])
    n = math.prod(self.features)
    w_packed_KqxN = self.param('w_packed', nn.initializers.zeros_init(),
                               (-(-k // 4), n), jnp.uint8)
    w_scale = self.param('w_scale', nn.initializers.ones_init(), (), jnp.float32)
    x_NxK = x.reshape(*x.shape[:x.ndim - n_in], k)
    x_q, sx = ops.quantize_activation(x_NxK)
    y = ops.ternary_matmul(x_q, sx, w_packed_KqxN, w_scale, n, impl=self.impl)
    y = y.reshape(*y.shape[:-1], *self.features).astype(self.dtype)
    b = self.bias()
    return y if b is None else y + b.astype(self.dtype)
