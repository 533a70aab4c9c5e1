"""The train state: one pytree, checkpointed whole.

`extra` holds non-gradient model state that the step updates itself (every flax
collection other than params, cache and intermediates, e.g. a router bias); it is saved and
sharded with everything else, and never touched by the optimizer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  step: jax.Array
  params: Any
  opt_state: Any
  extra: dict[str, Any]

  @classmethod
  def create(cls, variables: dict[str, Any], tx: optax.GradientTransformation):
    params = variables['params']
    extra = {k: v for k, v in variables.items() if k not in ('params', 'cache',
                                                             'intermediates')}
    return cls(step=jnp.zeros((), jnp.int32), params=params,
               opt_state=tx.init(params), extra=extra)

  @property
  def variables(self) -> dict[str, Any]:
    return {'params': self.params, **self.extra}

