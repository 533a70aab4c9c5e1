"""Cross entropy and the sown-collection readers every loss and eval step shares.

Shape legend: B batch, L length, V vocabulary.

Conventions for what leaves the model through `sow` (DESIGN.md):
- `intermediates/**/aux_loss`: added to the loss (e.g. MoE balance losses);
- `intermediates/**/metrics/<name>`: averaged into the step's metrics.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

BYTE_VOCAB = 256  # Byte-tokenizer ids below this are raw bytes (bits-per-byte).


def cross_entropy(logits_BxLxV: jax.Array, targets_BxL: jax.Array,
                  weights_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed weighted cross entropy (nats) and the summed weight."""
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxLxV.astype(jnp.float32), targets_BxL)
  return jnp.sum(ce_BxL * weights_BxL), jnp.sum(weights_BxL)


def mean_ce(logits_BxLxV: jax.Array, targets_BxL: jax.Array,
            weights_BxL: jax.Array) -> jax.Array:
  """Weighted mean cross entropy (nats); 0 when every weight is 0."""
  ce_sum, weight = cross_entropy(logits_BxLxV, targets_BxL, weights_BxL)
  return ce_sum / jnp.maximum(weight, 1.0)


def collect(tree: Any, leaf_name: str) -> list[jax.Array]:
  """All sown values whose path contains `leaf_name` (sow stores tuples)."""
  found = []
  for path, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = [getattr(p, 'key', None) for p in path]
    if leaf_name in keys:
      found.append(value)
  return found


def sown_metrics(intermediates: Any) -> dict[str, jax.Array]:
  """Means of everything sown under a `metrics` name, keyed by its last dict key."""
  out: dict[str, list] = {}
  for path, value in jax.tree_util.tree_flatten_with_path(intermediates)[0]:
    keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
    if 'metrics' in keys[:-1]:
      out.setdefault(keys[-1], []).append(jnp.mean(value))
  return {k: jnp.mean(jnp.stack(v)) for k, v in out.items()}


def sown_aux(mutated: Any) -> jax.Array:
  """The sum of every sown `aux_loss` (e.g. MoE balance losses) in `mutated`."""
  found = collect(mutated.get('intermediates', {}), 'aux_loss')
  return sum((jnp.sum(a) for a in found), jnp.zeros(()))
