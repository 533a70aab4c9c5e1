"""Public int8 x ternary matmul for BitNet b1.58 inference (arXiv 2402.17764).

Paths: the Pallas kernels (kernel.py) on GPU/TPU -- on GPU the weight-streaming GEMV
(`ternary_gemv_pallas`) for M <= kernel.GEMV_MAX_M rows (decoding, speculative
verification), the tiled kernel for more; on CPU the native C++ kernel
(kernels/ternary_cpu, AVX2 / AVX-512 VNNI, built at install) when it is built and the
CPU has AVX2, else XLA (unpack the codes to float32, then XLA's dot). `cpu_path()`
names the CPU path `impl='auto'` takes.

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

import contextlib
import contextvars

import jax
import jax.numpy as jnp
import numpy as np

from kernels import ternary_cpu
from kernels.ternary_matmul import kernel, reference
from lattice.quant import packing, ste

IMPLS = ('auto', 'pallas', 'pallas_gemv', 'native', 'xla', 'reference')
# What impl='auto' means on CPU ('native' | 'xla'); None: native when available.
_CPU_AUTO = contextvars.ContextVar('ternary_cpu_auto', default=None)
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


def cpu_path() -> str:
  """The CPU path impl='auto' takes now: 'native-avx512', 'native-avx2' or 'xla-unpack'."""
  want = _CPU_AUTO.get()
  if want != 'xla' and ternary_cpu.available():
    return f'native-{ternary_cpu.best_isa()}'
  if want == 'native':
    raise RuntimeError('ternary_matmul: the native CPU kernel is not built or this CPU '
                       'lacks AVX2')
  return 'xla-unpack'


@contextlib.contextmanager
def cpu_auto(impl: str):
  """Within the block, impl='auto' on CPU means `impl` ('native' or 'xla').

  The choice is made when a function is traced: functions jitted before the block keep
  their path (call `jax.clear_caches()` to retrace them). For tests and benchmarks
  comparing the two CPU paths through a whole model.
  """
  if impl not in ('native', 'xla'):
    raise ValueError(f'cpu_auto: impl must be native or xla, got {impl!r}')
  token = _CPU_AUTO.set(impl)
  try:
    yield
  finally:
    _CPU_AUTO.reset(token)


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

  impl: 'pallas' (kernel.py's tiled kernel), 'pallas_gemv' (kernel.py's
  weight-streaming GEMV: M <= kernel.GEMV_MAX_M, K < kernel.GEMV_MAX_K), 'native'
  (kernels/ternary_cpu, CPU only), 'xla' (unpack once, float32 dot), 'reference'
  (unpack, int32 dot), or 'auto':
    GPU: the GEMV for 1..GEMV_MAX_M rows with K < GEMV_MAX_K, else the tiled kernel;
    TPU: the tiled kernel (the GEMV's Mosaic TPU lowering is untested);
    both: the int32 reference once K >= 2**17, where the tiled kernel's float32
    sums stop being exact;
    CPU: 'native' where `kernels.ternary_cpu.available()`, else 'xla' (see
    `cpu_path`, `cpu_auto`); 'xla' becomes the int32 reference when K >= 2**17.
  interpret: for the Pallas kernels; None means interpret only when running on CPU.
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
    if (backend == 'gpu' and 0 < x_int8_MxK.shape[0] <= kernel.GEMV_MAX_M
        and k < kernel.GEMV_MAX_K):
      impl = 'pallas_gemv'
    elif backend in ('gpu', 'tpu'):
      # The tiled kernel's float32 sums are exact while K < 2**17, as 'xla''s.
      impl = 'pallas' if k < _F32_EXACT_MAX_K else 'reference'
    else:
      impl = 'native' if cpu_path().startswith('native') else 'xla'
  if impl == 'native' and backend != 'cpu':
    raise ValueError(f'ternary_matmul: impl native runs on CPU only, backend is {backend}')
  if impl == 'xla' and k >= _F32_EXACT_MAX_K:
    impl = 'reference'
  if impl in ('pallas', 'pallas_gemv'):
    if interpret is None:
      interpret = backend == 'cpu'
    pallas_fn = (kernel.ternary_gemv_pallas if impl == 'pallas_gemv'
                 else kernel.ternary_matmul_pallas)
    y_MxN = pallas_fn(x_int8_MxK, x_scale_Mx1, w_packed, w_scale, n,
                      interpret=interpret)
  elif impl == 'native':
    y_MxN = ternary_cpu.ternary_matmul_cpu(x_int8_MxK, x_scale_Mx1, w_packed, w_scale, n)
  elif impl == 'xla':
    y_MxN = _xla_unpack_then_dot(x_int8_MxK, x_scale_Mx1, w_packed,
                                 jnp.asarray(w_scale, jnp.float32))
  else:
    y_MxN = reference.ternary_matmul_reference(x_int8_MxK, x_scale_Mx1, w_packed,
                                               w_scale, n)
  return y_MxN.reshape(*lead, n)
