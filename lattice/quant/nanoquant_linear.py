"""`model.linear.kind='nanoquant'`: a projection stored as binary factors and scales.

Shape legend: K the contracted features (flattened), N the output features
(flattened), r the rank.

W ~ s_in (sign(U) sign(V)^T) s_out (NanoQuant; fitted by lattice.quant.nanoquant).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice.quant import linear, ste

KIND = 'nanoquant'
SCALE_BITS = 16  # s_in and s_out are stored as float16


def rank_for(bits: float, k: int, n: int, multiple: int = 8) -> int:
  r = (bits * k * n / (k + n) - SCALE_BITS) // multiple * multiple
  return int(max(r, multiple))


def bits_per_weight(r: int, k: int, n: int) -> float:
  return (r + SCALE_BITS) * (k + n) / (k * n)


def _sign(x: jax.Array) -> jax.Array:
  return jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)


def binary_weight(u_Kxr, v_Nxr, s_in_K, s_out_N) -> jax.Array:
  """s_in * (sign(U) sign(V)^T) * s_out, with straight-through gradients to U, V."""
  su = ste.straight_through(u_Kxr, _sign)
  sv = ste.straight_through(v_Nxr, _sign)
  return s_in_K[:, None] * (su @ sv.T) * s_out_N[None, :]


class NanoQuantLinear(linear.Linear):
  """A projection stored as binary factors and two scale vectors."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n_in = len(self.in_axes)
    in_shape = x.shape[x.ndim - n_in:]
    k, n = math.prod(in_shape), math.prod(self.features)
    r = rank_for(self.cfg.nq_bits, k, n, self.cfg.nq_rank_multiple)
    init = nn.initializers.normal(1.0)
    u = self.param('u', init, (k, r), self.param_dtype)
    v = self.param('v', init, (n, r), self.param_dtype)
    s_in = self.param('s_in', nn.initializers.ones_init(), (k,), self.param_dtype)
    s_out = self.param('s_out', nn.initializers.constant(1.0 / math.sqrt(k * r)), (n,),
                       self.param_dtype)
    w = binary_weight(u, v, s_in, s_out).reshape(*in_shape, *self.features)
    x, w = x.astype(self.dtype), w.astype(self.dtype)
    y = jax.lax.dot_general(
        x, w, (((tuple(range(x.ndim - n_in, x.ndim))), tuple(range(n_in))), ((), ())))
    b = self.bias()
    return y if b is None else y + b.astype(self.dtype)
