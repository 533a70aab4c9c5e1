"""A whole expert FFN per tile: grouped (dropless) SwiGLU-style FFN in one XLA loop.

Shape legend: N rows (sorted by group), D model width, F expert FFN width, E groups
(experts), t rows of one tile (a power of two), R = N + max tile rows.

y[r] = (act(x[r] @ w0[e]) * (x[r] @ w1[e])) @ wo[e] for each row r of group e (the
groups are consecutive runs of sizes_E[e] rows, as after sorting assignments by
expert); with w1=None the FFN is ungated, act(x[r] @ w0[e]) @ wo[e].

Why one loop for the whole FFN: `ops.grouped_matmul` runs one tile loop per matmul,
nine loops per MoE layer's forward+backward, each iteration one small dot. Here the
forward is one loop whose iteration does the tile's three dots, and the backward one
loop whose iteration does its six (dh, dx from both up-projections, and the three
weight gradients accumulated into dw[e] in place); every loop iteration reads w[e]
in place (dynamic index, no gathered copy), so the fixed cost per iteration is paid
a third as often and the activations never leave the tile.

Tiles: each group's rows are cut into tiles of `levels[0]` rows, then at most one
tile of each smaller level for the remainder, the last level (`levels[-1]` rows)
covering what is left with at most two tiles that may run past the group's end.
Such a tile computes rows of the next group with this group's weights; those rows
are not wrong for long, because the last level runs first and every later write to
a row comes from its own group's tile (tiles of one loop are in group order, and a
tile never starts before its own group). The backward zeroes dy past the group's
end, so those rows add nothing to dw and write dx = 0 that the owning tile
overwrites. Padding is thus under `levels[-1]` rows per group, not the worst case,
and the loop trip counts are the actual tile counts. Exact: each output row is the
same dots as the reference (reference.grouped_ffn_reference).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def tile_levels(n: int, n_groups: int) -> tuple[int, ...]:
  """Tile sizes for N rows over E groups: powers of two from half the mean group
  size (within [32, 256]) down to 16.

  Half the mean keeps most groups at two or more full tiles; 16 bounds the padding
  per group at 16 rows. The same rule as `ops.big_tile_rows`, capped at 256 instead
  of 128. At E=32 (d_model 256, 4096 rows) tops of 64, 128 and 256 gave the same
  fwd+bwd CPU time within 5% in one run on the loaded 2-core machine (not a
  measurement), so the rule is not tuned further.
  """
  half = max(n // max(n_groups, 1) // 2, 1)
  top = int(min(256, max(32, 1 << (half.bit_length() - 1))))
  out = [top]
  while out[-1] > 16:
    out.append(out[-1] // 2)
  return tuple(out)


def _group_tiles(start, size, levels: Sequence[int], fn, carry):
  """Runs fn(t, tile start, valid rows, carry) over one group's tiles (module doc)."""
  end, off, rem = start + size, start, size
  for i, t in enumerate(levels):
    count = (rem + t - 1) // t if i == len(levels) - 1 else rem // t
    carry = jax.lax.fori_loop(
        0, count, lambda j, c, t=t, off=off: fn(
            t, off + j * t, jnp.clip(end - off - j * t, 0, t), c), carry)
    used = jnp.minimum(count * t, rem)
    off, rem = off + used, rem - used
  return carry


def _expert_loop(sizes_E, levels, fn, carry):
  """fn(e, start, size, carry) for each group e, in order (a fori_loop over E)."""
  sizes_E = sizes_E.astype(jnp.int32)
  start_E = jnp.cumsum(sizes_E) - sizes_E
  return jax.lax.fori_loop(0, sizes_E.shape[0],
                           lambda e, c: fn(e, start_E[e], sizes_E[e], c), carry)


def _rows(a, start, t):
  return jax.lax.dynamic_slice_in_dim(a, start, t)


def _put(a, rows, start):
  return jax.lax.dynamic_update_slice_in_dim(a, rows.astype(a.dtype), start, 0)


def _forward(act, x_NxD, w0, w1, wo, sizes_E, levels):
  n, d = x_NxD.shape
  f = w0.shape[2]
  pad = levels[0]
  x_RxD = jnp.pad(x_NxD, ((0, pad), (0, 0)))
  dtype = x_NxD.dtype

  def expert(e, start, size, carry):
    w0_DxF, wo_FxD = w0[e], wo[e]
    w1_DxF = None if w1 is None else w1[e]

    def tile(t, row, valid, carry):
      del valid  # later tiles overwrite the rows past this group (module doc)
      y_RxD, a_RxF, b_RxF = carry
      x_txD = _rows(x_RxD, row, t)
      a_txF = jnp.dot(x_txD, w0_DxF)
      h_txF = act(a_txF)
      if w1_DxF is not None:
        b_txF = jnp.dot(x_txD, w1_DxF)
        h_txF = h_txF * b_txF
        b_RxF = _put(b_RxF, b_txF, row)
      return (_put(y_RxD, jnp.dot(h_txF.astype(dtype), wo_FxD), row),
              _put(a_RxF, a_txF, row), b_RxF)

    return _group_tiles(start, size, levels, tile, carry)

  zeros = lambda cols: jnp.zeros((n + pad, cols), dtype)
  init = (zeros(d), zeros(f), zeros(f) if w1 is not None else jnp.zeros((0, f), dtype))
  y_RxD, a_RxF, b_RxF = _expert_loop(sizes_E, levels, expert, init)
  keep_Nx1 = (jnp.arange(n) < jnp.sum(sizes_E))[:, None]
  return jnp.where(keep_Nx1, y_RxD[:n], 0), (a_RxF, b_RxF)


def _backward(act, x_NxD, w0, w1, wo, sizes_E, levels, a_RxF, b_RxF, dy_NxD):
  """(dx, dw0, dw1, dwo). The weight gradients are dots of transposed row tiles
  (xT[:, tile] @ da), taken from x and dy transposed once: XLA:CPU sends [M, K] x
  [K, N] dots to its fast (YNNPACK) path but not ones contracting dimension 0."""
  n, d = x_NxD.shape
  pad = levels[0]
  pad_rows = lambda a: jnp.pad(a.astype(x_NxD.dtype), ((0, pad), (0, 0)))
  x_RxD, dy_RxD = pad_rows(x_NxD), pad_rows(dy_NxD)
  xT_DxR, dyT_DxR = x_RxD.T, dy_RxD.T
  acc = jnp.promote_types(w0.dtype, jnp.float32)
  mm = lambda u, v: jnp.dot(u, v, preferred_element_type=acc)
  ntdot = lambda u, v: jax.lax.dot_general(u, v, (((1,), (1,)), ((), ())))
  cols = lambda a, row, t: jax.lax.dynamic_slice_in_dim(a, row, t, axis=1)
  gated = w1 is not None

  def expert(e, start, size, carry):
    dx_RxD, dw0, dw1, dwoT = carry
    w0_DxF, wo_FxD = w0[e], wo[e]
    w1_DxF = w1[e] if gated else None

    def tile(t, row, valid, carry):
      dx_RxD, dw0_DxF, dw1_DxF, dwoT_DxF = carry
      keep_t = jnp.arange(t) < valid
      dy_txD = jnp.where(keep_t[:, None], _rows(dy_RxD, row, t), 0)
      dyT_Dxt = jnp.where(keep_t[None, :], cols(dyT_DxR, row, t), 0)
      xT_Dxt = cols(xT_DxR, row, t)
      a_txF = _rows(a_RxF, row, t)
      if gated:
        h_txF, vjp = jax.vjp(lambda a, b: act(a) * b, a_txF, _rows(b_RxF, row, t))
      else:
        h_txF, vjp = jax.vjp(act, a_txF)
      dwoT_DxF = dwoT_DxF + mm(dyT_Dxt, h_txF)
      grads = vjp(ntdot(dy_txD, wo_FxD).astype(h_txF.dtype))
      dx_txD = ntdot(grads[0], w0_DxF)
      dw0_DxF = dw0_DxF + mm(xT_Dxt, grads[0])
      if gated:
        dx_txD = dx_txD + ntdot(grads[1], w1_DxF)
        dw1_DxF = dw1_DxF + mm(xT_Dxt, grads[1])
      return _put(dx_RxD, dx_txD, row), dw0_DxF, dw1_DxF, dwoT_DxF

    zeros = jnp.zeros(w0.shape[1:], acc)
    dx_RxD, dw0_DxF, dw1_DxF, dwoT_DxF = _group_tiles(
        start, size, levels, tile, (dx_RxD, zeros, zeros if gated else zeros[:0], zeros))
    put = lambda dw, g: jax.lax.dynamic_update_index_in_dim(dw, g.astype(dw.dtype), e, 0)
    return (dx_RxD, put(dw0, dw0_DxF), put(dw1, dw1_DxF) if gated else dw1,
            put(dwoT, dwoT_DxF))

  init = (jnp.zeros((n + pad, d), x_NxD.dtype), jnp.zeros_like(w0),
          jnp.zeros_like(w1) if gated else jnp.zeros((0,), w0.dtype), jnp.zeros_like(w0))
  dx_RxD, dw0, dw1, dwoT = _expert_loop(sizes_E, levels, expert, init)
  keep_Nx1 = (jnp.arange(n) < jnp.sum(sizes_E))[:, None]
  return (jnp.where(keep_Nx1, dx_RxD[:n], 0), dw0, dw1 if gated else None,
          jnp.swapaxes(dwoT, 1, 2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 6))
def _ffn(act, x_NxD, w0, w1, wo, sizes_E, levels):
  return _forward(act, x_NxD, w0, w1, wo, sizes_E, levels)[0]


def _ffn_fwd(act, x_NxD, w0, w1, wo, sizes_E, levels):
  y_NxD, (a_RxF, b_RxF) = _forward(act, x_NxD, w0, w1, wo, sizes_E, levels)
  return y_NxD, (x_NxD, w0, w1, wo, sizes_E, a_RxF, b_RxF)


def _ffn_bwd(act, levels, res, dy_NxD):
  x_NxD, w0, w1, wo, sizes_E, a_RxF, b_RxF = res
  dx, dw0, dw1, dwo = _backward(act, x_NxD, w0, w1, wo, sizes_E, levels, a_RxF, b_RxF,
                                dy_NxD)
  return dx, dw0, dw1, dwo, None


_ffn.defvjp(_ffn_fwd, _ffn_bwd)


def grouped_ffn(x_NxD: jax.Array, w0_ExDxF: jax.Array, w1_ExDxF: jax.Array | None,
                wo_ExFxD: jax.Array, sizes_E: jax.Array, act: Callable, *,
                levels: Sequence[int] | None = None) -> jax.Array:
  """y_NxD = (act(x w0[e]) * (x w1[e])) wo[e] per row r of group e (rows sorted by group).

  x_NxD, w0_ExDxF, w1_ExDxF (None: ungated FFN), wo_ExFxD share one float dtype (the
  compute dtype; cast before calling); sizes_E int, rows per group (sum <= N; rows
  past the sum give 0). `act` an elementwise function (hashable: it is a static
  argument). Differentiable in x and the weights (custom VJP, module doc).
  levels: tile rows, largest first, powers of two (None: `tile_levels(N, E)`).
  Raises ValueError for mismatched shapes or dtypes.
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
  levels = tuple(levels or tile_levels(x_NxD.shape[0], E))
  return _ffn(act, x_NxD, w0_ExDxF, w1_ExDxF, wo_ExFxD, sizes_E, levels)
