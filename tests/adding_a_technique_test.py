"""The README's worked example: a new quantizer is one class plus one table line.

The test adds the README's `SignLinear` to `LINEARS` for its own duration (no other
list to edit: the config reads the table) and trains one step of an MoE model with
it. A second kind declares a field of its own (`options`), which becomes a flat
`model.linear` key, checked once when the config is built.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.errors import ConfigError
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


@dataclasses.dataclass(frozen=True)
class Sign:
  """The README's field example: a fixed scale instead of mean |w|; 0 keeps mean |w|."""
  sign_scale: float = 0.0

  def check(self, cfg):
    del cfg
    if self.sign_scale < 0:
      raise ConfigError(f'model.linear.sign_scale: must be >= 0, got {self.sign_scale}')


class ScaledSignLinear(SignLinear):
  options = Sign

  @staticmethod
  def prepare(cfg, x, w, n_in):
    scale = cfg.sign_scale or jnp.mean(jnp.abs(w))
    return x, ste.straight_through(w, lambda v: jnp.where(v >= 0, 1.0, -1.0) * scale)


def test_a_new_quantizer_is_one_class_and_one_table_line(monkeypatch, one_device):
  monkeypatch.setitem(linears.LINEARS, 'sign', SignLinear)
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
  # Without the table line the name is refused, naming the field and the known kinds.
  monkeypatch.delitem(linears.LINEARS, 'sign')
  with pytest.raises(ConfigError, match=r"^model.linear.kind: 'sign' is not one of float"):
    config_lib.build(tiny_config(model={'linear': {'kind': 'sign'}}))


def test_a_kind_declares_its_own_fields(monkeypatch):
  # What importing a LINEARS with the new line does: model.linear gains the kind's
  # fields (the config module builds LinearConfig from the table at import).
  table = {**linears.LINEARS, 'sign': ScaledSignLinear}
  monkeypatch.setitem(linears.LINEARS, 'sign', ScaledSignLinear)
  monkeypatch.setattr(config_lib, 'LinearConfig', config_lib._with_kind_fields(  # pylint: disable=protected-access
      'linear', config_lib._LinearConfig, table, ''))  # pylint: disable=protected-access
  cfg = config_lib.build(tiny_config(model={'linear': {'kind': 'sign', 'sign_scale': 0.5}}))
  assert cfg.model.linear.options == Sign(sign_scale=0.5)
  _, wq = ScaledSignLinear.prepare(cfg.model.linear, None, jnp.array([1.0, -2.0]), 1)
  np.testing.assert_array_equal(np.asarray(wq), [0.5, -0.5])
  with pytest.raises(ConfigError, match=r'^model.linear.sign_scale: must be >= 0'):
    config_lib.build(tiny_config(model={'linear': {'kind': 'sign', 'sign_scale': -1.0}}))
  # Only the selected kind's fields are checked: another kind ignores a bad one.
  config_lib.build(tiny_config(model={'linear': {'kind': 'float', 'sign_scale': -1.0}}))
  # Two kinds may share a field only if they declare it alike.
  clash = type('Clash', (SignLinear,), {'options': dataclasses.make_dataclass(
      'Clash', [('sign_scale', float, dataclasses.field(default=1.0))], frozen=True)})
  with pytest.raises(TypeError, match='declared differently'):
    config_lib._with_kind_fields('linear', config_lib._LinearConfig,  # pylint: disable=protected-access
                                 {**table, 'clash': clash}, '')
