"""Dropless MoE's row moves through the native CPU kernel (permute_cpu.cc): the token
gather into expert-sorted order and the gate-weighted combine back, with their VJPs.

Shape legend: T tokens, K chosen experts per token, N = T*K assignments, D row width.
order_N: for each expert-sorted row n, its assignment t*K + k (a permutation of
[0, N)); inv_TxK: its inverse, the sorted row of assignment (t, k).

`gather_tokens(x, order, inv)[n] = x[order[n] // K]`; its VJP sums each token's K
rows, dx[t] = sum_k g[inv[t, k]]. `combine(ys, inv, gate)[t] = sum_k gate[t, k]
ys[inv[t, k]]`; its VJP gives dys[inv[t, k]] = gate[t, k] dy[t] and dgate[t, k] =
dy[t] . ys[inv[t, k]]. The XLA forms (lattice/moe/dispatch.py: `_gather_tokens`,
`_permute_rows` and an einsum) compute the same values; these run as one pass each
over the rows, with no [T, K, D] copy (module doc of permute_cpu.cc for the
measurements). float32 on the CPU backend, with `native.available()`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels.grouped_matmul import native


def applies(dtype) -> bool:
  """Whether the native moves run for rows of this dtype: float32 on the CPU backend
  with the kernel library built (`native.available()`)."""
  return (jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == 'cpu'
          and native.available())


_EMPTY = jnp.zeros((0,), jnp.float32)


def top_k_indices(x_TxE: jax.Array, k: int) -> jax.Array:
  """idx_TxK int32: each row's k largest values of float32 x, largest first, the
  indices of `jax.lax.top_k(x, k)` (IEEE total order, so NaN above inf; ties to the
  lower index), in one pass per row (XLA:CPU's TopK took ~0.3 ms for [2048, 32] at
  the MoE benchmark's E = 32, a 2-core micro-benchmark). No gradient (indices).
  Raises RuntimeError if the kernel is missing, ValueError if k > E."""
  native.check()
  if k > x_TxE.shape[-1]:
    raise ValueError(f'top_k_indices: k = {k} > {x_TxE.shape[-1]} columns')
  return jax.ffi.ffi_call('lattice_top_k',
                          jax.ShapeDtypeStruct((x_TxE.shape[0], k), jnp.int32),
                          vmap_method='sequential')(
      jax.lax.stop_gradient(x_TxE).astype(jnp.float32))


def sort_assignments(idx_TxK: jax.Array, n_experts: int):
  """(order_N, inv_N, counts_E), int32: a stable counting sort of the N = T*K
  assignments by expert idx_TxK (ints in [0, n_experts)); order_N[n] is the
  assignment t*K + k at sorted row n, inv_N its inverse, counts_E the rows per
  expert. The values of `jnp.argsort(idx.reshape(-1), stable=True)` and
  `jnp.bincount`. Raises RuntimeError if the kernel is missing; an index out of
  range fails the call (XLA error)."""
  native.check()
  N = idx_TxK.size
  i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)
  return jax.ffi.ffi_call('lattice_sort_assignments', (i32(N), i32(N), i32(n_experts)),
                          vmap_method='sequential')(idx_TxK.reshape(-1).astype(jnp.int32))


def _gather_rows(x_TxD, src_N, scale_N=None):
  native.check()
  call = jax.ffi.ffi_call('lattice_gather_rows',
                          jax.ShapeDtypeStruct((src_N.shape[0], x_TxD.shape[1]), jnp.float32),
                          vmap_method='sequential')
  return call(x_TxD, src_N.astype(jnp.int32), _EMPTY if scale_N is None else scale_N)


def _combine_rows(ys_NxD, inv_TxK, gate_TxK=None):
  native.check()
  call = jax.ffi.ffi_call('lattice_combine_rows',
                          jax.ShapeDtypeStruct((inv_TxK.shape[0], ys_NxD.shape[1]), jnp.float32),
                          vmap_method='sequential')
  return call(ys_NxD, inv_TxK.astype(jnp.int32),
              _EMPTY if gate_TxK is None else gate_TxK.reshape(-1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _gather(x_TxD, order_N, inv_TxK, k: int):
  return _gather_rows(x_TxD, order_N // k)


def _gather_fwd(x_TxD, order_N, inv_TxK, k):
  return _gather(x_TxD, order_N, inv_TxK, k), inv_TxK


def _gather_bwd(k, inv_TxK, g_NxD):
  return _combine_rows(g_NxD.astype(jnp.float32), inv_TxK), None, None


_gather.defvjp(_gather_fwd, _gather_bwd)


def gather_tokens(x_TxD: jax.Array, order_N: jax.Array, inv_TxK: jax.Array) -> jax.Array:
  """x_NxD[n] = x_TxD[order_N[n] // K] (K = inv_TxK.shape[1]): each token's row once per
  assignment, in sorted order. float32 x; int order, inv (a permutation and its
  inverse; not checked). Differentiable in x.
  Raises RuntimeError if the kernel is missing (`native.available()`)."""
  return _gather(x_TxD.astype(jnp.float32), order_N.astype(jnp.int32),
                 inv_TxK.astype(jnp.int32), inv_TxK.shape[1])


@jax.custom_vjp
def _combine(ys_NxD, inv_TxK, gate_TxK):
  return _combine_rows(ys_NxD, inv_TxK, gate_TxK)


def _combine_fwd(ys_NxD, inv_TxK, gate_TxK):
  return _combine(ys_NxD, inv_TxK, gate_TxK), (ys_NxD, inv_TxK, gate_TxK)


def _combine_rows_bwd(dy_TxD, ys_NxD, inv_TxK, gate_TxK):
  """(dys_NxD, dgate_TxK): dys[inv[t, k]] = gate[t, k] dy[t], dgate[t, k] = dy[t] . ys[inv[t, k]]."""
  native.check()
  out = (jax.ShapeDtypeStruct(ys_NxD.shape, jnp.float32),
         jax.ShapeDtypeStruct(gate_TxK.shape, jnp.float32))
  return jax.ffi.ffi_call('lattice_combine_rows_bwd', out, vmap_method='sequential')(
      dy_TxD, ys_NxD, inv_TxK, gate_TxK)


def _combine_bwd(res, dy_TxD):
  ys_NxD, inv_TxK, gate_TxK = res
  dys_NxD, dgate_TxK = _combine_rows_bwd(dy_TxD.astype(jnp.float32), ys_NxD, inv_TxK,
                                         gate_TxK)
  return dys_NxD, None, dgate_TxK


_combine.defvjp(_combine_fwd, _combine_bwd)


def combine(ys_NxD: jax.Array, inv_TxK: jax.Array, gate_TxK: jax.Array) -> jax.Array:
  """y_TxD[t] = sum over k of gate_TxK[t, k] * ys_NxD[inv_TxK[t, k]], the k terms added
  in order; float32. ys float32 (others cast), gate float; inv int, a permutation of
  [0, N) (not checked). Differentiable in ys and gate.
  Raises RuntimeError if the kernel is missing (`native.available()`)."""
  return _combine(ys_NxD.astype(jnp.float32), inv_TxK.astype(jnp.int32),
                  gate_TxK.astype(jnp.float32))
