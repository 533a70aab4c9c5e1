"""scripts/seed_power.py: seeds a paired t check needs, and parsing check details."""

import importlib.util
import math
import pathlib

import pytest

from lattice.run import stats

_spec = importlib.util.spec_from_file_location(
    'seed_power', pathlib.Path(__file__).resolve().parents[1] / 'scripts' / 'seed_power.py')
seed_power = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_power)


def test_seeds_needed_is_the_first_n_whose_interval_clears_the_bound():
  mean, sd = -0.004, 0.004   # deepseek_moe's fine+shared - dense pilot, rounded
  n = seed_power.seeds_needed(mean, sd, 0.0, below=True)
  half = lambda k: stats.t_quantile(0.975, k - 1) * sd / math.sqrt(k)
  assert mean + half(n) < 0 <= mean + half(n - 1)
  n80 = seed_power.seeds_needed(mean, sd, 0.0, below=True, power=0.8)
  assert n80 > n


def test_seeds_needed_failing_side_and_margins():
  assert seed_power.seeds_needed(0.01, 0.1, 0.0, below=True) is None
  # non-inferiority, higher is better: mean +0.0177 against a lower bound -0.05
  assert seed_power.seeds_needed(0.0177, 0.0355, -0.05, below=False) == 4
  assert seed_power.seeds_needed(-1.0, 0.0, 0.0, below=True) == 3
  with pytest.raises(ValueError, match='power'):
    seed_power.seeds_needed(-1.0, 1.0, 0.0, below=True, power=0.3)


def test_parse_check_reads_per_seed_values_and_bound():
  rel = seed_power.parse_check(
      'val_loss a / b - 1: -0.19%, 95% CI [-1.38%, +0.99%], paired t over 3 seeds '
      '(s0 -0.74%, s1 +0.09%, s2 +0.07%); non-inferiority margin +1.00%: needs the CI '
      'upper bound < +1.00%')
  assert rel['values'] == pytest.approx([-0.0074, 0.0009, 0.0007])
  assert rel['bound'] == pytest.approx(0.01) and rel['below']
  absolute = seed_power.parse_check(
      'acc a - b: +0.06, 95% CI [-0.03, +0.16], paired t over 2 seeds (s0 +0.068, '
      's1 -2.5e-03); needs the CI above 0')
  assert absolute['values'] == pytest.approx([0.068, -0.0025])
  assert absolute['bound'] == 0 and not absolute['below']
  assert seed_power.parse_check('1000 items, bootstrap CI') is None
