"""Expert parallelism: experts sharded over the `expert` mesh axis, tokens exchanged
with `jax.lax.all_to_all` inside `jax.shard_map` (GShard, arXiv 2006.16668).

Shape legend: T tokens (local to a shard inside shard_map), K experts per token,
E experts, El = E / ep experts per shard, C capacity per expert per shard, D width.

Tokens stay sharded over the batch axes (data, fsdp, expert); each shard packs its
tokens into a fixed [E, C, D] buffer, the all-to-all sends each expert's rows to the
shard that owns it ([El, ep*C, D]), the local experts run, and a second all-to-all
brings the rows home. Fixed shapes need a capacity: `dispatch='capacity'` uses the
configured factor (dropping overflow, reported); `dispatch='dropless'` uses the
worst case C = T (no token can be dropped) at the cost of padded expert compute.
"""

from __future__ import annotations

import math
import typing
from typing import Callable

import jax
from jax.sharding import PartitionSpec as P

from lattice.moe import dispatch

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module's table
  from lattice import config as config_lib

BATCH_AXES = ('data', 'fsdp', 'expert')


def expert_parallel(x_TxD, idx_TxK, gate_TxK, w, ffn: Callable,
                    cfg: config_lib.ModelConfig, seq_len: int | None = None):
  """(y_TxD, drop rate). With capacity dispatch and `seq_len`, the capacity is per
  sequence, as on one device (`dispatch.dispatch_capacity`'s groups), whenever a
  shard holds whole sequences; otherwise per shard."""
  mesh = jax.sharding.get_abstract_mesh()
  f = cfg.ffn
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  t_local = x_TxD.shape[0] // shards
  group = None
  if f.dispatch == 'dropless':
    cap = t_local  # a token picks an expert at most once: nothing can overflow
  else:
    group = seq_len if seq_len and t_local % seq_len == 0 else None
    cap = dispatch.capacity(group or t_local, f.top_k, f.n_experts, f.capacity_factor)

  def exchange_ffn(w_local, buf_ExCxD):
    to_owner = jax.lax.all_to_all(buf_ExCxD, 'expert', 0, 1, tiled=True)  # [El, ep*C, D]
    out = ffn(w_local, to_owner)
    return jax.lax.all_to_all(out, 'expert', 1, 0, tiled=True)           # [E, C, D]

  def local(x, idx, gate, w_local):
    y, dropped = dispatch.dispatch_capacity(x, idx, gate, w_local, exchange_ffn,
                                            f.n_experts, cap, group)
    return y, jax.lax.pmean(dropped, BATCH_AXES)

  tokens = P(BATCH_AXES)
  return jax.shard_map(
      local, mesh=mesh, in_specs=(tokens, tokens, tokens, P('expert')),
      out_specs=(tokens, P()))(x_TxD, idx_TxK, gate_TxK, w)
