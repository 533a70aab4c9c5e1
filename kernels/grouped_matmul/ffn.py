"""Grouped (dropless) SwiGLU FFN: a native per-expert BLAS kernel, or (XLA path)
batched dots over per-group windows with loops past them.

Shape legend: N rows (sorted by group), D model width, F expert FFN width, E groups
(experts), C window rows per group.

y[r] = (act(x[r] @ w0[e]) * (x[r] @ w1[e])) @ wo[e] for each row r of group e (the
groups are consecutive runs of sizes_E[e] rows, as after sorting assignments by
expert); with w1=None the FFN is ungated, act(x[r] @ w0[e]) @ wo[e].

(The MoE layer's dropless path on CPU, float32 with the kernel built, runs SwiGLU
experts through `moe.moe_swiglu` instead, which also fuses the token gather and the
combine; this FFN serves the other activations there, and every dtype and backend.)

Which path (`impl`): 'auto' runs `native.grouped_ffn_native` (one product per expert
over its sorted rows, small_gemm.h's or OpenBLAS's, through an XLA FFI call; nine
grouped products, no
padding) for float32 on the CPU backend when the kernel is built and scipy-openblas32
is installed (`native_applies`), and the XLA windows path below otherwise (other
dtypes, other backends, no kernel, or an explicit window/levels). In single-core
CPU-time A/B runs on the shared 2-core machine (30 Nov; decisions, not measurements)
the FFN fwd+bwd at the MoE benchmark's shapes (4096 rows, D = F = 256, the router's
loads) took ~1.1-1.25x the dense FFN's time on the native path and ~1.5x on the
windows: XLA:CPU runs the windows' batched dots at ~75-87 GFLOP/s a core where
OpenBLAS runs the same per-expert products at ~97-98 with its AVX2 kernels and
~200-235 with the AVX-512 ones it now loads on AVX-512 CPUs (module doc of native.py).

The XLA windows path. Each group's first C rows (its window: rows [start_e,
start_e + C) of x, gathered into x_ExCxD) go through three batched dots `[E, C, D] x
[E, D, F]`, one
per weight, which XLA:CPU runs as single large YNNPACK calls spread over its threads;
a group with fewer than C rows fills its window with the next group's rows, whose
outputs are discarded (and whose dy is zeroed in the backward). The rows a group has
past its window (its remainder, sizes_E[e] - C rows) go through `tiles.py`'s loop,
which visits only the groups that have one. So no row is dropped, whatever the
loads, and the padding is at most C rows per group (none when every group holds
C rows or more). The backward is a custom VJP: the same batched dots for dx and the
weight gradients of the windows, then the remainder loop adding its weight
gradients in place; gathers (never scatter-adds) move rows in and out of windows.

Why windows: the tile loop alone (the previous path) issues one small dot at a
time, about 3 per tile forward and 6 backward; at E = 32 (4096 rows, ~128 per
expert) the MoE layer on it measured 2.71x the dense FFN's fwd+bwd on the idle
2-core CPU (BENCHMARKS.md), and in single-core CPU-time runs on the loaded machine (not
measurements) the windows took ~0.7-0.8x the loop's time; on the idle machine
the windowed layer measured 1.35x / 1.31x / 1.52x the dense FFN at E = 8 / 16 / 32
(`d8c521c`, BENCHMARKS.md). C is chosen from the shapes
(`window_rows`): the balanced load, rounded down, so a balanced router pays almost
no padding and an imbalanced one sends only its overflow through the loop.
Exact: each output row is the same three dots as the reference
(reference.grouped_ffn_reference), in a different grouping of rows.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from kernels.grouped_matmul import native, tiles

# Re-exported: tile sizes of the remainder loop.
tile_levels = tiles.tile_levels


def window_rows(n: int, n_groups: int) -> int:
  """C: the balanced group size N / E rounded down to a multiple of 16, at least 16.

  Rounded down because a window row past a group's end is wasted work while a row
  past its window still runs (in the tile loop, at a higher cost per row). The
  rounding to 16 matches the tile loop's smallest tile.
  """
  return max(16, n // max(n_groups, 1) // 16 * 16)


class _Plan:
  """Window and remainder index tables for sizes_E (all int32, traced)."""

  def __init__(self, sizes_E: jax.Array, n: int, window: int):
    sizes_E = sizes_E.astype(jnp.int32)
    ends_E = jnp.cumsum(sizes_E)
    starts_E = ends_E - sizes_E
    pos_C = jnp.arange(window, dtype=jnp.int32)
    # Window rows past N read row N - 1: they are past their group (masked).
    self.slot_ExC = jnp.minimum(starts_E[:, None] + pos_C[None], n - 1)
    self.valid_ExC = pos_C[None] < sizes_E[:, None]
    row_N = jnp.arange(n, dtype=jnp.int32)
    group_N = jnp.minimum(jnp.searchsorted(ends_E, row_N, side='right'),
                          sizes_E.shape[0] - 1)
    pos_N = row_N - starts_E[group_N]
    self.back_N = group_N * window + jnp.minimum(pos_N, window - 1)
    self.live_N = row_N < ends_E[-1]  # rows past the groups' total give 0
    rem_E = jnp.maximum(sizes_E - window, 0)
    self.remainder = tiles.Groups(
        jnp.argsort(rem_E == 0, stable=True).astype(jnp.int32), starts_E + window, rem_E,
        jnp.sum(rem_E > 0).astype(jnp.int32))

  def windows(self, a_NxD: jax.Array) -> jax.Array:
    """a_ExCxD: each group's window of rows."""
    return a_NxD[self.slot_ExC]

  def unwindow(self, y_ExCxD: jax.Array) -> jax.Array:
    """y_NxD: every row from its group's window (rows past a window hold a stand-in
    value until the remainder loop writes them; rows past the total are 0)."""
    y_NxD = y_ExCxD.reshape(-1, y_ExCxD.shape[-1])[self.back_N]
    return jnp.where(self.live_N[:, None], y_NxD, 0)


def _forward(act, x_NxD, w0, w1, wo, sizes_E, window, levels):
  dtype = x_NxD.dtype
  plan = _Plan(sizes_E, x_NxD.shape[0], window)
  x_ExCxD = plan.windows(x_NxD)
  a_ExCxF = jnp.einsum('ecd,edf->ecf', x_ExCxD, w0)
  h_ExCxF = act(a_ExCxF)
  b_ExCxF = None
  if w1 is not None:
    b_ExCxF = jnp.einsum('ecd,edf->ecf', x_ExCxD, w1)
    h_ExCxF = h_ExCxF * b_ExCxF
  y_ExCxD = jnp.einsum('ecf,efd->ecd', h_ExCxF.astype(dtype), wo)
  y_NxD = tiles.forward(act, x_NxD, w0, w1, wo, plan.remainder, levels,
                        plan.unwindow(y_ExCxD))
  return y_NxD, (x_ExCxD, a_ExCxF, b_ExCxF)


def _backward(act, x_NxD, w0, w1, wo, sizes_E, window, levels, res, dy_NxD):
  x_ExCxD, a_ExCxF, b_ExCxF = res
  dtype = x_NxD.dtype
  plan = _Plan(sizes_E, x_NxD.shape[0], window)
  acc = jnp.promote_types(w0.dtype, jnp.float32)
  gated = w1 is not None
  dy_ExCxD = jnp.where(plan.valid_ExC[..., None], plan.windows(dy_NxD.astype(dtype)), 0)
  if gated:
    h_ExCxF, vjp = jax.vjp(lambda a, b: act(a) * b, a_ExCxF, b_ExCxF)
  else:
    h_ExCxF, vjp = jax.vjp(act, a_ExCxF)
  wgrad = lambda u_ExCxI, v_ExCxO: jnp.einsum('eci,eco->eio', u_ExCxI, v_ExCxO,
                                              preferred_element_type=acc)
  dwo = wgrad(h_ExCxF.astype(dtype), dy_ExCxD)
  grads = vjp(jnp.einsum('ecd,efd->ecf', dy_ExCxD, wo).astype(h_ExCxF.dtype))
  da_ExCxF = grads[0].astype(dtype)
  dw0 = wgrad(x_ExCxD, da_ExCxF)
  dx_ExCxD = jnp.einsum('ecf,edf->ecd', da_ExCxF, w0)
  dw1 = jnp.zeros((0,), acc)
  if gated:
    db_ExCxF = grads[1].astype(dtype)
    dw1 = wgrad(x_ExCxD, db_ExCxF)
    dx_ExCxD = dx_ExCxD + jnp.einsum('ecf,edf->ecd', db_ExCxF, w1)
  dx_NxD, (dw0, dw1, dwo) = tiles.backward(
      act, x_NxD, w0, w1, wo, plan.remainder, levels, dy_NxD,
      plan.unwindow(dx_ExCxD).astype(x_NxD.dtype), (dw0, dw1, dwo))
  return (dx_NxD, dw0.astype(w0.dtype), dw1.astype(w1.dtype) if gated else None,
          dwo.astype(wo.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 6, 7))
def _ffn(act, x_NxD, w0, w1, wo, sizes_E, window, levels):
  return _forward(act, x_NxD, w0, w1, wo, sizes_E, window, levels)[0]


def _ffn_fwd(act, x_NxD, w0, w1, wo, sizes_E, window, levels):
  y_NxD, res = _forward(act, x_NxD, w0, w1, wo, sizes_E, window, levels)
  return y_NxD, (x_NxD, w0, w1, wo, sizes_E, res)


def _ffn_bwd(act, window, levels, saved, dy_NxD):
  x_NxD, w0, w1, wo, sizes_E, res = saved
  dx, dw0, dw1, dwo = _backward(act, x_NxD, w0, w1, wo, sizes_E, window, levels, res,
                                dy_NxD)
  return dx, dw0, dw1, dwo, None


_ffn.defvjp(_ffn_fwd, _ffn_bwd)


IMPLS = ('auto', 'native', 'windows')


def native_applies(dtype) -> bool:
  """Whether impl='auto' takes the native kernel for this compute dtype: float32 on
  the CPU backend with the kernel built and OpenBLAS present (`native.available()`)."""
  return (jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == 'cpu'
          and native.available())


def grouped_ffn(x_NxD: jax.Array, w0_ExDxF: jax.Array, w1_ExDxF: jax.Array | None,
                wo_ExFxD: jax.Array, sizes_E: jax.Array, act: Callable, *,
                window: int | None = None,
                levels: Sequence[int] | None = None, impl: str = 'auto') -> jax.Array:
  """y_NxD = (act(x w0[e]) * (x w1[e])) wo[e] per row r of group e (rows sorted by group).

  x_NxD, w0_ExDxF, w1_ExDxF (None: ungated FFN), wo_ExFxD share one float dtype (the
  compute dtype; cast before calling); sizes_E int, rows per group (sum <= N; rows
  past the sum give 0). `act` an elementwise function (hashable: it is a static
  argument). Differentiable in x and the weights (custom VJP, module doc).
  window: rows per group in the batched dots (None: `window_rows(N, E)`); levels:
  the remainder loop's tile rows, largest first, powers of two, the last <= window
  (None: `tile_levels(N, E)` cut to <= window).
  Raises ValueError for mismatched shapes or dtypes, or levels past the window.
  """
  E, D, F = w0_ExDxF.shape
  ws = [w for w in (w0_ExDxF, w1_ExDxF) if w is not None]
  if (x_NxD.ndim != 2 or x_NxD.shape[1] != D or any(w.shape != (E, D, F) for w in ws)
      or wo_ExFxD.shape != (E, F, D)):
    raise ValueError(f'grouped_ffn: want x [N, D], w0/w1 [E, D, F], wo [E, F, D], got '
                     f'{list(x_NxD.shape)}, {[list(w.shape) for w in ws]}, '
                     f'{list(wo_ExFxD.shape)}')
  if sizes_E.shape != (E,):
    raise ValueError(f'grouped_ffn: sizes must be [E] = [{E}], got {list(sizes_E.shape)}')
  if len({a.dtype for a in (x_NxD, *ws, wo_ExFxD)}) != 1:
    raise ValueError('grouped_ffn: x and the weights must share one dtype, got '
                     f'{[str(a.dtype) for a in (x_NxD, *ws, wo_ExFxD)]}')
  if impl not in IMPLS:
    raise ValueError(f'grouped_ffn: impl must be one of {IMPLS}, got {impl!r}')
  tuned = window is not None or levels is not None  # the windows path's own settings
  if impl == 'native' or (impl == 'auto' and not tuned and native_applies(x_NxD.dtype)):
    if jnp.dtype(x_NxD.dtype) != jnp.float32:
      raise ValueError(f'grouped_ffn: impl=native takes float32, got {x_NxD.dtype}')
    return native.grouped_ffn_native(x_NxD, w0_ExDxF, w1_ExDxF, wo_ExFxD, sizes_E, act)
  n = x_NxD.shape[0]
  window = int(window or window_rows(n, E))
  if levels is None:
    levels = tuple(t for t in tile_levels(n, E) if t <= window) or (window,)
  levels = tuple(levels)
  if levels[-1] > window:
    raise ValueError(f'grouped_ffn: the smallest tile ({levels[-1]} rows) must not '
                     f'exceed the window ({window} rows)')
  return _ffn(act, x_NxD, w0_ExDxF, w1_ExDxF, wo_ExFxD, sizes_E, window, levels)
