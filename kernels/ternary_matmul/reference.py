"""Pure-jnp reference for int8 x ternary matmul (BitNet b1.58 inference, arXiv 2402.17764).

Shape legend: M tokens, K contracted (input) features, N output features,
Kq = ceil(K / 4) packed rows.

Weight layout, `w_packed_KqxN` uint8 [Kq, N]: byte [g, n] holds the ternary codes of
w[4g + i, n] for i = 0..3, code i in bits 2i..2i+1 stored as code + 1 (0, 1, 2). This
is `lattice.quant.packing.pack_ternary_2bit` applied to each column of w (i.e. to
w.T, whose rows are contiguous along K) with K zero-padded to a multiple of 4, then
transposed back: 4 consecutive K rows share a byte, so unpacking a [Kq, N] tile gives
four [Kq, N] code planes that each meet a contiguous slice of (reordered) x, and no
interleave of the unpacked codes is ever needed (see kernel.py).

Semantics equal BitNet fake quantization: with x ~= x_q / sx (`ste.int8_codes`) and
w ~= w_t / sw (`ste.ternary_codes`),
  y = (x_q / sx) @ (w_t / sw) = (x_q @ w_t) / (sx * sw).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# 2-bit fields of a byte, in packing.pack_ternary_2bit's order (code i at bits 2i).
_SHIFTS = (0, 2, 4, 6)
# Byte whose four codes are all 0 (digit 1 in every field): padding for extra K rows.
ZERO_BYTE = 0b01010101


def unpack_weight(w_packed_KqxN: jax.Array, k: int) -> jax.Array:
  """uint8 [Kq, N] -> int8 codes [k, N] in {-1, 0, 1}."""
  kq, n = w_packed_KqxN.shape
  shifts_4 = jnp.asarray(_SHIFTS, jnp.uint8)
  digits_Kqx4xN = (w_packed_KqxN[:, None, :] >> shifts_4[None, :, None]) & 3
  codes_KxN = digits_Kqx4xN.astype(jnp.int8).reshape(4 * kq, n) - 1
  return codes_KxN[:k]


def check_shapes(x_int8_MxK, x_scale_Mx1, w_packed_KqxN, n: int) -> None:
  """Clear errors for shapes a caller can get wrong, before anything compiles."""
  if x_int8_MxK.ndim != 2 or x_int8_MxK.dtype != jnp.int8:
    raise ValueError(f'ternary_matmul: x_int8 must be int8 [M, K], got '
                     f'{x_int8_MxK.dtype}{list(x_int8_MxK.shape)}')
  m, k = x_int8_MxK.shape
  if x_scale_Mx1.shape != (m, 1):
    raise ValueError(f'ternary_matmul: x_scale must be [M, 1] = [{m}, 1], got '
                     f'{list(x_scale_Mx1.shape)}')
  kq = -(-k // 4)
  if w_packed_KqxN.dtype != jnp.uint8 or w_packed_KqxN.shape != (kq, n):
    raise ValueError(f'ternary_matmul: w_packed must be uint8 [ceil(K/4), n] = '
                     f'[{kq}, {n}] for K={k}, got {w_packed_KqxN.dtype}'
                     f'{list(w_packed_KqxN.shape)}')


def ternary_matmul_reference(x_int8_MxK: jax.Array, x_scale_Mx1: jax.Array,
                             w_packed_KqxN: jax.Array, w_scale: jax.Array,
                             n: int) -> jax.Array:
  """float32 [M, N] = (x_q @ w_t) / (sx * sw), the matmul exact in int32."""
  check_shapes(x_int8_MxK, x_scale_Mx1, w_packed_KqxN, n)
  w_KxN = unpack_weight(w_packed_KqxN, x_int8_MxK.shape[1])
  acc_MxN = jnp.dot(x_int8_MxK.astype(jnp.int32), w_KxN.astype(jnp.int32))
  scale = x_scale_Mx1.astype(jnp.float32) * jnp.asarray(w_scale, jnp.float32)
  return acc_MxN.astype(jnp.float32) / scale
