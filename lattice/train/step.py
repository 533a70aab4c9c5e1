"""Pure train step: `train_step(state, batch) -> (state, metrics)`.

Shape legend: B batch, L length, V vocabulary.

The loss comes from the model (`lattice.model.loss_fn` by default). Non-gradient
collections in `state.extra` are returned mutated by `apply` and then passed
through `extra_update` inside the step.

A non-finite loss or gradient leaves the state unchanged (the update is selected
away), so a poisoned state can never be checkpointed; the loop decides whether to
stop or skip from the `finite` metric.
"""

from __future__ import annotations

from typing import Callable

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


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    schedule: optax.Schedule | None = None, *,
                    loss_fn: Callable = model_lib.loss_fn,
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
