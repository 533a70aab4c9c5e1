"""Pallas kernels: int8 activations x 2-bit packed ternary weights, unpacked in-kernel.

Two kernels: `ternary_matmul_pallas` (tiled over M and N, any M) and
`ternary_gemv_pallas` (decoding's few rows: split K, below). This docstring describes
the tiled one; the GEMV's own docstring says where it differs.

Shape legend: M tokens, K contracted features, N output features, Kq = ceil(K/4)
packed rows (layout in reference.py), Kp = Kq padded to a multiple of bk4; bm, bn,
bk4 block sizes (bk4 packed rows = 4 * bk4 features per K step); for the GEMV also
S K splits (grid axis 1), Ks = Kp / S packed rows a split, Np = N padded to bn.

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


# --- M <= 16 (decoding): a weight-streaming GEMV with split K -------------------------

# Rows the GEMV takes (its dots run on 16 rows, Triton's smallest); more go to the tiled
# kernel above.
GEMV_MAX_M = 16
# The GEMV's float32 sums of codes in {0, 1, 2} times int8 stay exact integers while
# 2 * 128 * K < 2**24; past this K the op takes the tiled kernel.
GEMV_MAX_K = 2**24 // 256
# Programs the GEMV aims for: about two per SM of a large GPU (an H100/H200 has 132),
# so the weight stream is spread over every SM even where N / bn is small.
_GEMV_TARGET_PROGRAMS = 256
# Fewest packed rows (4 features each) a K split gets: its atomic adds ([16, bn]
# float32 a program) then cost at most half the weight bytes it reads.
_GEMV_MIN_SPLIT_ROWS = 128
_GEMV_ROWS = 16


def _ternary_gemv_kernel(x_ref, w_ref, zeros_ref, o_ref, *, bk4: int, k_steps: int):
  """x_ref int8 [4, 16, Ks], w_ref uint8 [Ks, bn], o_ref float32 [16, bn] (aliased to
  zeros_ref, zeros): adds sum_k x[m, k] * c[k, n] over this program's share of K, c
  the codes + 1 in {0, 1, 2} (the wrapper subtracts sum_k x[m, k] once), with one
  atomic add, so the K splits of a column block accumulate in place, exactly (integer
  sums below 2**24 in float32 are exact in any order)."""
  del zeros_ref  # (Its buffer is o_ref's.)
  from jax.experimental.pallas import triton as pltriton

  def k_step(step, acc_16xbn):
    rows = pl.ds(pl.multiple_of(step * bk4, bk4), bk4)
    w_bk4xbn = w_ref[rows, :].astype(jnp.int32)
    for i, shift in enumerate(reference._SHIFTS):
      plane_bk4xbn = (w_bk4xbn >> shift) & 3 if shift else w_bk4xbn & 3
      acc_16xbn += jnp.dot(x_ref[i, :, rows].astype(jnp.bfloat16),
                           plane_bk4xbn.astype(jnp.bfloat16),
                           preferred_element_type=jnp.float32)
    return acc_16xbn

  acc_16xbn = jax.lax.fori_loop(0, k_steps, k_step,
                                jnp.zeros(o_ref.shape, jnp.float32))
  pltriton.atomic_add(o_ref, (slice(None), slice(None)), acc_16xbn)


def gemv_blocks(kq: int, n: int, block_n: int = 128) -> tuple[int, int, int]:
  """(bn, bk4, splits) the GEMV uses for Kq packed rows and N columns.

  bn: a power of two >= 16 up to block_n (128 bytes: one coalesced row segment),
  halved while it does not divide N. bk4 (64, 32 or 16 packed rows a K step; Triton's
  dots need >= 16) and splits (a divisor of the K steps, each split >= 128 packed rows,
  (N / bn) x splits <= 256 programs) are chosen together for the most programs, the
  larger bk4 on ties: [1, 11008] x [11008, 4096] (Kq 2752 = 43 x 64) gets bk4 16 and 4
  splits, 128 programs, where bk4 64 allows no split (32). When Kq is a multiple of 16
  and N of 16 (every model width here) the weight is read in place; other shapes are
  padded, which copies the weight on every call.
  """
  bn = _block(n, block_n)
  while bn > _MIN_BLOCK and n % bn:
    bn //= 2
  col_blocks = -(-n // bn)
  best = None
  for bk4 in (64, 32, 16):
    if bk4 > 16 and (kq % bk4 or bk4 > kq):
      continue
    k_steps = -(-kq // bk4)
    splits = max(d for d in range(1, k_steps + 1)
                 if k_steps % d == 0 and (d == 1 or (
                     col_blocks * d <= _GEMV_TARGET_PROGRAMS
                     and kq >= d * _GEMV_MIN_SPLIT_ROWS)))
    if best is None or splits > best[2]:
      best = (bn, bk4, splits)
  return best


@functools.partial(jax.jit, static_argnames=('n', 'block_n', 'interpret'))
def ternary_gemv_pallas(x_int8_MxK: jax.Array, x_scale_Mx1: jax.Array,
                        w_packed_KqxN: jax.Array, w_scale: jax.Array, n: int, *,
                        block_n: int = 128, interpret: bool = False) -> jax.Array:
  """float32 [M, N] = (x_q @ w_t) / (sx * sw) for M <= GEMV_MAX_M: decoding's shape.

  A weight-streaming GEMV (issue #18): grid (Np / bn, S); each program reads its
  [Ks, bn] slice of the 2-bit packed weights once (uint8, 4 weights a byte), turns it
  into code planes with one shift and one mask a weight, and multiplies them with the
  int8 activations (16 rows, M zero-padded) on the tensor cores in bfloat16 with
  float32 accumulation, then atomically adds its [16, bn] sums into the output, so
  the S programs of a column block need no partial-sum buffer. The codes are taken as
  c + 1 in {0, 1, 2} (no subtraction per weight); the wrapper subtracts
  sum_k x[m, k]. Every sum is an integer below 2**24 (K < GEMV_MAX_K), so the result
  equals `ternary_matmul_reference` bit for bit, in any order of the atomic adds.
  Unlike `ternary_matmul_pallas` (32 programs at [1, 4096] x [4096, 4096]) it splits
  K: 256 programs there. Block sizes: `gemv_blocks`. Raises ValueError for bad
  shapes, M outside 1..GEMV_MAX_M, K >= GEMV_MAX_K or a bad block_n.
  """
  reference.check_shapes(x_int8_MxK, x_scale_Mx1, w_packed_KqxN, n)
  if block_n < _MIN_BLOCK or block_n & (block_n - 1):
    raise ValueError(f'ternary_gemv_pallas: block_n must be a power of two >= '
                     f'{_MIN_BLOCK}, got {block_n}')
  m, k = x_int8_MxK.shape
  if not 1 <= m <= GEMV_MAX_M:
    raise ValueError(f'ternary_gemv_pallas: M must be 1..{GEMV_MAX_M}, got {m}')
  if k >= GEMV_MAX_K:
    raise ValueError(f'ternary_gemv_pallas: K must be < {GEMV_MAX_K} (float32 sums '
                     f'stay exact), got {k}')
  kq = w_packed_KqxN.shape[0]
  bn, bk4, splits = gemv_blocks(kq, n, block_n)
  kp = -(-kq // bk4) * bk4
  ks = kp // splits

  x_16xK4 = jnp.pad(x_int8_MxK, ((0, _GEMV_ROWS - m), (0, 4 * kp - k)))
  x_4x16xKp = x_16xK4.reshape(_GEMV_ROWS, kp, 4).transpose(2, 0, 1)
  # Padded only where no divisor was found (gemv_blocks): a copy per call.
  w_KpxNp = _pad_to(_pad_to(w_packed_KqxN, 0, kp, reference.ZERO_BYTE), 1, bn,
                    reference.ZERO_BYTE)
  np_ = w_KpxNp.shape[1]

  compiler_params = None
  if not interpret and jax.default_backend() == 'gpu':
    from jax.experimental.pallas import triton as pltriton
    compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=3)

  kernel = functools.partial(_ternary_gemv_kernel, bk4=bk4, k_steps=ks // bk4)
  sums_16xNp = pl.pallas_call(
      kernel,
      out_shape=jax.ShapeDtypeStruct((_GEMV_ROWS, np_), jnp.float32),
      grid=(np_ // bn, splits),
      in_specs=[
          pl.BlockSpec((4, _GEMV_ROWS, ks), lambda j, s: (0, 0, s)),
          pl.BlockSpec((ks, bn), lambda j, s: (s, j)),
          pl.BlockSpec((_GEMV_ROWS, bn), lambda j, s: (0, j)),
      ],
      out_specs=pl.BlockSpec((_GEMV_ROWS, bn), lambda j, s: (0, j)),
      input_output_aliases={2: 0},
      compiler_params=compiler_params,
      interpret=interpret,
  )(x_4x16xKp, w_KpxNp, jnp.zeros((_GEMV_ROWS, np_), jnp.float32))
  # x @ (c - 1) = x @ c - sum_k x: exact integers in float32 (K < GEMV_MAX_K).
  x_sum_Mx1 = x_int8_MxK.astype(jnp.int32).sum(axis=1, keepdims=True)
  acc_MxN = sums_16xNp[:m, :n] - x_sum_Mx1.astype(jnp.float32)
  scale = x_scale_Mx1.astype(jnp.float32) * jnp.asarray(w_scale, jnp.float32)
  return acc_MxN / scale
