"""Shifted targets and per-head cross entropies shared by the MTP heads.

Shape legend: B batch, L length, V vocabulary.

A batch holds inputs = window[:-1] and targets = window[1:] (lattice/data/pipeline),
so the token k steps after input position t is targets[t + k - 1]: the main head
(k = 1) uses the targets as they are, head k uses them shifted left by k - 1, and
the last k - 1 positions (whose target lies past the window) get weight 0. In packed
rows (`segment_ids`), a target in a later document than its input also gets weight
0: no head predicts across a document boundary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lattice.nn import losses as nn_losses


def shifted_targets(batch: dict[str, jax.Array], k: int
                    ) -> tuple[jax.Array, jax.Array]:
  """(targets, weights) for predicting the token k steps ahead of each input."""
  targets_BxL, weights_BxL = batch['targets'], batch['weights']
  if k == 1:
    return targets_BxL, weights_BxL
  L = targets_BxL.shape[1]
  s = min(k - 1, L)
  pad = lambda x: jnp.pad(x[:, s:], ((0, 0), (0, s)))
  return pad(targets_BxL), pad(weights_BxL) * _same_document(batch, pad)


def _same_document(batch: dict[str, jax.Array], shift) -> jax.Array | float:
  """1 where the shifted target's input (hence, with its own weight > 0, the target)
  is in the same document as the position's input; 1.0 without segment ids."""
  if 'segment_ids' not in batch:
    return 1.0
  segment_ids_BxL = batch['segment_ids']
  return (shift(segment_ids_BxL) == segment_ids_BxL).astype(jnp.float32)


def head_ce(logits_BxLxV: jax.Array, batch: dict[str, jax.Array], k: int) -> jax.Array:
  """Mean cross entropy (nats) of predicting the token k steps ahead."""
  targets_BxL, weights_BxL = shifted_targets(batch, k)
  ce_sum, weight = nn_losses.cross_entropy(logits_BxLxV, targets_BxL, weights_BxL)
  return ce_sum / jnp.maximum(weight, 1.0)


def head_ce_dynamic(logits_BxLxV: jax.Array, batch: dict[str, jax.Array],
                    i: jax.Array) -> jax.Array:
  """`head_ce` for k = i + 1 with a traced i (heads scanned in a loop)."""
  L = batch['targets'].shape[1]
  shift = lambda x: jax.lax.dynamic_slice_in_dim(
      jnp.pad(x, ((0, 0), (0, L))), i, L, axis=1)
  weights_BxL = shift(batch['weights']) * _same_document(batch, shift)
  ce_sum, weight = nn_losses.cross_entropy(logits_BxLxV, shift(batch['targets']),
                                          weights_BxL)
  return ce_sum / jnp.maximum(weight, 1.0)
