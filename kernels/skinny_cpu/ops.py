"""float32 x . w for a few rows on CPU through the native kernel (skinny_cpu.cc).

Shape legend: M rows, K contracted features, N output features.

Decoding multiplies 1 row (a plain step) or L = K + 1 rows (a self-speculative
verification forward) by every weight matrix. XLA:CPU runs the one-row product as a
matrix-vector routine but hands 2..8 rows to a GEMM library that packs the weights
first, so the L-row forward cost ~2x the one-row step per weight read at every
size measured (benchmarks/speculative_decode). The native kernel streams each weight
panel once for up to 4 rows at a time, and every row's result is the same float32
sum in the same order whatever M is (bitwise row independence: see skinny_cpu.cc),
so plain and speculative decoding compute identical logits.

The kernel is a C++ shared library built at `pip install` (setup.py, optional) and
called as an XLA FFI custom call (`jax.ffi.ffi_call`). `available()` says whether it
loaded; `lattice.nn.contraction` uses it on CPU for float32 products of at most
`MAX_ROWS` rows, and of at most `MAX_PACKED_ROWS` rows where decoding made a packed
copy of the weight (a prompt's prefill), unless LATTICE_SKINNY_MATMUL=0 (then XLA's
dot everywhere).
"""

from __future__ import annotations

import ctypes
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from kernels import extension

_TARGET = 'lattice_skinny_matmul'
_PACKED_TARGET = 'lattice_skinny_matmul_packed'
# The same library's decode attention (attention_cpu.cc; kernels/skinny_cpu/attention.py).
ATTENTION_TARGET = 'lattice_decode_attention'
ISAS = {'auto': 0, 'scalar': 1, 'avx2': 2, 'avx512': 3}  # skinny_cpu.cc's `isa` codes
_NAMES = {v: k for k, v in ISAS.items()}
# Rows at or below which decoding's products go to the kernel: a verification
# forward has n <= 8 rows per sequence at batch 1 (model.mtp.n <= 8).
MAX_ROWS = 8
# Rows at or below which a product with a packed weight copy (decoding only:
# lattice.decode.packed_weights) goes to the kernel, so a prompt's prefill does too.
# Panels() streams each 64-column panel once from memory and re-reads it from L2 for
# every 4 rows, so at prefill sizes the kernel is compute-bound: over the 175 packed
# projections of benchmarks/speculative_decode's model (d_model 256, 24 layers,
# 2-core Xeon 6/167, idle, 3 Dec) 155 / 170 / 201 GFLOP/s at 48 / 64 / 96 rows
# against XLA's dot at 100 / 126 / 196 over the model's 76 two-dimensional kernels
# unpacked (its rate; XLA wins from ~128 rows on); the speculative benchmark's
# 32-token prefill 29 -> 16-18 ms with the
# attention kernel's row limit lifted too (kernels/skinny_cpu/attention.py).
MAX_PACKED_ROWS = 64
# Columns per panel of the packed weight layout [N / PACK_WIDTH, K, PACK_WIDTH]
# (skinny_cpu.cc's kPackWidth).
PACK_WIDTH = 64


@functools.cache
def _library() -> ctypes.CDLL | None:
  """The loaded kernel library with its FFI target registered, or None if not built."""
  return extension.load_library(
      __file__, '_skinny_cpu', {_TARGET: 'LatticeSkinnyMatmul',
                                _PACKED_TARGET: 'LatticeSkinnyMatmulPacked',
                                ATTENTION_TARGET: 'LatticeDecodeAttention'})


def best_isa() -> str | None:
  """'avx512', 'avx2' or 'scalar' for this CPU; None if the kernel is not built."""
  lib = _library()
  return None if lib is None else _NAMES[lib.LatticeSkinnyBestIsa()]


def supports(isa: str) -> bool:
  """Whether the built kernel can run `isa` ('scalar', 'avx2', 'avx512') here."""
  lib = _library()
  return lib is not None and bool(lib.LatticeSkinnySupports(ISAS[isa]))


def available() -> bool:
  """True when the kernel is built, this CPU has AVX2 + FMA, and the environment
  variable LATTICE_SKINNY_MATMUL is not '0' (the switch benchmarks use for A/B)."""
  return (os.environ.get('LATTICE_SKINNY_MATMUL', '1') != '0'
          and best_isa() in ('avx2', 'avx512'))


def use_for(x: jax.Array, w: jax.Array, n_rows: int, packed: bool = False) -> bool:
  """Whether `lattice.nn.contraction` sends this product to the kernel: on CPU,
  float32 operands, at most MAX_ROWS rows (MAX_PACKED_ROWS if decoding made a packed
  copy of w: `packed`), kernel available."""
  limit = MAX_PACKED_ROWS if packed else MAX_ROWS
  return (n_rows <= limit and x.dtype == jnp.float32 and w.dtype == jnp.float32
          and jax.default_backend() == 'cpu' and available())


def skinny_matmul_cpu(x_MxK: jax.Array, w_KxN: jax.Array, *, isa: str = 'auto'
                      ) -> jax.Array:
  """float32 [M, N] = x_MxK @ w_KxN with the native kernel (one fused multiply-add
  per k, in increasing k, for every output; the same for any M).

  isa: 'auto' (the best this CPU runs) or 'avx512' | 'avx2' | 'scalar' (tests).
  Raises RuntimeError if the kernel is not built, ValueError for an unknown or
  unsupported isa or operands that are not 2-D float32 with matching K. CPU only;
  no gradient rule (callers wrap it: lattice.nn.contraction).
  """
  if isa not in ISAS:
    raise ValueError(f'skinny_matmul_cpu: isa must be one of {tuple(ISAS)}, got {isa!r}')
  if _library() is None:
    raise RuntimeError('skinny_matmul_cpu: the native kernel is not built (run '
                       '`python setup.py build_ext --inplace` or reinstall lattice)')
  if isa != 'auto' and not supports(isa):
    raise ValueError(f'skinny_matmul_cpu: isa {isa!r} is not supported by this CPU')
  if (x_MxK.ndim != 2 or w_KxN.ndim != 2 or x_MxK.shape[1] != w_KxN.shape[0]
      or x_MxK.dtype != jnp.float32 or w_KxN.dtype != jnp.float32):
    raise ValueError(f'skinny_matmul_cpu: want float32 x [M, K] and w [K, N], got '
                     f'{x_MxK.dtype}{list(x_MxK.shape)} and {w_KxN.dtype}{list(w_KxN.shape)}')
  return _batched(x_MxK, w_KxN, ISAS[isa])


def _call(x, w, isa: int, packed: bool = False):
  """The FFI call on x [M, K], w [K, N] (packed: [P, K, 64]), or a batch of them
  (x [H, M, K], w [H, K, N] or [H, P, K, 64])."""
  shape = (*x.shape[:-1], _columns(w, packed))
  return jax.ffi.ffi_call(_PACKED_TARGET if packed else _TARGET,
                          jax.ShapeDtypeStruct(shape, jnp.float32))(x, w, isa=np.int32(isa))


def _columns(w, packed: bool) -> int:
  """N, the output columns of weight w (row-major [..., K, N] or packed)."""
  return w.shape[-3] * PACK_WIDTH if packed else w.shape[-1]


def _batched(x, w, isa: int, packed: bool = False):
  """x [*H, M, K] . w [*H', K, N] (or packed [*H', P, K, 64]) under vmap, without
  per-entry weight copies.

  vmap adds leading dims; `custom_vmap` rules below fold them: weights shared across
  the batch -> the batch joins the rows (one call, weights read once); both batched
  -> one batched call (x [H, M, K], w [H, K, N]); only w batched -> x broadcast."""
  w_rank = 3 if packed else 2  # the dims of one weight

  @jax.custom_batching.custom_vmap
  def f(x, w):
    return _call(x, w, isa, packed)

  @f.def_vmap
  def rule(axis_size, in_batched, x, w):
    x_b, w_b = in_batched
    m, k, n = x.shape[-2], x.shape[-1], _columns(w, packed)
    if not w_b:  # the batch shares the weights: its rows join M (weights read once)
      rows = jnp.moveaxis(x, 0, -3)  # [*H, A, M, K]
      y = _batched(rows.reshape(*rows.shape[:-3], -1, k), w, isa, packed)
      return jnp.moveaxis(y.reshape(*rows.shape[:-1], n), -3, 0), True
    if not x_b:
      x = jnp.broadcast_to(x, (axis_size, *x.shape))
    y = _batched(x.reshape(-1, m, k), w.reshape(-1, *w.shape[-w_rank:]), isa,
                 packed)  # one batched call
    return y.reshape(*x.shape[:-1], n), True

  return f(x, w)


def pack(w_KxN: jax.Array) -> jax.Array | None:
  """The decode layout of a float32 weight: [N / 64, K, 64], each 64-column panel
  contiguous, or None when N is not a multiple of 64 (that weight stays unpacked).

  `skinny_matmul_packed_cpu(x, pack(w))` gives the same bits as
  `skinny_matmul_cpu(x, w)` (the same multiply-adds in the same order) and reads the
  weights as one forward stream: on the 2-core AMD EPYC build machine, one thread,
  weights streaming from L3/DRAM, a 256 x 704 product took 10-11 us packed against
  17 us unpacked for one row, 12-12.5 against 21 us for two (informal C
  micro-benchmark, 30 Nov). A copy: decoders pack once per model
  (`lattice.decode.packed_weights`), not per step.
  """
  k, n = w_KxN.shape
  if n % PACK_WIDTH:
    return None
  return w_KxN.reshape(k, n // PACK_WIDTH, PACK_WIDTH).transpose(1, 0, 2)


def skinny_matmul_packed_cpu(x_MxK: jax.Array, w_PxKx64: jax.Array, *,
                             isa: str = 'auto') -> jax.Array:
  """float32 [M, P * 64] = x_MxK @ w for w in the packed layout of `pack` (P = N / 64
  panels of [K, 64]); bitwise equal to `skinny_matmul_cpu(x_MxK, w)` on the unpacked
  weight. vmap folds batch dims as `skinny_matmul_cpu` does (shared weights: rows
  join; batched weights: one batched call).

  Raises RuntimeError if the kernel is not built, ValueError for a bad isa or operands
  that are not float32 [M, K] and [P, K, 64]. CPU only; no gradient rule (decoding).
  """
  if isa not in ISAS:
    raise ValueError(f'skinny_matmul_packed_cpu: isa must be one of {tuple(ISAS)}, '
                     f'got {isa!r}')
  if _library() is None:
    raise RuntimeError('skinny_matmul_packed_cpu: the native kernel is not built (run '
                       '`python setup.py build_ext --inplace` or reinstall lattice)')
  if isa != 'auto' and not supports(isa):
    raise ValueError(f'skinny_matmul_packed_cpu: isa {isa!r} is not supported by this CPU')
  if (x_MxK.ndim != 2 or w_PxKx64.ndim != 3 or w_PxKx64.shape[2] != PACK_WIDTH
      or x_MxK.shape[1] != w_PxKx64.shape[1] or x_MxK.dtype != jnp.float32
      or w_PxKx64.dtype != jnp.float32):
    raise ValueError(f'skinny_matmul_packed_cpu: want float32 x [M, K] and w [P, K, '
                     f'{PACK_WIDTH}], got {x_MxK.dtype}{list(x_MxK.shape)} and '
                     f'{w_PxKx64.dtype}{list(w_PxKx64.shape)}')
  return _batched(x_MxK, w_PxKx64, ISAS[isa], packed=True)
