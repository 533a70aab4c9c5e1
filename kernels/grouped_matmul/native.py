"""Grouped float32 matmuls and the grouped SwiGLU FFN through the native CPU kernel.

Shape legend: N rows (sorted by group), I input features, O output features, E groups
(experts), D model width, F expert FFN width.

`gmm`, `gmm_t`, `tgmm` are the three grouped products of grouped_cpu.cc (one product
per group, rows and weights read in place, transposes as sgemm flags; the products on
small_gemm.h's AVX-512 code where the CPU has it, OpenBLAS's sgemm otherwise:
`set_moe_gemm`), called
as an XLA FFI custom call (`jax.ffi.ffi_call`); `grouped_ffn_native` composes them
into the FFN y[r] = (act(x[r] w0[e]) * (x[r] w1[e])) wo[e] with a written-out
backward: nine grouped products (three forward; dh, dx from both up-projections and
the three weight gradients backward), exactly the dense FFN's nine matmuls over the
same N rows, and no padding rows, windows, remainder loop or gathered weights.
For SwiGLU (gated, act = jax.nn.silu) the activation runs inside the kernel:
`swiglu_up` computes a = x w0[e], b = x w1[e] and h = silu(a) * b chunk by chunk, and
`swiglu_down` computes dh = dy wo[e]^T and the cotangents da, db of silu(a) * b, so
no elementwise pass over [N, F] is left to XLA (in single-core CPU-time A/B runs on
the loaded machine, not measurements, ~2 ms, ~4% of the dense FFN's step, faster than
the unfused native path at E = 8 and 32). Other activations run theirs in XLA between
the grouped products. The elementwise code has AVX-512 (vectorized by GCC),
AVX2 and portable copies chosen from CPUID (`set_isa` forces one for tests; the
AVX2 copy is not vectorized by GCC 12's loop vectorizer and runs scalar).

Why: XLA:CPU's batched dot over [E, C, D] expert windows (`ffn.grouped_ffn`'s path)
ran at ~75-87 GFLOP/s on one core of the 2-core build machine, and a plain 2-D
[128, 256] x [256, 256] dot at ~75, against ~100 for the dense FFN's [2048, 256] x
[256, 512] dot; OpenBLAS ran the per-group [128, 256] x [256, 256] product, and the
transposed one of the weight gradient, at ~97-98 GFLOP/s (single-core CPU-time
micro-benchmarks, 30 Nov, shared machine: decisions, not measurements) with its
AVX2 kernels, ~200-235 with the AVX-512 ones loaded now (`openblas_coretype`). Together
with the windows' padding, remainder loop and gathers, the window path measured
1.35-1.52x the dense FFN on the idle machine (BENCHMARKS.md).

`matmul` is a plain differentiable x @ w through the same sgemm (the MoE router's
[T, D] x [D, E] product). The same library holds moe_cpu.cc (`moe.py`, the fused
SwiGLU experts) and permute_cpu.cc (`permute.py`: row moves, counting sort, top-k);
they share grouped_cpu.h.

The library is built at `pip install` (setup.py, optional); it does not link a BLAS:
this module loads OpenBLAS from the `scipy-openblas32` wheel (a runtime requirement),
with its AVX-512 'SkylakeX' kernels on a CPU that has AVX-512 (`openblas_coretype`:
OpenBLAS's detection picked its AVX2 kernels on the build machine's AMD EPYC, at
about half the rate), sets it to one thread (the kernel spreads groups over XLA's
intra-op pool itself) and hands the library `scipy_cblas_sgemm`'s address. `available()` says whether both are
present; `ffn.grouped_ffn` uses this path on CPU for float32 then, its XLA path
otherwise.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import itertools
import os
import threading
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels import extension

_TARGET = 'lattice_grouped_matmul'
_TARGET_T2 = 'lattice_grouped_matmul_t2'
_TARGET_UP = 'lattice_grouped_swiglu_up'
_TARGET_DOWN = 'lattice_grouped_swiglu_down'
_MODES = {'gmm': 0, 'gmm_t': 1, 'tgmm': 2}


def _library_path() -> Path | None:
  return extension.extension_path(__file__, '_grouped_cpu')


# The AVX-512 subsets OpenBLAS's SkylakeX kernels use (its kernel/x86_64 sgemm code).
_SKYLAKEX_FLAGS = ('avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl')


def _cpu_flags() -> set[str]:
  """The CPU feature flags /proc/cpuinfo lists (empty where there is none)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except OSError:
    pass
  return set()


def openblas_coretype() -> str | None:
  """The OPENBLAS_CORETYPE this module loads its OpenBLAS with: LATTICE_OPENBLAS_CORETYPE
  if set (empty: OpenBLAS's own choice); else 'SkylakeX' (OpenBLAS's AVX-512 kernels)
  on a CPU with the AVX-512 subsets those kernels use; else None (OpenBLAS's own
  choice, which reads a process-wide OPENBLAS_CORETYPE).

  A process-wide OPENBLAS_CORETYPE is not applied on AVX-512 CPUs: it is meant for the
  BLAS that numpy/SciPy load (the build machine sets it to 'Haswell' for them), while
  this copy of OpenBLAS serves only this kernel, which competes with XLA's own
  AVX-512 dots. Why SkylakeX: scipy-openblas32 0.3.34's detection does not know the
  build machine's AMD EPYC (AVX-512) and would pick its AVX2 'Haswell' kernels too;
  single-threaded sgemm of the MoE benchmark's per-expert products ([128..512, 256]
  x [256, 256], plain and transposed) ran at ~117-126 GFLOP/s of CPU time with
  Haswell's kernels and ~202-236 with SkylakeX's (shared 2-core machine, 30 Nov;
  decisions, not measurements). Intel AVX-512 CPUs get SkylakeX-family kernels from
  the detection anyway.
  """
  if 'LATTICE_OPENBLAS_CORETYPE' in os.environ:
    return os.environ['LATTICE_OPENBLAS_CORETYPE'] or None
  return 'SkylakeX' if _cpu_flags().issuperset(_SKYLAKEX_FLAGS) else None


def _openblas_files() -> list[Path]:
  """scipy-openblas32's shared library (a one-element list), or [] if not installed.
  Found without importing the package: its import loads the library."""
  spec = importlib.util.find_spec('scipy_openblas32')
  if spec is None or spec.origin is None:
    return []
  return sorted((Path(spec.origin).parent / 'lib').glob('libscipy_openblas*.so*'))


def _openblas_sgemm() -> int | None:
  """Address of scipy-openblas32's cblas_sgemm (OpenBLAS set to one thread, its kernels
  those of `openblas_coretype()`), or None."""
  names = _openblas_files()
  if not names:
    return None
  # OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads (its DYNAMIC_ARCH
  # init); set it for that load only, so no other library sees it. (If something
  # imported scipy_openblas32 before, which loads the library, the setting comes too
  # late: `openblas_corename()` says what runs.)
  coretype, before = openblas_coretype(), os.environ.get('OPENBLAS_CORETYPE')
  if coretype is not None:
    os.environ['OPENBLAS_CORETYPE'] = coretype
  try:
    blas = ctypes.CDLL(str(names[0]))
  finally:
    if before is None:
      os.environ.pop('OPENBLAS_CORETYPE', None)
    else:
      os.environ['OPENBLAS_CORETYPE'] = before
  blas.scipy_openblas_set_num_threads(ctypes.c_int(1))
  address = ctypes.cast(blas.scipy_cblas_sgemm, ctypes.c_void_p).value
  if os.environ.get('LATTICE_OPENBLAS_PREFAULT', '1') != '0':
    _PREFAULTED.append(prefault_openblas_buffers(_SGEMM_TYPE(address),
                                                 len(os.sched_getaffinity(0))))
  return address


def openblas_prefaulted() -> int | None:
  """MiB of OpenBLAS packing buffers `prefault_openblas_buffers` mapped when the
  native library loaded (None: not loaded, or LATTICE_OPENBLAS_PREFAULT=0)."""
  if _library() is None or not _PREFAULTED:
    return None
  return _PREFAULTED[0]


# cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc),
# 32-bit ints (scipy-openblas32); calls release the GIL.
_SGEMM_TYPE = ctypes.CFUNCTYPE(None, *[ctypes.c_int] * 6, ctypes.c_float, ctypes.c_void_p,
                               ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
                               ctypes.c_void_p, ctypes.c_int)
_PREFAULTED: list[int] = []  # prefault_openblas_buffers' result at load
_MADV_POPULATE_WRITE = 23  # linux/mman.h, Linux >= 5.14
_MIN_BUFFER_BYTES = 16 << 20  # OpenBLAS's BUFFER_SIZE: 32 MiB on x86-64 by default


def _anonymous_rw_mappings() -> set[tuple[int, int]]:
  """[start, end) of this process's private read-write mappings without a file."""
  out = set()
  with open('/proc/self/maps') as f:
    for line in f:
      fields = line.split()
      if len(fields) == 5 and fields[1] == 'rw-p':
        lo, hi = fields[0].split('-')
        out.add((int(lo, 16), int(hi, 16)))
  return out


def prefault_openblas_buffers(sgemm, callers: int) -> int:
  """Makes OpenBLAS allocate the packing buffers of `callers` concurrent sgemm calls and
  maps their pages now; returns the MiB mapped (0 where /proc is absent): 32 per
  buffer by default, two buffers side by side being one mapping in /proc/self/maps.

  Why: OpenBLAS mmaps one packing buffer (32 MiB) per concurrent caller and never
  touches most of it, and its AVX2 'Haswell' sgemm kernel issues `prefetcht1` for the
  next packed panel of B, past the end of the last one, into pages never written.
  Where a prefetch to an unmapped page costs a page walk each time (here: a Firecracker
  VM on an AMD EPYC Zen 1, 1 Dec 2026), a [256, 256] x [256, 256] sgemm ran at 9.8
  GFLOP/s until some larger call happened to write past that point, and at 35 after
  (perf: ~74% of the kernel's samples on the instruction after that prefetch); the MoE
  layer's fused experts (moe_cpu.cc), which only ever make such calls, took 205 ms a
  fwd+bwd at E = 8 against 89 ms with the buffers mapped (informal timing loop, idle
  machine; `benchmarks/moe_layer.py` with LATTICE_OPENBLAS_PREFAULT=0 is the A/B). On a machine where those prefetches
  are cheap this changes nothing but resident memory (32 MiB a caller).

  How: `callers` threads call `sgemm` at once (so each takes its own buffer slot;
  OpenBLAS keeps the slots for the life of the process), and every private anonymous
  read-write mapping of >= 16 MiB that appeared meanwhile is populated with
  madvise(MADV_POPULATE_WRITE) (zero pages made present: contents unchanged), or, on
  kernels before 5.14, read once. Set LATTICE_OPENBLAS_PREFAULT=0 to skip it (the
  A/B of `benchmarks/moe_layer.py`).

  sgemm: OpenBLAS's cblas_sgemm as a `_SGEMM_TYPE` function; callers: the
  most concurrent calls expected (XLA's intra-op pool size, the kernels' task loop).
  """
  if not os.path.exists('/proc/self/maps'):
    return 0
  n = 256
  a = np.ones((n, n), np.float32)
  outs = [np.empty((n, n), np.float32) for _ in range(callers)]
  ready, go = threading.Barrier(callers + 1), threading.Barrier(callers + 1)

  def work(out):
    ready.wait()
    go.wait()
    # Calls for >= 20 ms (a [256, 256] product takes ~0.3 ms with AVX-512 kernels, ~3
    # ms cold on Zen 1), so the callers overlap and each takes its own slot.
    end = time.perf_counter() + 0.02
    for i in itertools.count():
      sgemm(101, 111, 111, n, n, n, 1.0, a.ctypes.data, n, a.ctypes.data, n, 0.0,
            out.ctypes.data, n)
      if i >= 1 and time.perf_counter() > end:
        break

  threads = [threading.Thread(target=work, args=(out,), daemon=True) for out in outs]
  for t in threads:
    t.start()
  ready.wait()  # the threads' stacks exist before the snapshot the buffers are new to
  before = _anonymous_rw_mappings()
  go.wait()
  for t in threads:
    t.join()
  new = [(lo, hi) for lo, hi in _anonymous_rw_mappings() - before
         if hi - lo >= _MIN_BUFFER_BYTES]
  libc = ctypes.CDLL(None, use_errno=True)
  libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
  for lo, hi in new:
    if libc.madvise(lo, hi - lo, _MADV_POPULATE_WRITE) != 0:
      ctypes.string_at(lo, hi - lo)  # read: each page mapped (the shared zero page)
  return sum(hi - lo for lo, hi in new) >> 20


def openblas_corename() -> str | None:
  """The kernel family the loaded OpenBLAS runs ('SkylakeX', 'Haswell', ...), or None
  when the native path is unavailable."""
  if _library() is None:
    return None
  get = ctypes.CDLL(str(_openblas_files()[0])).scipy_openblas_get_corename
  get.restype = ctypes.c_char_p
  return get().decode()


@functools.cache
def _library() -> ctypes.CDLL | None:
  """The kernel library with its sgemm installed and FFI target registered, or None."""
  path = _library_path()
  if path is None:
    return None
  sgemm = _openblas_sgemm()
  if sgemm is None:
    return None
  lib = ctypes.CDLL(str(path))
  if not all(hasattr(lib, name) for name in (
      'LatticeGroupedSetSgemm', 'LatticeGroupedMatmul', 'LatticeGroupedMatmulT2',
      'LatticeGroupedSwigluUp', 'LatticeGroupedSwigluDown', 'LatticeGroupedSetIsa',
      'LatticeGatherRows', 'LatticeCombineRows', 'LatticeCombineRowsBwd',
      'LatticeMoeSwigluFwd', 'LatticeMoeSwigluBwd', 'LatticeMoeSetGemm',
      'LatticeSortAssignments', 'LatticeTopK')):
    return None  # a stale build: rebuild it (setup.py build_ext --inplace)
  lib.LatticeGroupedSetSgemm.argtypes = [ctypes.c_void_p]
  if not lib.LatticeGroupedSetSgemm(ctypes.c_void_p(sgemm)):
    return None
  extension.register_targets(lib, {
      _TARGET: 'LatticeGroupedMatmul', _TARGET_T2: 'LatticeGroupedMatmulT2',
      _TARGET_UP: 'LatticeGroupedSwigluUp', _TARGET_DOWN: 'LatticeGroupedSwigluDown',
      # permute_cpu.cc, in the same library (used by kernels/grouped_matmul/permute.py)
      'lattice_gather_rows': 'LatticeGatherRows', 'lattice_combine_rows': 'LatticeCombineRows',
      'lattice_combine_rows_bwd': 'LatticeCombineRowsBwd',
      'lattice_sort_assignments': 'LatticeSortAssignments', 'lattice_top_k': 'LatticeTopK',
      # moe_cpu.cc (kernels/grouped_matmul/moe.py: moe_swiglu)
      'lattice_moe_swiglu_fwd': 'LatticeMoeSwigluFwd', 'lattice_moe_swiglu_bwd': 'LatticeMoeSwigluBwd'})
  return lib


def available() -> bool:
  """True when the native kernel is built and OpenBLAS (scipy-openblas32) loads."""
  return _library() is not None


def check():
  """Raises RuntimeError unless `available()`."""
  if _library() is None:
    raise RuntimeError('grouped_matmul native: the kernel is not built or scipy-openblas32 '
                       'is missing (run `python setup.py build_ext --inplace`, '
                       '`pip install scipy-openblas32`)')


def set_isa(isa: int) -> int:
  """Force the fused SwiGLU's elementwise code (1 portable C++, 2 AVX2, 3 AVX-512; capped
  at what this CPU runs; 0: the best). Returns the one in use. For tests: a jitted
  function calls the kernel at run time, so the setting holds for later calls."""
  check()
  return int(_library().LatticeGroupedSetIsa(ctypes.c_int32(isa)))


MOE_GEMMS = {1: 'openblas', 2: 'avx2', 3: 'avx512'}


def set_moe_gemm(kind: str | None) -> str:
  """Choose the native grouped kernels' products (moe_cpu.cc's fused MoE layer and
  grouped_cpu.cc's per-product calls): 'openblas' (OpenBLAS's sgemm),
  'avx2' or 'avx512' (small_gemm.h: no sgemm packing or zeroing passes; capped at what
  this CPU runs), or None for the default (AVX-512 where the CPU has it, else OpenBLAS:
  the AVX2 products measured no faster than OpenBLAS's Haswell kernels, grouped_cpu.h).
  Returns the one in use. For tests and the benchmark's A/B: a jitted function calls the
  kernel at run time, so the setting holds for later calls.

  Raises:
    ValueError: an unknown kind. RuntimeError: the native kernel is unavailable.
  """
  check()
  codes = {None: 0, 'openblas': 1, 'avx2': 2, 'avx512': 3}
  if kind not in codes:
    raise ValueError(f'set_moe_gemm: kind {kind!r} is not one of openblas, avx2, avx512, '
                     'None')
  return MOE_GEMMS[int(_library().LatticeMoeSetGemm(ctypes.c_int32(codes[kind])))]


def moe_gemm() -> str | None:
  """The products the native grouped kernels run now ('avx512', 'avx2' or 'openblas'),
  None when the native kernel is unavailable."""
  if _library() is None:
    return None
  return MOE_GEMMS[int(_library().LatticeMoeSetGemm(ctypes.c_int32(-1)))]  # -1: query


def _call(mode: str, a: jax.Array, b: jax.Array, sizes_E: jax.Array,
          out_shape: tuple[int, ...]) -> jax.Array:
  check()
  call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                          vmap_method='sequential')
  return call(a.astype(jnp.float32), b.astype(jnp.float32), sizes_E.astype(jnp.int32),
              mode=np.int32(_MODES[mode]))


def gmm_t2(x_NxI: jax.Array, w_ExOxI: jax.Array, x2_NxI: jax.Array, w2_ExOxI: jax.Array,
           sizes_E: jax.Array) -> jax.Array:
  """y_NxO = x[r] @ w[e]^T + x2[r] @ w2[e]^T for row r of group e, summed in place (one
  output pass instead of two products and an add); float32."""
  check()
  call = jax.ffi.ffi_call(_TARGET_T2,
                          jax.ShapeDtypeStruct((x_NxI.shape[0], w_ExOxI.shape[1]),
                                               jnp.float32), vmap_method='sequential')
  f32 = lambda a: a.astype(jnp.float32)
  return call(f32(x_NxI), f32(w_ExOxI), f32(x2_NxI), f32(w2_ExOxI), sizes_E.astype(jnp.int32))


def gmm(x_NxI: jax.Array, w_ExIxO: jax.Array, sizes_E: jax.Array) -> jax.Array:
  """y_NxO = x[r] @ w[e] for row r of group e (rows past sum(sizes) give 0); float32,
  no gradient rule (the FFN below writes its own)."""
  return _call('gmm', x_NxI, w_ExIxO, sizes_E, (x_NxI.shape[0], w_ExIxO.shape[2]))


def gmm_t(x_NxI: jax.Array, w_ExOxI: jax.Array, sizes_E: jax.Array) -> jax.Array:
  """y_NxO = x[r] @ w[e]^T for row r of group e (w stored [E, O, I]); float32."""
  return _call('gmm_t', x_NxI, w_ExOxI, sizes_E, (x_NxI.shape[0], w_ExOxI.shape[1]))


def tgmm(x_NxI: jax.Array, g_NxO: jax.Array, sizes_E: jax.Array) -> jax.Array:
  """dw_ExIxO[e] = sum over group e's rows r of x[r]^T g[r] (0 for an empty group)."""
  return _call('tgmm', x_NxI, g_NxO, sizes_E,
               (sizes_E.shape[0], x_NxI.shape[1], g_NxO.shape[1]))


def swiglu_up(x_NxD: jax.Array, w0_ExDxF: jax.Array, w1_ExDxF: jax.Array,
              sizes_E: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(a, b, h) [N, F]: a = x w0[e], b = x w1[e], h = silu(a) * b per row of group e, the
  activation computed on each chunk right after its two sgemms (still in cache)."""
  check()
  out = jax.ShapeDtypeStruct((x_NxD.shape[0], w0_ExDxF.shape[2]), jnp.float32)
  call = jax.ffi.ffi_call(_TARGET_UP, (out, out, out), vmap_method='sequential')
  f32 = lambda a: a.astype(jnp.float32)
  return call(f32(x_NxD), f32(w0_ExDxF), f32(w1_ExDxF), sizes_E.astype(jnp.int32))


def swiglu_down(dy_NxD: jax.Array, wo_ExFxD: jax.Array, a_NxF: jax.Array, b_NxF: jax.Array,
                sizes_E: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(da, db) [N, F]: with dh = dy wo[e]^T and s = sigmoid(a), da = dh b s (1 + a (1 - s))
  and db = dh a s, the cotangents of silu(a) * b (dh never leaves the chunk)."""
  check()
  out = jax.ShapeDtypeStruct(a_NxF.shape, jnp.float32)
  call = jax.ffi.ffi_call(_TARGET_DOWN, (out, out), vmap_method='sequential')
  f32 = lambda a: a.astype(jnp.float32)
  return call(f32(dy_NxD), f32(wo_ExFxD), f32(a_NxF), f32(b_NxF), sizes_E.astype(jnp.int32))


@jax.custom_vjp
def _matmul(x_NxI, w_IxO):
  return gmm(x_NxI, w_IxO[None], jnp.full((1,), x_NxI.shape[0], jnp.int32))


def _matmul_fwd(x_NxI, w_IxO):
  return _matmul(x_NxI, w_IxO), (x_NxI, w_IxO)


def _matmul_bwd(res, g_NxO):
  x_NxI, w_IxO = res
  sizes = jnp.full((1,), x_NxI.shape[0], jnp.int32)
  return gmm_t(g_NxO, w_IxO[None], sizes), tgmm(x_NxI, g_NxO, sizes)[0]


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x_NxI: jax.Array, w_IxO: jax.Array) -> jax.Array:
  """y_NxO = x @ w in float32 through the kernel's sgemm (one group), differentiable
  (dx = g w^T, dw = x^T g, also sgemm). For the MoE router's skinny product
  ([T, D] x [D, E], E = 8-64), where XLA:CPU ran the forward and the two backward dots
  at ~75 GFLOP/s (~1.2 ms a step at the MoE benchmark's E = 32, profile on the loaded
  2-core machine). Raises RuntimeError if the kernel is missing."""
  return _matmul(x_NxI.astype(jnp.float32), w_IxO.astype(jnp.float32))


def _fused(act, w1) -> bool:
  """SwiGLU (gated, act = jax.nn.silu) runs its activation inside the kernel."""
  return w1 is not None and act is jax.nn.silu


def _forward(act, x_NxD, w0, w1, wo, sizes_E):
  if _fused(act, w1):
    a_NxF, b_NxF, h_NxF = swiglu_up(x_NxD, w0, w1, sizes_E)
    return gmm(h_NxF, wo, sizes_E), (a_NxF, b_NxF, h_NxF)
  a_NxF = gmm(x_NxD, w0, sizes_E)
  h_NxF = act(a_NxF)
  b_NxF = None
  if w1 is not None:
    b_NxF = gmm(x_NxD, w1, sizes_E)
    h_NxF = h_NxF * b_NxF
  return gmm(h_NxF, wo, sizes_E), (a_NxF, b_NxF, None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ffn(act, x_NxD, w0, w1, wo, sizes_E):
  return _forward(act, x_NxD, w0, w1, wo, sizes_E)[0]


def _ffn_fwd(act, x_NxD, w0, w1, wo, sizes_E):
  y_NxD, (a_NxF, b_NxF, h_NxF) = _forward(act, x_NxD, w0, w1, wo, sizes_E)
  return y_NxD, (x_NxD, w0, w1, wo, sizes_E, a_NxF, b_NxF, h_NxF)


def _ffn_bwd(act, saved, dy_NxD):
  x_NxD, w0, w1, wo, sizes_E, a_NxF, b_NxF, h_NxF = saved
  if h_NxF is not None:  # fused SwiGLU: no elementwise pass outside the kernel
    da_NxF, db_NxF = swiglu_down(dy_NxD, wo, a_NxF, b_NxF, sizes_E)
    return (gmm_t2(da_NxF, w0, db_NxF, w1, sizes_E), tgmm(x_NxD, da_NxF, sizes_E),
            tgmm(x_NxD, db_NxF, sizes_E), tgmm(h_NxF, dy_NxD, sizes_E), None)
  gated = w1 is not None
  if gated:
    h_NxF, vjp = jax.vjp(lambda a, b: act(a) * b, a_NxF, b_NxF)
  else:
    h_NxF, vjp = jax.vjp(act, a_NxF)
  dwo = tgmm(h_NxF, dy_NxD, sizes_E)
  grads = vjp(gmm_t(dy_NxD, wo, sizes_E))
  dw0 = tgmm(x_NxD, grads[0], sizes_E)
  dw1 = None
  if gated:
    dx_NxD = gmm_t2(grads[0], w0, grads[1], w1, sizes_E)
    dw1 = tgmm(x_NxD, grads[1], sizes_E)
  else:
    dx_NxD = gmm_t(grads[0], w0, sizes_E)
  return dx_NxD, dw0, dw1, dwo, None


_ffn.defvjp(_ffn_fwd, _ffn_bwd)


def grouped_ffn_native(x_NxD: jax.Array, w0_ExDxF: jax.Array, w1_ExDxF: jax.Array | None,
                       wo_ExFxD: jax.Array, sizes_E: jax.Array, act: Callable) -> jax.Array:
  """y_NxD = (act(x w0[e]) * (x w1[e])) wo[e] per row r of group e (w1=None: ungated).

  float32 x_NxD, w0_ExDxF, w1_ExDxF, wo_ExFxD; sizes_E int (rows per group, sum <= N;
  rows past the sum give 0). Differentiable in x and the weights (custom VJP; sizes
  get no gradient). Shapes are checked by `ffn.grouped_ffn`, the public entry.
  Raises RuntimeError if the kernel or OpenBLAS is missing (`available()`).
  """
  return _ffn(act, x_NxD, w0_ExDxF, w1_ExDxF, wo_ExFxD, sizes_E)
