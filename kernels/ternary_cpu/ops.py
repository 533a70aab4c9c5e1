"""int8 x 2-bit ternary matmul on CPU through the native kernel (ternary_cpu.cc).

Shape legend: M tokens, K contracted features, N output features, Kq = ceil(K / 4).
Operands and layout are kernels/ternary_matmul's (reference.py); the result equals
`ternary_matmul_reference` bit for bit while K < 2**17 (exact int32 dot, the same
float32 scaling).

The kernel is a C++ shared library built at `pip install` (setup.py, optional: a
machine without a compiler installs without it) and called as an XLA FFI custom call
(`jax.ffi.ffi_call`). `available()` says whether it loaded and the CPU has AVX2;
`kernels.ternary_matmul.ops` uses it on CPU then, and its XLA unpack path otherwise.
"""

from __future__ import annotations

import ctypes
import functools

import jax
import jax.numpy as jnp
import numpy as np

from kernels import extension

_TARGET = 'lattice_ternary_matmul'
# Instruction-set codes of ternary_cpu.cc's `isa` attribute.
ISAS = {'auto': 0, 'scalar': 1, 'avx2': 2, 'avx512': 3}
_NAMES = {v: k for k, v in ISAS.items()}


@functools.cache
def _library() -> ctypes.CDLL | None:
  """The loaded kernel library with its FFI target registered, or None if not built."""
  return extension.load_library(__file__, '_ternary_cpu', {_TARGET: 'LatticeTernaryMatmul'})


def best_isa() -> str | None:
  """'avx512' (F/BW/VNNI/VBMI), 'avx2' or 'scalar' for this CPU; None if not built."""
  lib = _library()
  return None if lib is None else _NAMES[lib.LatticeTernaryBestIsa()]


def supports(isa: str) -> bool:
  """Whether the built kernel can run `isa` ('scalar', 'avx2', 'avx512') here."""
  lib = _library()
  return lib is not None and bool(lib.LatticeTernarySupports(ISAS[isa]))


def available() -> bool:
  """True when the native kernel is built and this CPU has AVX2 (its fast paths)."""
  return best_isa() in ('avx2', 'avx512')


def ternary_matmul_cpu(x_int8_MxK: jax.Array, x_scale_Mx1: jax.Array,
                       w_packed_KqxN: jax.Array, w_scale: jax.Array, n: int, *,
                       isa: str = 'auto') -> jax.Array:
  """float32 [M, N] = (x_q @ w_t) / (sx * sw) with the native CPU kernel.

  x_int8_MxK int8, x_scale_Mx1 float32, w_packed_KqxN uint8 (layout:
  kernels/ternary_matmul/reference.py), w_scale float32 scalar. isa: 'auto' (the best
  this CPU runs), or 'avx512' | 'avx2' | 'scalar' to force one path (tests).
  Raises RuntimeError if the kernel is not built, ValueError for an unknown or
  unsupported isa. Runs on CPU only; no gradient (inference).
  """
  if isa not in ISAS:
    raise ValueError(f'ternary_matmul_cpu: isa must be one of {tuple(ISAS)}, got {isa!r}')
  if _library() is None:
    raise RuntimeError('ternary_matmul_cpu: the native kernel is not built (run '
                       '`python setup.py build_ext --inplace` or reinstall lattice)')
  if isa != 'auto' and not supports(isa):
    raise ValueError(f'ternary_matmul_cpu: isa {isa!r} is not supported by this CPU')
  m = x_int8_MxK.shape[0]
  call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32),
                          vmap_method='sequential')
  return call(x_int8_MxK, x_scale_Mx1.astype(jnp.float32), w_packed_KqxN,
              jnp.asarray(w_scale, jnp.float32).reshape(()), isa=np.int32(ISAS[isa]))
