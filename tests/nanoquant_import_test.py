"""experiments/nanoquant.py starting from an imported model (`compress.from_run`, the
path its medium and full modes take with a `lattice convert hf` output): here a tiny
run with Qwen3's kinds of attention (grouped KV heads, QK-norm) stands in for it.
Compression itself is covered by the smoke mode and tests/nanoquant_test.py."""

import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice import experiment
from lattice.train import loop


def test_the_float_arm_is_the_imported_run_evaluated_not_trained(tmp_path):
  nq = experiment.load_experiment_module('experiments/nanoquant.py')
  source = experiment.arm_config(nq.get_config('smoke'), {
      'model.attention.n_kv_heads': 1, 'model.attention.qk_norm': True,
      'train.steps': 3, 'train.progress': False}, seed=0)
  imported = loop.train_and_evaluate(source, tmp_path / 'imported')

  config = nq.get_config('smoke')
  config.compress.from_run = str(tmp_path / 'imported')
  config.model.d_model = 32   # replaced by the imported run's model (d_model 64)
  cfg, params, arms = nq._float_arm(config, str(tmp_path / 'run'))  # pylint: disable=protected-access
  assert cfg.model == imported.setup.cfg.model
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(imported.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  (arm,) = arms
  # The run's own final validation loss on the same eval batches; nothing trained.
  assert arm.metrics['val_loss']['mean'] == pytest.approx(imported.metrics['val_loss'],
                                                          rel=1e-4)
  assert arm.tokens == 0 and arm.train_flops == 0
  assert arm.params == imported.metrics['params']
  assert arm.overrides == {'compress.from_run': str(tmp_path / 'imported')}
  assert not (tmp_path / 'run').exists()


def test_a_missing_imported_run_is_one_line_naming_the_field(tmp_path):
  nq = experiment.load_experiment_module('experiments/nanoquant.py')
  config = nq.get_config('smoke')
  with pytest.raises(config_lib.ConfigError, match='compress.from_run'):
    nq.imported_model(config, str(tmp_path / 'nothing'))
