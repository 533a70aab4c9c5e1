"""Expert parallelism: experts sharded over the `expert` mesh axis, tokens exchanged
with `jax.lax.all_to_all` inside `jax.shard_map` (GShard, arXiv 2006.16668).

Shape legend: T tokens (local to a shard inside shard_map), K experts per token,
E experts, El = E / ep experts per shard, C capacity per expert per shard, D width.

Tokens stay sharded over the batch axes (data, fsdp, expert); each shard packs its
tokens into a fixed [E, C, D] buffer, the all-to-all sends each expert's rows to the
shard that owns it ([El, ep*C, D]), the local experts run, and a second all-to-all
brings the rows home. Fixed shapes need a capacity: `dispatch='capacity'` uses the
configured factor (dropping overflow, reported). `dispatch='dropless'` sizes C from
the actual loads: the largest count of any expert on any shard (a `pmax`, so every
shard agrees) picks the first of a few static buckets that holds it
(`capacity_buckets`, through `lax.switch`); the last bucket is T, which no load can
exceed (a token picks an expert at most once), so nothing is ever dropped, and the
buffers and expert compute are padded to the bucket, not to the worst case T.
"""

from __future__ import annotations

import functools
import math
import typing
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from lattice.moe import dispatch

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module's table
  from lattice import config as config_lib

BATCH_AXES = ('data', 'fsdp', 'expert')

# Bucket sizes as multiples of the balanced load T*K/E: up to 2x in fine steps (the
# loads of a trained, balanced router), then doubling, ending at the worst case T.
_BUCKET_FACTORS = (1.25, 1.5, 2.0)


def capacity_buckets(t_local: int, k: int, n_experts: int) -> tuple[int, ...]:
  """Static per-expert, per-shard buffer sizes for dropless expert parallelism.

  ceil(f * t_local * k / n_experts) rounded up to a multiple of 8, for f = 1.25,
  1.5, 2, 4, 8, ... while below t_local, then t_local itself (the worst case: every
  local token picks the same expert). Increasing; the last is t_local.
  """
  mean = t_local * k / n_experts
  out, f = [], _BUCKET_FACTORS[0]
  factors = list(_BUCKET_FACTORS)
  while True:
    f = factors.pop(0) if factors else f * 2
    c = min(t_local, -(-math.ceil(mean * f) // 8) * 8)
    if not out or c > out[-1]:
      out.append(c)
    if c >= t_local:
      return tuple(out)


def expert_parallel(x_TxD, idx_TxK, gate_TxK, w, ffn: Callable,
                    cfg: config_lib.ModelConfig, seq_len: int | None = None):
  """(y_TxD, drop rate). With capacity dispatch and `seq_len`, the capacity is per
  sequence, as on one device (`dispatch.dispatch_capacity`'s groups), whenever a
  shard holds whole sequences; otherwise per shard. Dropless: the bucketed capacity
  of the module doc."""
  mesh = jax.sharding.get_abstract_mesh()
  f = cfg.ffn
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  t_local = x_TxD.shape[0] // shards

  def exchange_ffn(w_local, buf_ExCxD):
    to_owner = jax.lax.all_to_all(buf_ExCxD, 'expert', 0, 1, tiled=True)  # [El, ep*C, D]
    out = ffn(w_local, to_owner)
    return jax.lax.all_to_all(out, 'expert', 1, 0, tiled=True)           # [E, C, D]

  def run(x, idx, gate, w_local, cap, group):
    y, dropped = dispatch.dispatch_capacity(x, idx, gate, w_local, exchange_ffn,
                                            f.n_experts, cap, group)
    return y, jax.lax.pmean(dropped, BATCH_AXES)

  if f.dispatch == 'dropless':
    buckets = capacity_buckets(t_local, f.top_k, f.n_experts)

    def local(x, idx, gate, w_local):
      counts_E = jnp.bincount(idx.reshape(-1), length=f.n_experts)
      need = jax.lax.pmax(jnp.max(counts_E), BATCH_AXES)
      branch = jnp.searchsorted(jnp.asarray(buckets), need, side='left')
      return jax.lax.switch(branch, [functools.partial(run, cap=c, group=None)
                                     for c in buckets], x, idx, gate, w_local)
  else:
    group = seq_len if seq_len and t_local % seq_len == 0 else None
    cap = dispatch.capacity(group or t_local, f.top_k, f.n_experts, f.capacity_factor)
    local = functools.partial(run, cap=cap, group=group)

  tokens = P(BATCH_AXES)
  return jax.shard_map(
      local, mesh=mesh, in_specs=(tokens, tokens, tokens, P('expert')),
      out_specs=(tokens, P()))(x_TxD, idx_TxK, gate_TxK, w)
