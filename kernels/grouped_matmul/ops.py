"""Grouped matmul in XLA without per-block weight copies (MegaBlocks-style dropless MoE).

Shape legend: N rows (sorted by group), I input features, O output features, E
groups (experts), B rows of a big tile, S rows of a small tile, R = N + B padded rows.

y[r] = x[r] @ w[e] for each row r of group e (the groups are consecutive runs of
sizes_E[e] rows, as after sorting assignments by expert); the same contract as
`jax.lax.ragged_dot`, which on CPU is 2-5x slower than the dense matmul it replaces.

Method (the gmm/tgmm split of MegaBlocks, arXiv 2211.15841, and of Pallas megablox,
done with XLA loops): each group's rows are cut into full tiles of B rows and a
remainder covered by tiles of S rows; a `while_loop` runs one [B, I] x [I, O] dot per
big tile and one [S, I] x [I, O] dot per small tile, reading w[e] in place (a dynamic
index, no gathered copy) and writing its rows of y with a dynamic update (the small
tiles' rows past the group's end are masked). The trip counts are the actual tile
counts (at most N/B and N/S + E), so padding is under S rows per group, not the
worst case. The backward is written out (`jax.custom_vjp`), because a `while_loop`
has no reverse-mode rule: dx is the same loop with w[e] transposed, and dw (tgmm)
accumulates x_tile^T dy_tile into dw[e] in place. Exact: every output row is one
plain dot, as in the reference.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

SMALL = 16  # rows of a small tile: bounds the padding per group


def big_tile_rows(n: int, n_groups: int) -> int:
  """Rows of a big tile: the power of two <= half the mean group size, in [32, 128].

  Half the mean keeps most groups at two or more big tiles, so few rows fall to the
  small tiles; 128 caps it (the block size rule of moe/dispatch.py found larger
  blocks no faster on CPU) and 32 keeps tiny groups from looping over many small
  dots. A reasoned default, not a tuned one: no sweep of tile sizes was run.
  """
  half = max(n // max(n_groups, 1) // 2, 1)
  return int(min(128, max(32, 1 << (half.bit_length() - 1))))


def _tables(sizes_E: jax.Array, n: int, big: int, small: int):
  """Tile tables: (start row, group, valid rows) of big and small tiles, and counts.

  Static lengths n // big and n // small + E bound the tile counts for any sizes.
  """
  E = sizes_E.shape[0]
  sizes_E = sizes_E.astype(jnp.int32)
  start_E = jnp.cumsum(sizes_E) - sizes_E
  nb_E = sizes_E // big
  rem_E = sizes_E - nb_E * big
  ns_E = (rem_E + small - 1) // small

  def table(count_E, length, tile, offset_E):
    ends_E = jnp.cumsum(count_E)
    i = jnp.arange(length, dtype=jnp.int32)
    e = jnp.minimum(jnp.searchsorted(ends_E, i, side='right'), E - 1).astype(jnp.int32)
    j = i - (ends_E - count_E)[e]
    start = start_E[e] + offset_E[e] + j * tile
    end = start_E[e] + sizes_E[e]
    return start, e, jnp.clip(end - start, 0, tile), ends_E[-1]

  big_t = table(nb_E, max(n // big, 1), big, jnp.zeros_like(nb_E))
  small_t = table(ns_E, n // small + E, small, nb_E * big)
  return big_t, small_t


def _loop(count, body, init):
  """fori_loop over a traced trip count (a while_loop; no reverse-mode rule)."""
  return jax.lax.fori_loop(0, count, body, init)


def _gmm(x_NxI, w, sizes_E, transpose_w: bool, big: int, small: int):
  """Forward loop: y_NxO from x_NxI and w_ExIxO (or w_ExOxI with transpose_w)."""
  n = x_NxI.shape[0]
  o = w.shape[1] if transpose_w else w.shape[2]
  out_dtype = jnp.result_type(x_NxI.dtype, w.dtype)
  x_RxI = jnp.pad(x_NxI, ((0, big), (0, 0)))
  dims = (((1,), (1 if transpose_w else 0,)), ((), ()))
  (b_start, b_e, _, b_n), (s_start, s_e, s_valid, s_n) = _tables(sizes_E, n, big, small)

  def big_body(i, y_RxO):
    x_BxI = jax.lax.dynamic_slice_in_dim(x_RxI, b_start[i], big)
    y_BxO = jax.lax.dot_general(x_BxI, w[b_e[i]], dims).astype(out_dtype)
    return jax.lax.dynamic_update_slice_in_dim(y_RxO, y_BxO, b_start[i], 0)

  def small_body(i, y_RxO):
    x_SxI = jax.lax.dynamic_slice_in_dim(x_RxI, s_start[i], small)
    y_SxO = jax.lax.dot_general(x_SxI, w[s_e[i]], dims).astype(out_dtype)
    keep_S = jnp.arange(small) < s_valid[i]
    old_SxO = jax.lax.dynamic_slice_in_dim(y_RxO, s_start[i], small)
    return jax.lax.dynamic_update_slice_in_dim(
        y_RxO, jnp.where(keep_S[:, None], y_SxO, old_SxO), s_start[i], 0)

  y_RxO = jnp.zeros((n + big, o), out_dtype)
  y_RxO = _loop(s_n, small_body, _loop(b_n, big_body, y_RxO))
  return y_RxO[:n]


def _tgmm(x_NxI, dy_NxO, sizes_E, n_groups: int, big: int, small: int, w_dtype):
  """dw_ExIxO[e] = sum over group e's rows r of x[r]^T dy[r]."""
  n, i_dim = x_NxI.shape
  o = dy_NxO.shape[1]
  x_RxI = jnp.pad(x_NxI, ((0, big), (0, 0)))
  dy_RxO = jnp.pad(dy_NxO, ((0, big), (0, 0)))
  (b_start, b_e, _, b_n), (s_start, s_e, s_valid, s_n) = _tables(sizes_E, n, big, small)
  dims = (((0,), (0,)), ((), ()))
  acc_dtype = jnp.promote_types(w_dtype, jnp.float32)

  def add(dw, e, x_TxI, dy_TxO):
    upd_IxO = jax.lax.dot_general(x_TxI, dy_TxO, dims, preferred_element_type=acc_dtype)
    cur_1xIxO = jax.lax.dynamic_slice_in_dim(dw, e, 1)
    return jax.lax.dynamic_update_slice_in_dim(dw, cur_1xIxO + upd_IxO[None], e, 0)

  def big_body(i, dw):
    return add(dw, b_e[i], jax.lax.dynamic_slice_in_dim(x_RxI, b_start[i], big),
               jax.lax.dynamic_slice_in_dim(dy_RxO, b_start[i], big))

  def small_body(i, dw):
    keep_Sx1 = (jnp.arange(small) < s_valid[i])[:, None]
    x_SxI = jax.lax.dynamic_slice_in_dim(x_RxI, s_start[i], small)
    return add(dw, s_e[i], jnp.where(keep_Sx1, x_SxI, 0),
               jax.lax.dynamic_slice_in_dim(dy_RxO, s_start[i], small))

  dw = jnp.zeros((n_groups, i_dim, o), acc_dtype)
  dw = _loop(s_n, small_body, _loop(b_n, big_body, dw))
  return dw.astype(w_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _grouped(x_NxI, w_ExIxO, sizes_E, big, small):
  return _gmm(x_NxI, w_ExIxO, sizes_E, False, big, small)


def _grouped_fwd(x_NxI, w_ExIxO, sizes_E, big, small):
  return _gmm(x_NxI, w_ExIxO, sizes_E, False, big, small), (x_NxI, w_ExIxO, sizes_E)


def _grouped_bwd(big, small, res, dy_NxO):
  x_NxI, w_ExIxO, sizes_E = res
  dx_NxI = _gmm(dy_NxO, w_ExIxO, sizes_E, True, big, small).astype(x_NxI.dtype)
  dw_ExIxO = _tgmm(x_NxI, dy_NxO, sizes_E, w_ExIxO.shape[0], big, small, w_ExIxO.dtype)
  return dx_NxI, dw_ExIxO, None


_grouped.defvjp(_grouped_fwd, _grouped_bwd)


def grouped_matmul(x_NxI: jax.Array, w_ExIxO: jax.Array, sizes_E: jax.Array, *,
                   big: int | None = None, small: int = SMALL) -> jax.Array:
  """y_NxO = x @ w[group of row], rows sorted by group (`jax.lax.ragged_dot`'s contract).

  x_NxI float, w_ExIxO float, sizes_E int (rows per group; sum <= N, rows past the
  sum are 0). Differentiable in x and w. big, small: tile rows (see module doc);
  big=None: `big_tile_rows(N, E)`.
  Raises ValueError for mismatched shapes.
  """
  if x_NxI.ndim != 2 or w_ExIxO.ndim != 3 or x_NxI.shape[1] != w_ExIxO.shape[1]:
    raise ValueError(f'grouped_matmul: want x [N, I] and w [E, I, O], got '
                     f'{list(x_NxI.shape)} and {list(w_ExIxO.shape)}')
  if sizes_E.shape != (w_ExIxO.shape[0],):
    raise ValueError(f'grouped_matmul: sizes must be [E] = [{w_ExIxO.shape[0]}], got '
                     f'{list(sizes_E.shape)}')
  big = big or big_tile_rows(x_NxI.shape[0], w_ExIxO.shape[0])
  return _grouped(x_NxI, w_ExIxO, sizes_E, big, small)
