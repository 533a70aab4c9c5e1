"""Optimizer and schedules: optax AdamW, gradient clipping, weight-decay masks.

Schedules (all optax): `constant`, `cosine` (linear warmup then cosine to
min_lr_ratio), `wsd` (warmup-stable-decay: linear decay over the final
decay_fraction of steps), `two_stage` (BitNet b1.58: cosine-style decay for the first
half, then an abrupt drop to stage2_lr_ratio of peak with weight decay switched to
stage2_weight_decay; figures from public re-implementations, see PAPERS.md).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax
from flax import traverse_util

from lattice import config as config_lib
from lattice.train import flops


def lr_schedule(o: config_lib.OptimizerConfig, steps: int) -> optax.Schedule:
  peak, warm = o.lr, o.warmup_steps
  floor = peak * o.min_lr_ratio
  warmup = optax.linear_schedule(0.0, peak, max(warm, 1))
  if o.schedule == 'constant':
    main = optax.constant_schedule(peak)
  elif o.schedule == 'cosine':
    main = optax.cosine_decay_schedule(peak, max(steps - warm, 1), alpha=o.min_lr_ratio)
  elif o.schedule == 'wsd':
    decay = max(int(round(steps * o.decay_fraction)), 1)
    stable = max(steps - warm - decay, 0)
    main = optax.join_schedules(
        [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)],
        [stable])
  elif o.schedule == 'two_stage':
    half = max(steps // 2 - warm, 1)
    stage2 = peak * o.stage2_lr_ratio
    # Stage 1 decays linearly to halfway between peak and the stage-2 LR, so the
    # drop at the midpoint is abrupt, as in the BitNet b1.58 recipe.
    main = optax.join_schedules(
        [optax.linear_schedule(peak, stage2 + (peak - stage2) * 0.5, half),
         optax.cosine_decay_schedule(stage2, max(steps - steps // 2, 1),
                                     alpha=o.min_lr_ratio)],
        [half])
  else:
    raise config_lib.ConfigError(f'optimizer.schedule: unknown {o.schedule!r}')
  if warm == 0:
    return main
  return optax.join_schedules([warmup, main], [warm])


def weight_decay_schedule(o: config_lib.OptimizerConfig, steps: int):
  if o.schedule != 'two_stage':
    return o.weight_decay
  return optax.join_schedules(
      [optax.constant_schedule(o.weight_decay),
       optax.constant_schedule(o.stage2_weight_decay)], [steps // 2])


def decay_mask(params: Any, decay_norms_and_embeddings: bool = False) -> Any:
  """True where weight decay applies: matrices, but not norms, biases or embeddings."""
  flat = traverse_util.flatten_dict(params)

  def wants_decay(path, leaf):
    if decay_norms_and_embeddings:
      return True
    # By name, not ndim: nn.scan stacks norm gains and biases into [layers, D].
    return (jnp.ndim(leaf) >= 2 and 'embedding' not in path
            and path[-1] not in flops.VECTOR_PARAMS)

  return traverse_util.unflatten_dict({k: wants_decay(k, v) for k, v in flat.items()})


def make_optimizer(o: config_lib.OptimizerConfig, steps: int,
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = lr_schedule(o, steps)
  parts = []
  if o.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  parts.append(optax.adamw(
      schedule, b1=o.b1, b2=o.b2, eps=o.eps,
      weight_decay=weight_decay_schedule(o, steps),
      mask=lambda p: decay_mask(p, o.decay_norms_and_embeddings)))
  return optax.chain(*parts), schedule

