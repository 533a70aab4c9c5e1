"""A dropless MoE layer's SwiGLU experts in one native pass per direction (moe_cpu.cc),
token gather and gate-weighted combine included.

Shape legend: T tokens, K chosen experts per token, N = T*K assignments, D model width,
F expert width, E experts.

`moe_swiglu(x, order, inv, gate, w0, w1, wo, sizes)[t] = sum_k gate[t, k] *
ffn_e(x[t])` with e the expert of assignment (t, k) and ffn_e(x) = (silu(x w0[e]) *
(x w1[e])) wo[e]: the values of `permute.gather_tokens`, `ffn.grouped_ffn` and
`permute.combine` in a row, with a written-out VJP. The forward reads each sorted
row's token by index, and a block of an expert's rows goes through its three
products with h = silu(a) * b kept in cache, then combines; the backward reads dy
and x rows by index, recomputes h from the saved a, b and, per expert, runs dh, da,
db, the gate cotangents, the three weight gradients and the row input gradients on
one block of rows at a time, then sums each token's rows (module doc of moe_cpu.cc
for why). float32 on the CPU backend with the kernel built (`permute.applies`).

Informal A/B on the shared 2-core machine (30 Nov; minimum of 20 interleaved calls
in a quiet moment, `benchmarks/moe_layer.py` shapes): the MoE layer's fwd+bwd on this
path (with the native sort, router matmul and top-k) took ~1.06x / 1.11x / 1.19x the
dense FFN's at E = 8 / 16 / 32; the two kernel calls alone ~1.02x (E = 8) and ~1.12x
(E = 32) the dense FFN's nine matmuls and activation.

The nine products per block run on `small_gemm.h`'s AVX-512 code where the CPU has it
(no sgemm packing or zeroing passes), else OpenBLAS's sgemm; `native.set_moe_gemm`
chooses (AVX2 included), `native.moe_gemm` says which runs. At E = 32 the benchmark's
`grouped_openblas` row (the same compiled layer on sgemm, in the same round robin) took
1.24-1.32x the time of `grouped` on AVX-512 (BENCHMARKS.md, seventeenth session).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.grouped_matmul import native


def _f32(a):
  return a.astype(jnp.float32)


def _fwd_call(x_TxD, src_N, w0, w1, wo, sizes_E, inv_TxK, gate_TxK):
  """(a_NxF, b_NxF, ys_NxD, y_TxD): the kernel's forward, combine included."""
  native.check()
  N, F, D = src_N.shape[0], w0.shape[2], x_TxD.shape[1]
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.ffi.ffi_call('lattice_moe_swiglu_fwd', (f32(N, F), f32(N, F), f32(N, D),
                                                     f32(*x_TxD.shape)),
                          vmap_method='sequential')(x_TxD, src_N, w0, w1, wo, sizes_E,
                                                    inv_TxK, gate_TxK)


@jax.custom_vjp
def _moe(x_TxD, order_N, inv_TxK, gate_TxK, w0, w1, wo, sizes_E):
  src_N = order_N // inv_TxK.shape[1]
  return _fwd_call(x_TxD, src_N, w0, w1, wo, sizes_E, inv_TxK, gate_TxK)[3]


def _moe_fwd(x_TxD, order_N, inv_TxK, gate_TxK, w0, w1, wo, sizes_E):
  src_N = order_N // inv_TxK.shape[1]
  a_NxF, b_NxF, _, y_TxD = _fwd_call(x_TxD, src_N, w0, w1, wo, sizes_E, inv_TxK, gate_TxK)
  return y_TxD, (x_TxD, order_N, inv_TxK, gate_TxK, w0, w1, wo, sizes_E, a_NxF, b_NxF)


def _moe_bwd(res, dy_TxD):
  x_TxD, order_N, inv_TxK, gate_TxK, w0, w1, wo, sizes_E, a_NxF, b_NxF = res
  N = order_N.shape[0]
  f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
  out = (f32(N, x_TxD.shape[1]), f32(*x_TxD.shape), f32(N), f32(*w0.shape), f32(*w1.shape),
         f32(*wo.shape))
  gate_N = gate_TxK.reshape(-1)[order_N]  # each sorted row's gate
  _, dx_TxD, dgate_N, dw0, dw1, dwo = jax.ffi.ffi_call(
      'lattice_moe_swiglu_bwd', out, vmap_method='sequential')(
          _f32(dy_TxD), x_TxD, order_N // inv_TxK.shape[1], gate_N, w0, w1, wo, a_NxF,
          b_NxF, sizes_E, inv_TxK)
  return dx_TxD, None, None, dgate_N[inv_TxK], dw0, dw1, dwo, None


_moe.defvjp(_moe_fwd, _moe_bwd)


def moe_swiglu(x_TxD: jax.Array, order_N: jax.Array, inv_TxK: jax.Array,
               gate_TxK: jax.Array, w0_ExDxF: jax.Array, w1_ExDxF: jax.Array,
               wo_ExFxD: jax.Array, sizes_E: jax.Array) -> jax.Array:
  """y_TxD[t] = sum over k of gate[t, k] * (silu(x[t] w0[e]) * (x[t] w1[e])) wo[e], e the
  expert of assignment (t, k).

  order_N: the assignments t*K + k sorted by expert (int, a permutation of [0, N));
  inv_TxK: its inverse (the sorted row of each assignment); sizes_E: assignments per
  expert (int; sum <= N, sorted rows past the sum give 0). x, gate and the weights
  are cast to float32; the result is float32. Differentiable in x, gate and the
  weights (custom VJP). Raises RuntimeError if the kernel is missing
  (`native.available()`).
  """
  return _moe(_f32(x_TxD), order_N.astype(jnp.int32), inv_TxK.astype(jnp.int32),
              _f32(gate_TxK), _f32(w0_ExDxF), _f32(w1_ExDxF), _f32(wo_ExFxD),
              sizes_E.astype(jnp.int32))
