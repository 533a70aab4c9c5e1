"""The README's worked example: a new quantizer is one class plus one table line.

The test adds the README's `SignLinear` to `LINEARS` (and its name to the config's
kinds) for its own duration, and trains one step of an MoE model with it.
"""

import jax
import jax.numpy as jnp
import numpy as np

from lattice import config as config_lib
from lattice.quant import linear, linears, ste
from lattice.train import loop

from conftest import tiny_config


def _sign(w):
  return jnp.where(w >= 0, 1.0, -1.0) * jnp.mean(jnp.abs(w))


class SignLinear(linear.Linear):
  """1-bit weights: sign(w) scaled by mean |w| (per tensor), straight-through."""

  @staticmethod
  def prepare(cfg, x, w, n_in):
    return x, ste.straight_through(w, _sign)


def test_a_new_quantizer_is_one_class_and_one_table_line(monkeypatch, one_device):
  monkeypatch.setitem(linears.LINEARS, 'sign', SignLinear)
  kinds = dict(config_lib._KINDS)  # pylint: disable=protected-access
  kinds['linear'] = (*kinds['linear'], 'sign')
  monkeypatch.setattr(config_lib, '_KINDS', kinds)
  cfg = config_lib.build(tiny_config(model={
      'linear': {'kind': 'sign'}, 'ffn': {'kind': 'moe', 'n_experts': 4, 'top_k': 2}}))
  # The projection really is 1-bit: two distinct weight values.
  w = jax.random.normal(jax.random.key(0), (8, 4))
  _, wq = SignLinear.prepare(cfg.model.linear, jnp.ones((1, 8)), w, 1)
  assert len(np.unique(np.asarray(wq))) == 2
  setup = loop.build(cfg, devices=one_device)
  state = setup.init(jax.random.key(0))
  batch = {'inputs': np.ones((8, 16), np.int32), 'targets': np.ones((8, 16), np.int32),
           'weights': np.ones((8, 16), np.float32)}
  _, m = setup.train_step(state, batch)
  assert bool(m['finite']) and float(m['loss']) > 0
