"""Pure train step: `train_step(state, batch) -> (state, metrics)`.

Shape legend: B global batch, M microbatches, b = B / M rows per microbatch,
L length.

The loss comes from the model (`lattice.model.loss_fn` by default). Non-gradient
collections in `state.extra` are returned mutated by `apply` and then passed
through `extra_update` inside the step.

Gradient accumulation (`train.microbatches` = M > 1): the step `jax.lax.scan`s over
M microbatches of the global batch and applies one optimizer update, so activation
memory is that of B / M rows. Microbatch m holds rows m, m + M, m + 2M, ... (a
strided split, so each data-parallel device keeps its own rows and nothing moves
between devices). Each microbatch's loss, gradient and metrics are weighted by its
share of the batch's loss weight, W_m / W (`batch['weights']` summed): the next-token
loss, a per-token weighted mean, is then exactly the global batch's mean (not a mean
of microbatch means) and the gradient equals the full batch's up to float
reassociation. Terms normalised by other counts follow the same weights, so they
match the full batch up to that count's share: multi-token heads (their last k - 1
targets per row carry no weight) and MoE balance losses, which, as under data
parallelism, see the routing statistics of their own microbatch. Non-gradient state
(e.g. the loss-free router bias): every microbatch reads the step's value, as one
full batch would, and the new value is the mean of the microbatches' updates.

A non-finite loss or gradient leaves the state unchanged (the update is selected
away), so a poisoned state can never be checkpointed; the loop decides whether to
stop or skip from the `finite` metric.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lattice import model as model_lib
from lattice.nn import losses
from lattice.train.state import TrainState

# The eval side lives with the model; re-exported for the run layer.
make_eval_step = model_lib.make_eval_step
summarize_eval = model_lib.summarize_eval
lm_loss = model_lib.loss_fn
cross_entropy = losses.cross_entropy


def split_microbatches(batch: dict[str, jax.Array], microbatches: int
                       ) -> dict[str, jax.Array]:
  """[B, ...] leaves -> [M, B / M, ...]; microbatch m holds rows m, m + M, ...

  The strided split keeps every data-parallel device's rows on that device (its
  contiguous block of B holds rows of every microbatch).

  Raises:
    ValueError: B is not divisible by `microbatches` (names train.microbatches).
  """
  M = microbatches
  out = {}
  for name, x in batch.items():
    if x.shape[0] % M:
      raise ValueError(f'train.microbatches: {M} does not divide the batch of '
                       f'{x.shape[0]} rows (batch[{name!r}])')
    x_bxMx = x.reshape(x.shape[0] // M, M, *x.shape[1:])
    x_bxMx = nn.with_logical_constraint(x_bxMx, ('act_batch',) + (None,) * (x.ndim))
    out[name] = jnp.swapaxes(x_bxMx, 0, 1)
  return out


def _zeros_like(shapes: Any) -> Any:
  """Float32 accumulators for a pytree of ShapeDtypeStructs."""
  return jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, *,
                    loss_fn: Callable = model_lib.loss_fn,
                    extra_update: Callable | None = None, microbatches: int = 1):
  """Builds the pure step. `extra_update(extra, mutated) -> extra` runs inside it.

  `microbatches` M > 1 accumulates gradients over M microbatches of the batch
  (module docstring) and applies one update; M = 1 is the plain step.
  """
  if microbatches < 1:
    raise ValueError(f'train.microbatches: must be positive, got {microbatches}')

  def grads_of(params, extra, batch):
    """((loss, (metrics, mutated)), grads) of one (micro)batch."""
    def loss_of(p):
      return loss_fn(model, {'params': p, **extra}, batch, list(extra))
    return jax.value_and_grad(loss_of, has_aux=True)(params)

  def accumulate(params, extra, batch):
    """grads_of over microbatches, weighted by each one's share of the loss weight."""
    micro = split_microbatches(batch, microbatches)
    total_w = jnp.sum(batch['weights'].astype(jnp.float32))
    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(grads_of, params, extra, first)
    (_, (_, mutated_shapes)), _ = shapes

    def body(acc, mb):
      out = grads_of(params, extra, mb)
      w = jnp.sum(mb['weights'].astype(jnp.float32))
      share = jnp.where(total_w > 0, w / jnp.maximum(total_w, 1e-30), 1.0 / microbatches)
      (loss, (metrics, mutated)), grads = out
      weighted = jax.tree.map(lambda a, x: a + share * x.astype(jnp.float32),
                              acc[0], ((loss, metrics), grads))
      # Non-gradient updates: an unweighted mean (module docstring).
      mean = jax.tree.map(lambda a, x: a + x.astype(jnp.float32) / microbatches,
                          acc[1], mutated)
      return (weighted, mean), None

    (loss_metrics_shapes, grad_shapes) = ((shapes[0][0], shapes[0][1][0]), shapes[1])
    acc0 = (_zeros_like((loss_metrics_shapes, grad_shapes)), _zeros_like(mutated_shapes))
    ((loss_metrics, grads), mutated), _ = jax.lax.scan(body, acc0, micro)
    cast = lambda tree, like: jax.tree.map(lambda x, s: x.astype(s.dtype), tree, like)
    (loss, metrics), grads = cast((loss_metrics, grads), (loss_metrics_shapes, grad_shapes))
    return (loss, (metrics, cast(mutated, mutated_shapes))), grads

  def train_step(state: TrainState, batch: dict[str, jax.Array]):
    extra_names = list(state.extra)
    if microbatches == 1:
      out = grads_of(state.params, state.extra, batch)
    else:
      out = accumulate(state.params, state.extra, batch)
    (loss, (metrics, mutated)), grads = out
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
