"""`model.linear.kind='nanoquant'`: a projection stored as binary factors and scales.

Shape legend: K the contracted features (flattened), N the output features
(flattened), r the rank.

W ~ s_in (sign(U) sign(V)^T) s_out (NanoQuant; fitted by lattice.quant.nanoquant).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice.errors import ConfigError
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


@dataclasses.dataclass(frozen=True)
class NanoQuant:
  """NanoQuant's own fields of `model.linear` (read only when its kind is 'nanoquant').

  The rank is r = (bits*K*N/(K+N) - 16) rounded down to a multiple of
  `nq_rank_multiple` (`rank_for`): the paper rounds to 32; 8 keeps tiny models'
  budgets apart.
  """
  nq_bits: float = 1.0         # target bits per weight, scales counted
  nq_rank_multiple: int = 8    # the rank is rounded down to a multiple of this

  def check(self, cfg) -> None:
    """Raises ConfigError naming `model.linear.<field>` for a non-positive value."""
    del cfg
    for field in ('nq_bits', 'nq_rank_multiple'):
      if getattr(self, field) <= 0:
        raise ConfigError(f'model.linear.{field}: must be positive, got '
                          f'{getattr(self, field)}')


class NanoQuantLinear(linear.Linear):
  """A projection stored as binary factors and two scale vectors."""
  options = NanoQuant  # its fields of model.linear, checked once when the config is built

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
