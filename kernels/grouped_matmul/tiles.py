"""Tile loops of the grouped SwiGLU FFN over given row runs, writing in place.

Shape legend: N rows (sorted by group), D model width, F expert FFN width, E groups
(experts), G visited groups, t rows of one tile (a power of two, <= N).

y[r] = (act(x[r] @ w0[e]) * (x[r] @ w1[e])) @ wo[e] for each row r of a run of group
e; with w1=None the FFN is ungated, act(x[r] @ w0[e]) @ wo[e]. `ffn.grouped_ffn`
runs each group's first rows as batched dots and leaves the rest of each group (its
remainder: one run of rows [start, start + size)) to these loops, which visit only
the groups listed in `Groups`.

One loop per direction: the forward's iteration does a tile's three dots, the
backward's its eight (the two up-projections recomputed, dh, dx from both, and the
three weight gradients added into dw[e] in place), so the forward saves nothing
and no buffer of N rows is allocated: rows are written into the caller's y or dx
(donated loop carries, updated in place). Every iteration reads w[e] in place
(dynamic index, no gathered copy). The remainder is a small share of the rows when
the windows fit the loads, which is why recomputing beats saving here.

Tiles: a run is cut into tiles of `levels[0]` rows, then at most one tile of each
smaller level, the last level covering what is left with at most two tiles. A tile
is a slice of t rows starting at its first row, moved back to end at row N when it
would pass it; only the tile's rows inside the run are written (a masked write) or
contribute to dw (dy is zeroed elsewhere), so no padding of x, y or dx is needed.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp


class Groups(NamedTuple):
  """The runs a loop visits: for i < count, group e = ids_G[i] has the run of rows
  [starts_E[e], starts_E[e] + sizes_E[e]) (the rest of ids_G is not visited)."""
  ids_G: jax.Array
  starts_E: jax.Array
  sizes_E: jax.Array
  count: jax.Array


def tile_levels(n: int, n_groups: int) -> tuple[int, ...]:
  """Tile sizes for N rows over E groups: powers of two from half the mean group
  size (within [32, 256]) down to 16.

  Half the mean keeps most groups at two or more full tiles; 16 bounds the wasted
  rows of a run's last tile. At E=32 (d_model 256, 4096 rows) tops of 64, 128 and
  256 gave the same fwd+bwd CPU time within 5% in one run on the loaded 2-core
  machine (not a measurement), so the rule is not tuned further.
  """
  half = max(n // max(n_groups, 1) // 2, 1)
  top = int(min(256, max(32, 1 << (half.bit_length() - 1))))
  out = [top]
  while out[-1] > 16:
    out.append(out[-1] // 2)
  return tuple(out)


def _run_tiles(start, size, levels: Sequence[int], n: int, fn, carry):
  """fn(t, slice start, keep_t, carry) over the tiles of the run [start, start+size):
  the slice of t rows starts at min(tile start, n - t); keep_t marks its rows in the
  run (module doc)."""
  end, off, rem = start + size, start, size
  for i, t in enumerate(levels):
    count = (rem + t - 1) // t if i == len(levels) - 1 else rem // t

    def tile(j, c, t=t, off=off):
      first = off + j * t
      lo = jnp.minimum(first, n - t)
      row_t = lo + jnp.arange(t, dtype=jnp.int32)
      return fn(t, lo, (row_t >= first) & (row_t < end), c)

    carry = jax.lax.fori_loop(0, count, tile, carry)
    used = jnp.minimum(count * t, rem)
    off, rem = off + used, rem - used
  return carry


def _group_loop(groups: Groups, fn, carry):
  """fn(e, start, size, carry) for each visited group, in the order of ids_G."""
  def body(i, c):
    e = groups.ids_G[i]
    return fn(e, groups.starts_E[e], groups.sizes_E[e], c)
  return jax.lax.fori_loop(0, groups.count, body, carry)


def _rows(a, start, t):
  return jax.lax.dynamic_slice_in_dim(a, start, t)


def _put_masked(a, rows, start, keep_t):
  """a with rows [start, start + t) replaced where keep_t (the others kept)."""
  old = _rows(a, start, rows.shape[0])
  new = jnp.where(keep_t[:, None], rows.astype(a.dtype), old)
  return jax.lax.dynamic_update_slice_in_dim(a, new, start, 0)


def check_levels(levels: Sequence[int], n: int) -> tuple[int, ...]:
  """levels cut to tiles of at most n rows (a tile slice must fit in x)."""
  out = tuple(t for t in levels if t <= n)
  return out or (n,)


def forward(act, x_NxD, w0, w1, wo, groups: Groups, levels, y_NxD):
  """y_NxD with the visited runs' rows computed (the other rows as given)."""
  n = x_NxD.shape[0]
  levels = check_levels(levels, n)
  dtype = x_NxD.dtype

  def expert(e, start, size, y_NxD):
    w0_DxF, wo_FxD = w0[e], wo[e]

    def tile(t, row, keep_t, y_NxD):
      x_txD = _rows(x_NxD, row, t)
      h_txF = act(jnp.dot(x_txD, w0_DxF))
      if w1 is not None:
        h_txF = h_txF * jnp.dot(x_txD, w1[e])
      return _put_masked(y_NxD, jnp.dot(h_txF.astype(dtype), wo_FxD), row, keep_t)

    return _run_tiles(start, size, levels, n, tile, y_NxD)

  return _group_loop(groups, expert, y_NxD)


def backward(act, x_NxD, w0, w1, wo, groups: Groups, levels, dy_NxD, dx_NxD, dws):
  """(dx_NxD, (dw0, dw1, dwo)): the visited runs' rows of dx written into the given
  dx_NxD, and their weight gradients added into dws = (dw0 [E, D, F], dw1 (or an
  empty array when ungated), dwo [E, F, D]), which carry the accumulation dtype."""
  n = x_NxD.shape[0]
  levels = check_levels(levels, n)
  acc = dws[0].dtype
  tdot = lambda u, v: jax.lax.dot_general(u, v, (((0,), (0,)), ((), ())),
                                          preferred_element_type=acc)  # u^T v
  ntdot = lambda u, v: jax.lax.dot_general(u, v, (((1,), (1,)), ((), ())))  # u v^T
  gated = w1 is not None
  dy_NxD = dy_NxD.astype(x_NxD.dtype)

  def expert(e, start, size, carry):
    dx_NxD, (dw0, dw1, dwo) = carry
    w0_DxF, wo_FxD = w0[e], wo[e]
    w1_DxF = w1[e] if gated else None

    def tile(t, row, keep_t, carry):
      dx_NxD, dw0_DxF, dw1_DxF, dwo_FxD = carry
      x_txD = _rows(x_NxD, row, t)
      dy_txD = jnp.where(keep_t[:, None], _rows(dy_NxD, row, t), 0)
      a_txF = jnp.dot(x_txD, w0_DxF)
      if gated:
        h_txF, vjp = jax.vjp(lambda a, b: act(a) * b, a_txF, jnp.dot(x_txD, w1_DxF))
      else:
        h_txF, vjp = jax.vjp(act, a_txF)
      dwo_FxD = dwo_FxD + tdot(h_txF, dy_txD)
      grads = vjp(ntdot(dy_txD, wo_FxD).astype(h_txF.dtype))
      dx_txD = ntdot(grads[0], w0_DxF)
      dw0_DxF = dw0_DxF + tdot(x_txD, grads[0])
      if gated:
        dx_txD = dx_txD + ntdot(grads[1], w1_DxF)
        dw1_DxF = dw1_DxF + tdot(x_txD, grads[1])
      return _put_masked(dx_NxD, dx_txD, row, keep_t), dw0_DxF, dw1_DxF, dwo_FxD

    dx_NxD, dw0_e, dw1_e, dwo_e = _run_tiles(
        start, size, levels, n, tile, (dx_NxD, dw0[e], dw1[e] if gated else dw1, dwo[e]))
    put = lambda dw, g: jax.lax.dynamic_update_index_in_dim(dw, g, e, 0)
    return dx_NxD, (put(dw0, dw0_e), put(dw1, dw1_e) if gated else dw1, put(dwo, dwo_e))

  return _group_loop(groups, expert, (dx_NxD, dws))
