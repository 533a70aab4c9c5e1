"""Public int8 x ternary matmul for BitNet b1.58 inference (arXiv 2402.17764).

Shape legend: M tokens (any leading dims are flattened into M), K contracted
features, N output features, Kq = ceil(K / 4). Weight layout: reference.py.

Inference only: there is no custom VJP. Training uses the straight-through fake
quantizers in `lattice.quant.ste`; this op consumes their integer codes, and
`pack_weight` is a host-side (numpy) export step, so neither is differentiated.

    x_q, sx = quantize_activation(x)          # ste.int8_codes: x ~= x_q / sx
    w_p, sw = pack_weight(w)                  # ste.ternary_codes + 2-bit packing
    y = ternary_matmul(x_q, sx, w_p, sw, n)   # == int8_activation(x) @ ternary_weight(w)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kernels.ternary_matmul import kernel, reference
from lattice.quant import packing, ste

IMPLS = ('auto', 'pallas', 'xla', 'reference')
# float32 sums of int8 x ternary products stay exact integers while 128 * K < 2**24.
_F32_EXACT_MAX_K = 2**24 // 128


def quantize_activation(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-token absmax int8: (x_q int8 [..., K], sx float32 [..., 1]), x ~= x_q / sx."""
  return ste.int8_codes(x, -1)


def pack_weight(w_KxN) -> tuple[jax.Array, jax.Array]:
  """Absmean ternary + 2-bit packing: (uint8 [ceil(K/4), N], sw float32 scalar).

  Host-side (numpy packing), not jittable: an export step. K is zero-padded to a
  multiple of 4 so every packed row holds 4 whole K rows (layout in reference.py).
  """
  w_KxN = jnp.asarray(w_KxN)
  if w_KxN.ndim != 2:
    raise ValueError(f'pack_weight: w must be [K, N], got shape {list(w_KxN.shape)}')
  codes_KxN, sw = ste.ternary_codes(w_KxN)
  k, n = codes_KxN.shape
  codes_NxK = np.pad(np.asarray(codes_KxN).T, ((0, 0), (0, -k % 4)))
  packed = packing.pack_ternary_2bit(codes_NxK)  # rows of w.T, contiguous along K
  w_packed_KqxN = packed.data.reshape(n, -1).T
  return jnp.asarray(np.ascontiguousarray(w_packed_KqxN)), sw


@jax.jit
def _xla_unpack_then_dot(x_int8_MxK, x_scale_Mx1, w_packed_KqxN, w_scale):
  """Unpack once to float32 and use XLA's float dot: exact while K < 2**17."""
  w_KxN = reference.unpack_weight(w_packed_KqxN, x_int8_MxK.shape[1])
  acc_MxN = jnp.dot(x_int8_MxK.astype(jnp.float32), w_KxN.astype(jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)
  return acc_MxN / (x_scale_Mx1.astype(jnp.float32) * w_scale)


def ternary_matmul(x_int8: jax.Array, x_scale: jax.Array, w_packed: jax.Array,
                   w_scale: jax.Array, n: int, *, impl: str = 'auto',
                   interpret: bool | None = None) -> jax.Array:
  """float32 [..., N] = (x_q / sx) @ (w_t / sw) from int8 x and packed ternary w.

  impl: 'pallas' (kernel.py), 'xla' (unpack once, float32 dot), 'reference'
  (unpack, int32 dot), or 'auto': the Pallas kernel on GPU/TPU, 'xla' on CPU (the
  int32 reference when K >= 2**17, where float32 sums stop being exact).
  interpret: for 'pallas'; None means interpret only when running on CPU.
  """
  if impl not in IMPLS:
    raise ValueError(f'ternary_matmul: impl must be one of {IMPLS}, got {impl!r}')
  backend = jax.default_backend()
  lead = x_int8.shape[:-1]
  x_int8_MxK = x_int8.reshape(-1, x_int8.shape[-1])
  x_scale_Mx1 = jnp.asarray(x_scale).reshape(-1, 1)
  reference.check_shapes(x_int8_MxK, x_scale_Mx1, w_packed, n)
  k = x_int8_MxK.shape[1]
  if impl == 'auto':
    impl = 'pallas' if backend in ('gpu', 'tpu') else 'xla'
  if impl == 'xla' and k >= _F32_EXACT_MAX_K:
    impl = 'reference'
  if impl == 'pallas':
    if interpret is None:
      interpret = backend == 'cpu'
    y_MxN = kernel.ternary_matmul_pallas(x_int8_MxK, x_scale_Mx1, w_packed, w_scale,
                                         n, interpret=interpret)
  elif impl == 'xla':
    y_MxN = _xla_unpack_then_dot(x_int8_MxK, x_scale_Mx1, w_packed,
                                 jnp.asarray(w_scale, jnp.float32))
  else:
    y_MxN = reference.ternary_matmul_reference(x_int8_MxK, x_scale_Mx1, w_packed,
                                               w_scale, n)
  return y_MxN.reshape(*lead, n)
