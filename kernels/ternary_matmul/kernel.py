"""Pallas kernel: int8 activations x 2-bit packed ternary weights, unpacked in-kernel.

Shape legend: M tokens, K contracted features, N output features, Kq = ceil(K/4)
packed rows (layout in reference.py), Kp = Kq padded to a multiple of bk4; bm, bn,
bk4 block sizes (bk4 packed rows = 4 * bk4 features per K step).

Grid (M/bm, N/bn); each program loops over K in steps of bk4 packed rows. A step
loads one uint8 [bk4, bn] weight tile and turns it into four code planes with shifts
and masks, plane i = ((w >> 2i) & 3) - 1 holding rows 4g + i. The wrapper stores x
as [4, M, Kp] with x_4xMxKp[i, m, g] = x[m, 4g + i], so plane i meets the contiguous
slice x_4xMxKp[i, :, step] and the step is four plain dots, no interleaving.

Dots run in bfloat16 with float32 accumulation. That is exact: int8 codes and
{-1, 0, 1} are exact in bfloat16 (8-bit significand), products are exact, and every
partial sum is an integer below 128 * K, exact in float32 while K < 2**17. So the
kernel matches reference.py bit for bit in that range.

Block sizes are powers of two >= 16 (Triton needs power-of-two tiles and dots of at
least 16); the wrapper zero-pads M, N and K up to whole blocks and slices the result.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from kernels.ternary_matmul import reference

_MIN_BLOCK = 16


def _block(size: int, cap: int) -> int:
  """Smallest power of two >= size, clamped to [16, cap]."""
  p = _MIN_BLOCK
  while p < min(size, cap):
    p *= 2
  return p


def _pad_to(a: jax.Array, axis: int, multiple: int, value=0) -> jax.Array:
  extra = -a.shape[axis] % multiple
  if not extra:
    return a
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, extra)
  return jnp.pad(a, widths, constant_values=value)


def _ternary_matmul_kernel(x_ref, sx_ref, w_ref, sw_ref, o_ref, *, bk4: int,
                           k_steps: int):
  """x_ref int8 [4, bm, Kp], sx_ref [bm, 1], w_ref uint8 [Kp, bn], sw_ref [1, 1]."""
  bm, bn = o_ref.shape

  def k_step(step, acc_bmxbn):
    rows = pl.ds(pl.multiple_of(step * bk4, bk4), bk4)
    w_bk4xbn = w_ref[rows, :].astype(jnp.int32)
    for i, shift in enumerate(reference._SHIFTS):
      plane_bk4xbn = ((w_bk4xbn >> shift) & 3) - 1
      x_bmxbk4 = x_ref[i, :, rows]
      acc_bmxbn += jnp.dot(x_bmxbk4.astype(jnp.bfloat16),
                           plane_bk4xbn.astype(jnp.bfloat16),
                           preferred_element_type=jnp.float32)
    return acc_bmxbn

  acc_bmxbn = jax.lax.fori_loop(0, k_steps, k_step,
                                jnp.zeros((bm, bn), jnp.float32))
  o_ref[...] = acc_bmxbn / (sx_ref[...] * sw_ref[...])


@functools.partial(jax.jit, static_argnames=('n', 'block_m', 'block_n', 'block_k4',
                                             'interpret'))
def ternary_matmul_pallas(x_int8_MxK: jax.Array, x_scale_Mx1: jax.Array,
                          w_packed_KqxN: jax.Array, w_scale: jax.Array, n: int, *,
                          block_m: int = 64, block_n: int = 128, block_k4: int = 64,
                          interpret: bool = False) -> jax.Array:
  """float32 [M, N] = (x_q @ w_t) / (sx * sw) with the Pallas kernel.

  Any M, K, N: the wrapper pads to whole blocks. block_* are caps; each is lowered to
  the smallest power of two >= 16 covering its dimension.
  """
  reference.check_shapes(x_int8_MxK, x_scale_Mx1, w_packed_KqxN, n)
  for name, b in (('block_m', block_m), ('block_n', block_n), ('block_k4', block_k4)):
    if b < _MIN_BLOCK or b & (b - 1):
      raise ValueError(f'ternary_matmul_pallas: {name} must be a power of two >= '
                       f'{_MIN_BLOCK}, got {b}')
  m, k = x_int8_MxK.shape
  kq = w_packed_KqxN.shape[0]
  bm, bn, bk4 = _block(m, block_m), _block(n, block_n), _block(kq, block_k4)

  # x [M, K] -> [4, Mp, Kp] with x_4xMxKp[i, m, g] = x[m, 4g + i]; zero padding.
  x_MxK = _pad_to(_pad_to(x_int8_MxK, 1, 4 * bk4), 0, bm)
  mp, kp = x_MxK.shape[0], x_MxK.shape[1] // 4
  x_4xMxKp = x_MxK.reshape(mp, kp, 4).transpose(2, 0, 1)
  sx_Mx1 = _pad_to(x_scale_Mx1.astype(jnp.float32), 0, bm, value=1.0)
  w_KpxN = _pad_to(_pad_to(w_packed_KqxN, 0, bk4, reference.ZERO_BYTE), 1, bn,
                   reference.ZERO_BYTE)
  np_ = w_KpxN.shape[1]
  sw_1x1 = jnp.asarray(w_scale, jnp.float32).reshape(1, 1)

  compiler_params = None
  if not interpret and jax.default_backend() == 'gpu':
    # pallas_call on GPU defaults to Mosaic GPU (Hopper+, deprecated for pallas_call);
    # this plain tiled kernel targets the Triton backend.
    from jax.experimental.pallas import triton as pltriton
    compiler_params = pltriton.CompilerParams()

  kernel = functools.partial(_ternary_matmul_kernel, bk4=bk4, k_steps=kp // bk4)
  y_MpxNp = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((mp, np_), jnp.float32),
      grid=(mp // bm, np_ // bn),
      in_specs=[
          pl.BlockSpec((4, bm, kp), lambda i, j: (0, i, 0)),
          pl.BlockSpec((bm, 1), lambda i, j: (i, 0)),
          pl.BlockSpec((kp, bn), lambda i, j: (0, j)),
          pl.BlockSpec((1, 1), lambda i, j: (0, 0)),
      ],
      out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
      compiler_params=compiler_params,
      interpret=interpret,
  )(x_4xMxKp, sx_Mx1, w_KpxN, sw_1x1)
  return y_MpxNp[:m, :n]


# --- M <= 8 (decoding): a weight-streaming GEMV ---------------------------------------

# Rows the GEMV takes; more go to the tiled kernel above (whose dots want M >= 16).
GEMV_MAX_M = 8
# Programs the GEMV aims for: a few per SM of a large GPU (an H100/H200 has 132), so
# the weight stream is spread over every SM even where N / block_n is small.
_GEMV_TARGET_PROGRAMS = 256
# Fewest packed rows (4 features each) a K split gets: its int32 partial sums
# ([Mp, bn] per program) then cost at most ~1/16 of the weight bytes it reads.
_GEMV_MIN_SPLIT_ROWS = 128


def _ternary_gemv_kernel(x_ref, w_ref, o_ref, *, bk4: int, k_steps: int):
  """x_ref int8 [4, Mp, Ks], w_ref uint8 [Ks, bn], o_ref int32 [1, Mp, bn].

  Ks = k_steps * bk4 packed rows: this program's share of K (split-K). Integer
  arithmetic throughout: the partial sums are exact and the wrapper adds the splits.
  """
  mp, bn = o_ref.shape[1], o_ref.shape[2]

  def k_step(step, acc_MpxBn):
    rows = pl.ds(pl.multiple_of(step * bk4, bk4), bk4)
    w_bk4xbn = w_ref[rows, :].astype(jnp.int32)
    for i, shift in enumerate(reference._SHIFTS):
      plane_bk4xbn = ((w_bk4xbn >> shift) & 3) - 1
      x_MpxBk4 = x_ref[i, :, rows].astype(jnp.int32)
      # [Mp, bk4, 1] * [1, bk4, bn] summed over bk4: a broadcast multiply-add, no dot
      # (Triton's dots need 16 rows; M is 1-8 here and the loop is bound by the weight
      # stream, 2 bits a weight, each byte read by one program only).
      acc_MpxBn += jnp.sum(x_MpxBk4[:, :, None] * plane_bk4xbn[None, :, :], axis=1)
    return acc_MpxBn

  acc_MpxBn = jax.lax.fori_loop(0, k_steps, k_step, jnp.zeros((mp, bn), jnp.int32))
  o_ref[...] = acc_MpxBn[None]


def gemv_blocks(m: int, kq: int, n: int, block_n: int = 128,
                block_k4: int = 64) -> tuple[int, int, int, int]:
  """(mp, bn, bk4, splits) the GEMV uses for M rows, Kq packed rows and N columns.

  mp: M rounded up to a power of two; bn: a power of two >= 16 up to block_n (128
  bytes: one coalesced row segment), halved while it does not divide N (down to
  16); bk4: block_k4 / mp (>= 4), so a step's [mp, bk4, bn] product stays the same
  size whatever M, halved while it does not divide Kq (down to 4); splits: K split
  into this many programs' shares (a divisor of the K steps, each share
  >= _GEMV_MIN_SPLIT_ROWS packed rows) so that (N / bn) x splits approaches
  _GEMV_TARGET_PROGRAMS. With these divisors a weight whose Kq is a multiple of 4
  and N of 16 (every model width here) is read in place; other shapes are padded,
  which copies the weight on every call.
  Raises ValueError if m is outside 1..GEMV_MAX_M.
  """
  if not 1 <= m <= GEMV_MAX_M:
    raise ValueError(f'ternary_gemv_pallas: M must be 1..{GEMV_MAX_M}, got {m}')
  mp = 1
  while mp < m:
    mp *= 2
  bn = _block(n, block_n)
  while bn > _MIN_BLOCK and n % bn:
    bn //= 2
  bk4 = max(4, block_k4 // mp)
  while bk4 > 4 and (bk4 >= 2 * kq or kq % bk4):
    bk4 //= 2
  k_steps = -(-kq // bk4)
  col_blocks = -(-n // bn)
  splits = max(d for d in range(1, k_steps + 1)
               if k_steps % d == 0 and (d == 1 or (
                   col_blocks * d <= _GEMV_TARGET_PROGRAMS
                   and kq >= d * _GEMV_MIN_SPLIT_ROWS)))
  return mp, bn, bk4, splits


@functools.partial(jax.jit, static_argnames=('n', 'block_n', 'block_k4', 'interpret'))
def ternary_gemv_pallas(x_int8_MxK: jax.Array, x_scale_Mx1: jax.Array,
                        w_packed_KqxN: jax.Array, w_scale: jax.Array, n: int, *,
                        block_n: int = 128, block_k4: int = 64,
                        interpret: bool = False) -> jax.Array:
  """float32 [M, N] = (x_q @ w_t) / (sx * sw) for M <= GEMV_MAX_M: decoding's shape.

  A weight-streaming GEMV (issue #18): grid (N / bn, splits); each program reads its
  [Ks, bn] slice of the 2-bit packed weights once (uint8, 4 weights a byte), unpacks
  it in registers and multiplies the int8 activations in int32; the K splits' int32
  partial sums [splits, Mp, Np] are added outside (exact), then scaled as in
  reference.py, so the result equals `ternary_matmul_reference` bit for bit. Unlike
  `ternary_matmul_pallas` it pads M to a power of two (not 16) and splits K, so a
  [1, 4096] x [4096, 4096] product runs 256 programs instead of 32. Block sizes:
  `gemv_blocks`. Raises ValueError for bad shapes or M outside 1..GEMV_MAX_M.
  """
  reference.check_shapes(x_int8_MxK, x_scale_Mx1, w_packed_KqxN, n)
  for name, b in (('block_n', block_n), ('block_k4', block_k4)):
    if b < _MIN_BLOCK or b & (b - 1):
      raise ValueError(f'ternary_gemv_pallas: {name} must be a power of two >= '
                       f'{_MIN_BLOCK}, got {b}')
  m, _ = x_int8_MxK.shape
  kq = w_packed_KqxN.shape[0]
  mp, bn, bk4, splits = gemv_blocks(m, kq, n, block_n, block_k4)
  k_steps = -(-kq // bk4)  # a multiple of splits (gemv_blocks)
  kp = k_steps * bk4

  x_MxK = jnp.pad(x_int8_MxK, ((0, mp - m), (0, 4 * kp - x_int8_MxK.shape[1])))
  x_4xMpxKp = x_MxK.reshape(mp, kp, 4).transpose(2, 0, 1)
  # Padded only where a divisor could not be found (gemv_blocks): a copy per call.
  w_KpxNp = _pad_to(_pad_to(w_packed_KqxN, 0, kp, reference.ZERO_BYTE), 1, bn,
                    reference.ZERO_BYTE)
  np_ = w_KpxNp.shape[1]
  ks = kp // splits

  compiler_params = None
  if not interpret and jax.default_backend() == 'gpu':
    from jax.experimental.pallas import triton as pltriton
    compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=3)

  kernel = functools.partial(_ternary_gemv_kernel, bk4=bk4, k_steps=ks // bk4)
  partial_SxMpxNp = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((splits, mp, np_), jnp.int32),
      grid=(np_ // bn, splits),
      in_specs=[
          pl.BlockSpec((4, mp, ks), lambda j, s: (0, 0, s)),
          pl.BlockSpec((ks, bn), lambda j, s: (s, j)),
      ],
      out_specs=pl.BlockSpec((1, mp, bn), lambda j, s: (s, 0, j)),
      compiler_params=compiler_params,
      interpret=interpret,
  )(x_4xMpxKp, w_KpxNp)
  acc_MxN = partial_SxMpxNp.sum(axis=0)[:m, :n]
  scale = x_scale_Mx1.astype(jnp.float32) * jnp.asarray(w_scale, jnp.float32)
  return acc_MxN.astype(jnp.float32) / scale
