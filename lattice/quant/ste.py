"""Straight-through quantizers (BitNet b1.58, arXiv 2402.17764) as `jax.custom_vjp`s.

Shape legend: N any leading dims, D the quantized (contracted) axis.

Every quantizer returns values of the input's dtype, computes in float32, and has an
exactly-identity gradient (the straight-through estimator): the backward pass is
`g -> g`, not the autodiff of `x + stop_gradient(q(x) - x)`, so it is exact in bf16
too. All functions are pure and work under jit, vmap and grad.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

# Floors of the scale denominators (BitNet b1.58 reference code / PAPERS.md).
WEIGHT_EPS = 1e-5
ACT_EPS = 1e-5
INT8_MAX = 127


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def straight_through(x: jax.Array,
                     quantize: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """quantize(x) forward, identity backward. `quantize` must keep shape and dtype."""
  return quantize(x)


def _ste_fwd(x, quantize):
  return quantize(x), None


def _ste_bwd(quantize, _, g):
  del quantize
  return (g,)


straight_through.defvjp(_ste_fwd, _ste_bwd)


def _axes(x: jax.Array, axes: int | Sequence[int]) -> tuple[int, ...]:
  axes = (axes,) if isinstance(axes, int) else tuple(axes)
  return tuple(a % x.ndim for a in axes)


def ternary_codes(w: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(codes int8 in {-1, 0, 1}, scale s) with w ~= codes / s; s = 1/mean|w| (absmean)."""
  w32 = w.astype(jnp.float32)
  s = 1.0 / jnp.maximum(jnp.mean(jnp.abs(w32)), WEIGHT_EPS)
  return jnp.clip(jnp.round(w32 * s), -1, 1).astype(jnp.int8), s


def _ternary(w: jax.Array) -> jax.Array:
  codes, s = ternary_codes(w)
  return (codes.astype(jnp.float32) / s).astype(w.dtype)


def ternary_weight(w: jax.Array) -> jax.Array:
  """BitNet b1.58 per-tensor absmean ternary weights, clip(round(w*s), -1, 1)/s, STE."""
  return straight_through(w, _ternary)


def int8_codes(x: jax.Array, axes: int | Sequence[int] = -1
               ) -> tuple[jax.Array, jax.Array]:
  """(codes int8 in [-128, 127], scale s_Nx1) with x ~= codes / s, per token absmax.

  `axes` are the token's feature axes (the contracted ones); s = 127/max|x| over them,
  with max|x| floored at 1e-5 so an all-zero token stays zero.
  """
  axes = _axes(x, axes)
  x32 = x.astype(jnp.float32)
  amax = jnp.max(jnp.abs(x32), axis=axes, keepdims=True)
  s = INT8_MAX / jnp.maximum(amax, ACT_EPS)
  return jnp.clip(jnp.round(x32 * s), -128, 127).astype(jnp.int8), s


def int8_activation(x: jax.Array, axes: int | Sequence[int] = -1) -> jax.Array:
  """BitNet b1.58 per-token absmax int8 activation, clip(round(x*s), -128, 127)/s, STE."""
  axes = _axes(x, axes)

  def q(x):
    codes, s = int8_codes(x, axes)
    return (codes.astype(jnp.float32) / s).astype(x.dtype)

  return straight_through(x, q)
