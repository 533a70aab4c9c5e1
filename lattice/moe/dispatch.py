"""Token dispatch to experts: capacity (with dropping) and dropless (blocks or ragged).

Shape legend: T tokens, K chosen experts per token, N = T*K assignments, E experts,
C capacity per expert, D model width, F expert FFN width, R padded rows, n blocks,
b rows per block.

Each path takes `ffn(w, x_ExCxD) -> y_ExCxD`, the experts' batched FFN, and returns
(y_TxD, dropped fraction). Dropless paths compute exactly the N assignments:
- `blocks` (the default): sort assignments by expert, pad each expert's run to a
  multiple of b rows, and run one batched matmul over [n, b, D] with the owning
  expert's weights gathered per block (MegaBlocks' block-sparse idea, in XLA);
- `ragged` (opt-in): the same sort, then `jax.lax.ragged_dot` with group sizes
  (slower than blocks at every shape measured so far, CPU and H200).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp


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


def dispatch_ragged(x_TxD, idx_TxK, gate_TxK, w, ragged_ffn: Callable, n_experts: int):
  T, K = idx_TxK.shape
  e_sorted, order_N, counts_E = _sorted(idx_TxK, n_experts)
  y_sorted_NxD = ragged_ffn(w, x_TxD[order_N // K], counts_E.astype(jnp.int32))
  y_NxD = jnp.zeros_like(y_sorted_NxD).at[order_N].set(y_sorted_NxD)
  return _combine(y_NxD, gate_TxK), jnp.zeros(())
