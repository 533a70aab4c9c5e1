"""Token dispatch to experts: capacity (with dropping) and dropless (blocks or ragged).

Shape legend: T tokens, K chosen experts per token, N = T*K assignments, E experts,
C capacity per expert, D model width, F expert FFN width, R padded rows, n blocks,
b rows per block.

Each path takes `ffn(w, x_ExCxD) -> y_ExCxD`, the experts' batched FFN, and returns
(y_TxD, dropped fraction). Dropless paths compute exactly the N assignments:
- `blocks`: sort assignments by expert, pad each expert's run to a multiple of b
  rows, and run one batched matmul over [n, b, D] with the owning expert's weights
  gathered per block (MegaBlocks' block-sparse idea, in XLA);
- `dispatch_ragged`: the same sort, then an FFN over exactly the N sorted rows with
  group sizes (`jax.lax.ragged_dot`, the `kernels.grouped_matmul` loops for
  dropless_impl='grouped', or tokamax's `ragged_dot` for 'tokamax'); the sort permutation and its inverse make both the
  forward and the backward gathers (no scatter-add); with `native_moves` the sort,
  gather and combine run in the native CPU kernel (`kernels.grouped_matmul.permute`);
- `dispatch_fused`: the native sort, then the layer's experts with the gather and
  combine inside (`kernels.grouped_matmul.moe.moe_swiglu` on CPU).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp

from kernels.grouped_matmul import permute


def _combine(y_NxD: jax.Array, gate_TxK: jax.Array) -> jax.Array:
  T, K = gate_TxK.shape
  return jnp.einsum('tkd,tk->td', y_NxD.reshape(T, K, -1), gate_TxK.astype(y_NxD.dtype))


def capacity(n_tokens: int, k: int, n_experts: int, factor: float) -> int:
  return max(int(math.ceil(n_tokens * k / n_experts * factor)), 1)


def dispatch_capacity(x_TxD, idx_TxK, gate_TxK, w, ffn: Callable, n_experts: int,
                      cap: int, group: int | None = None):
  """Switch-style: each expert takes at most `cap` assignments, earliest tokens first.

  Tokens are taken in consecutive groups of `group` tokens (default: all T, one
  group); the `cap` applies per group, so a group's outputs never depend on another
  group's tokens. The MoE layer passes group = sequence length (as MaxText computes
  capacity per batch row), so no row of a batch changes another. The expert buffer
  is [E, (T / group) * cap, D]. Returns (y_TxD, fraction of assignments dropped).

  Raises:
    ValueError if `group` does not divide T.
  """
  T, K = idx_TxK.shape
  group = group or T
  if T % group:
    raise ValueError(f'dispatch_capacity: group {group} does not divide {T} tokens')
  G, M = T // group, group * K  # groups, assignments per group
  e_N = idx_TxK.reshape(-1)
  onehot_GxMxE = jax.nn.one_hot(e_N, n_experts, dtype=jnp.int32).reshape(G, M, n_experts)
  rank_NxE = (jnp.cumsum(onehot_GxMxE, axis=1) - 1).reshape(G * M, n_experts)
  pos_N = jnp.take_along_axis(rank_NxE, e_N[:, None], 1)[:, 0]
  keep_N = pos_N < cap
  slot_N = (jnp.arange(G * M) // M) * cap + pos_N
  tok_N = jnp.arange(T * K) // K
  buf_ExCxD = jnp.zeros((n_experts, G * cap, x_TxD.shape[-1]), x_TxD.dtype)
  buf_ExCxD = buf_ExCxD.at[e_N, jnp.where(keep_N, slot_N, G * cap)].set(x_TxD[tok_N],
                                                                       mode='drop')
  out_ExCxD = ffn(w, buf_ExCxD)
  y_NxD = out_ExCxD.at[e_N, jnp.where(keep_N, slot_N, 0)].get() * keep_N[:, None]
  return _combine(y_NxD, gate_TxK), 1.0 - jnp.mean(keep_N.astype(jnp.float32))


def _sorted(idx_TxK, n_experts):
  e_N = idx_TxK.reshape(-1)
  order_N = jnp.argsort(e_N, stable=True)
  counts_E = jnp.bincount(e_N, length=n_experts)
  return e_N[order_N], order_N, counts_E


def block_size(n_assign: int, n_experts: int) -> int:
  """Rows per block: half a balanced expert's share, within [64, 128].

  Measured on a 2-core CPU (d_model 256, 4096 assignments, E = 8..64): smaller
  blocks mean more weight gathers and small-M matmuls (b=16 was 4x slower than
  b=64 at E=32), larger ones more padding rows; 64-128 was best at every E tried.
  """
  return int(min(128, max(64, 8 * round(n_assign / n_experts / 2 / 8))))


def dispatch_blocks(x_TxD, idx_TxK, gate_TxK, w, ffn: Callable, n_experts: int,
                    b: int | None = None):
  T, K = idx_TxK.shape
  N, D = T * K, x_TxD.shape[-1]
  b = b or block_size(N, n_experts)
  e_sorted, order_N, counts_E = _sorted(idx_TxK, n_experts)
  padded_E = (counts_E + b - 1) // b * b
  start_E = jnp.cumsum(padded_E) - padded_E
  first_E = jnp.cumsum(counts_E) - counts_E
  row_N = start_E[e_sorted] + jnp.arange(N) - first_E[e_sorted]
  n = -(-(N + n_experts * (b - 1)) // b)  # static bound on the padded blocks
  x_RxD = jnp.zeros((n * b, D), x_TxD.dtype).at[row_N].set(x_TxD[order_N // K])
  block_expert_n = jnp.minimum(
      jnp.searchsorted(jnp.cumsum(padded_E), jnp.arange(n) * b, side='right'),
      n_experts - 1)
  w_blocks = jax.tree.map(lambda a: a[block_expert_n], w)
  y_RxD = ffn(w_blocks, x_RxD.reshape(n, b, D)).reshape(n * b, D)
  y_NxD = jnp.zeros((N, D), y_RxD.dtype).at[order_N].set(y_RxD[row_N])
  return _combine(y_NxD, gate_TxK), jnp.zeros(())


@jax.custom_vjp
def _permute_rows(a_NxD: jax.Array, perm_N: jax.Array, inv_N: jax.Array) -> jax.Array:
  """a[perm] for a permutation perm with inverse inv; its backward is the gather
  g[inv] (JAX would differentiate the gather into a scatter-add)."""
  return a_NxD[perm_N]


def _permute_rows_fwd(a_NxD, perm_N, inv_N):
  return a_NxD[perm_N], (perm_N, inv_N)


def _permute_rows_bwd(res, g_NxD):
  perm_N, inv_N = res
  return g_NxD[inv_N], None, None


_permute_rows.defvjp(_permute_rows_fwd, _permute_rows_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _gather_tokens(x_TxD, src_N, inv_N, k: int):
  """x[src] where src = order // k lists each token k times; the backward sums each
  token's k rows through the inverse permutation (gathers, no scatter-add)."""
  return x_TxD[src_N]


def _gather_tokens_fwd(x_TxD, src_N, inv_N, k):
  return x_TxD[src_N], (src_N, inv_N)


def _gather_tokens_bwd(k, res, g_NxD):
  src_N, inv_N = res
  return g_NxD[inv_N].reshape(-1, k, g_NxD.shape[-1]).sum(1), None, None


_gather_tokens.defvjp(_gather_tokens_fwd, _gather_tokens_bwd)


def _sort_plan(idx_TxK, n_experts, native: bool = False):
  """(order_N, inv_N, counts_E): the assignments sorted by expert (stable), the inverse
  permutation and the loads (no gradient flows through them). native: one counting
  sort in the CPU kernel (`permute.sort_assignments`), else XLA's sort and scatter."""
  T, K = idx_TxK.shape
  if native:
    return permute.sort_assignments(jax.lax.stop_gradient(idx_TxK), n_experts)
  _, order_N, counts_E = _sorted(idx_TxK, n_experts)
  inv_N = jnp.zeros_like(order_N).at[order_N].set(
      jnp.arange(T * K, dtype=order_N.dtype), unique_indices=True)
  return jax.lax.stop_gradient(order_N), jax.lax.stop_gradient(inv_N), counts_E


def dispatch_ragged(x_TxD, idx_TxK, gate_TxK, w, ragged_ffn: Callable, n_experts: int,
                    native_moves: bool = False):
  """Sort the N assignments by expert, run `ragged_ffn(w, x_NxD sorted, sizes_E)`
  (exactly N rows, no padding), unsort and combine. The sort permutation and its
  inverse serve both directions: forward and backward are gathers, never a
  scatter-add. native_moves: the sort, the gather and the gate-weighted combine (and
  their VJPs) run in the native CPU kernel (`kernels.grouped_matmul.permute`; float32 on CPU,
  see `permute.applies`), one pass over the rows each, with no [T, K, D] copy; else
  XLA gathers and an einsum. Returns (y_TxD, 0.0 dropped)."""
  T, K = idx_TxK.shape
  order_N, inv_N, counts_E = _sort_plan(idx_TxK, n_experts, native_moves)
  if native_moves:
    x_NxD = permute.gather_tokens(x_TxD, order_N, inv_N.reshape(T, K))
  else:
    x_NxD = _gather_tokens(x_TxD, order_N // K, inv_N, K)
  y_sorted_NxD = ragged_ffn(w, x_NxD, counts_E.astype(jnp.int32))
  if native_moves:
    return permute.combine(y_sorted_NxD, inv_N.reshape(T, K), gate_TxK), jnp.zeros(())
  return _combine(_permute_rows(y_sorted_NxD, inv_N, order_N), gate_TxK), jnp.zeros(())


def dispatch_fused(x_TxD, idx_TxK, gate_TxK, w, experts: Callable, n_experts: int):
  """The native counting sort (`permute.sort_assignments`; CPU only), then
  `experts(x_TxD, order_N, inv_TxK, gate_TxK, w, sizes_E) -> y_TxD`, a layer's
  experts with the gather and combine inside (e.g.
  `kernels.grouped_matmul.moe.moe_swiglu`). Returns (y_TxD, 0.0 dropped)."""
  T, K = idx_TxK.shape
  order_N, inv_N, counts_E = _sort_plan(idx_TxK, n_experts, native=True)
  y_TxD = experts(x_TxD, order_N, inv_N.reshape(T, K), gate_TxK, w,
                  counts_E.astype(jnp.int32))
  return y_TxD.astype(x_TxD.dtype), jnp.zeros(())
