"""Pure train and eval steps: `train_step(state, batch) -> (state, metrics)`.

Shape legend: B batch, L length, V vocabulary.

Conventions for what leaves the model through `sow` (DESIGN.md):
- `intermediates/**/aux_loss`: added to the loss (e.g. MoE balance losses);
- `intermediates/**/metrics/<name>`: averaged into the step's metrics.
Non-gradient collections in `state.extra` are returned mutated by `apply` and then
passed through `extra_update` (e.g. the loss-free router-bias rule) inside the step.

A non-finite loss or gradient leaves the state unchanged (the update is selected
away), so a poisoned state can never be checkpointed; the loop decides whether to
stop or skip from the `finite` metric.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lattice.train.state import TrainState

LN2 = math.log(2.0)
BYTE_VOCAB = 256  # Byte-tokenizer ids below this are raw bytes (bits-per-byte).


def cross_entropy(logits_BxLxV: jax.Array, targets_BxL: jax.Array,
                  weights_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Summed weighted cross entropy (nats) and the summed weight."""
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxLxV.astype(jnp.float32), targets_BxL)
  return jnp.sum(ce_BxL * weights_BxL), jnp.sum(weights_BxL)


def _collect(tree: Any, leaf_name: str) -> list[jax.Array]:
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


def lm_loss(model: nn.Module, variables: dict, batch: dict[str, jax.Array],
            mutable: list[str]):
  """Next-token loss + sown aux losses. Returns (loss, (metrics, mutated))."""
  logits_BxLxV, mutated = model.apply(
      variables, batch['inputs'], mutable=['intermediates', *mutable])
  ce_sum, weight = cross_entropy(logits_BxLxV, batch['targets'], batch['weights'])
  ce = ce_sum / jnp.maximum(weight, 1.0)
  aux = sum((jnp.sum(a) for a in _collect(mutated.get('intermediates', {}), 'aux_loss')),
            jnp.zeros(()))
  metrics = {'loss': ce + aux, 'ce': ce, 'aux_loss': aux,
             **sown_metrics(mutated.get('intermediates', {}))}
  return ce + aux, (metrics, mutated)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, *,
                    loss_fn: Callable = lm_loss,
                    extra_update: Callable | None = None):
  """Builds the pure step. `extra_update(extra, mutated) -> extra` runs inside it."""

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    extra_names = list(state.extra)

    def loss_of(params):
      return loss_fn(model, {'params': params, **state.extra}, batch, extra_names)

    (loss, (metrics, mutated)), grads = jax.value_and_grad(loss_of, has_aux=True)(
        state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    extra = {k: mutated[k] for k in extra_names if k in mutated} or state.extra
    if extra_update is not None:
      extra = extra_update(extra, mutated)
    new = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                        extra=extra)
    # Keep the old state (but count the step) when anything is non-finite.
    keep = lambda n, o: jnp.where(finite, n, o)
    new = jax.tree.map(keep, new, state.replace(step=state.step + 1))
    metrics = {**metrics, 'loss': loss, 'grad_norm': grad_norm, 'finite': finite,
               'tokens': jnp.sum(batch['weights'])}
    if schedule is not None:
      metrics['lr'] = schedule(state.step)
    return new, metrics

  return train_step


def make_eval_step(model: nn.Module):
  """eval_step(state, batch) -> sums: loss (nats), weight, byte targets, and the
  per-layer expert loads [layers, E] when the model has MoE layers."""

  def eval_step(state: TrainState, batch: dict[str, jax.Array]):
    logits_BxLxV, mutated = model.apply(state.variables, batch['inputs'],
                                        mutable=['intermediates'])
    ce_sum, weight = cross_entropy(logits_BxLxV, batch['targets'], batch['weights'])
    n_bytes = jnp.sum(batch['weights'] * (batch['targets'] < BYTE_VOCAB))
    sums = {'loss_sum': ce_sum, 'weight': weight, 'bytes': n_bytes}
    loads = _collect(mutated.get('intermediates', {}), 'expert_load')
    if loads:
      sums['expert_load'] = jnp.concatenate([l.reshape(-1, l.shape[-1]) for l in loads])
    return sums

  return eval_step


def summarize_eval(sums: dict[str, Any]) -> dict[str, float]:
  """Mean loss, bits per byte (all target nats over the byte targets) and, for MoE,
  MaxVio_global: per layer over the whole eval set, averaged over layers."""
  loss = sums['loss_sum'] / max(sums['weight'], 1.0)
  bpb = sums['loss_sum'] / LN2 / max(sums['bytes'], 1.0)
  out = {'val_loss': float(loss), 'val_bpb': float(bpb)}
  if 'expert_load' in sums:
    load_LxE = np.asarray(sums['expert_load'], np.float64)
    mean_L = load_LxE.mean(axis=1)
    out['maxvio_global'] = float(np.mean((load_LxE.max(axis=1) - mean_L) / mean_L))
  return out
