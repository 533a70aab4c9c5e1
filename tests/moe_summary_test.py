"""lattice.moe.summary: MaxVio_global and its late-run average (arXiv 2408.15664)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.moe import layer, summary

from conftest import tiny_config


def test_maxvio_global_of_hand_loads():
  # layer 0: mean 2, max 4 -> 1.0; layer 1: balanced -> 0; mean over layers 0.5
  out = summary.summarize({'expert_load': [[4.0, 2.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]]})
  assert out == {'maxvio_global': pytest.approx(0.5)}
  assert summary.summarize({}) == {}


def test_fixed_router_maxvio_global_and_late_average_equal_hand_value():
  # A router whose selection bias sends every token to experts 0 and 1 (top-2 of 8):
  # loads [T, T, 0 x 6], mean T/4, so MaxVio = (T - T/4) / (T/4) = 3 at every eval.
  c = tiny_config(model={'vocab_size': 384, 'ffn': {
      'kind': 'moe', 'n_experts': 8, 'top_k': 2, 'router_bias': True}})
  cfg = config_lib.build(c).model
  x = jax.random.normal(jax.random.key(3), (4, 6, cfg.d_model))
  moe = layer.MoE(cfg)
  variables = nn.unbox(moe.init(jax.random.key(0), x))
  variables['moe_bias']['bias'] = jnp.zeros((8,)).at[:2].set(100.0)
  _, mut = moe.apply(variables, x, mutable=['intermediates'])
  load_E = np.asarray(mut['intermediates']['expert_load'][0])
  assert load_E.tolist() == [24.0, 24.0] + [0.0] * 6
  vio = summary.summarize({'expert_load': load_E[None]})['maxvio_global']
  assert vio == pytest.approx(3.0)
  history = [{'step': s, 'maxvio_global': vio, 'val_loss': 1.0}
             for s in (300, 600, 900, 1200, 1500, 1600)]
  assert summary.maxvio_late(history, 1600) == (pytest.approx(3.0), 3)


def test_maxvio_late_averages_only_the_late_window():
  rows = [{'step': 400, 'maxvio_global': 9.0}, {'step': 800, 'maxvio_global': 9.0},
          {'step': 1200, 'maxvio_global': 0.3}, {'step': 1500, 'maxvio_global': 0.1},
          {'step': 1600, 'maxvio_global': 0.2}, {'step': 1600, 'val_loss': 2.0}]
  assert summary.maxvio_late(rows, 1600) == (pytest.approx(0.2), 3)
  assert summary.maxvio_late(rows, 1600, fraction=0.5) == (pytest.approx(2.4), 4)
  assert summary.maxvio_late(rows, 1600, fraction=1.0)[1] == 5
  with pytest.raises(ValueError, match='no evaluation'):
    summary.maxvio_late(rows[:2], 1600)
  with pytest.raises(ValueError, match='fraction'):
    summary.maxvio_late(rows, 1600, fraction=0.0)
