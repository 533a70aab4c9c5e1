"""Seeing the run: the profiler window, the step-time split, MFU against the chip's
published peak and the timed matmul, and goodput across a restart."""

import json
import types

import jax
import pytest

from lattice import chips
from lattice import config as config_lib
from lattice.train import flops, loop

from conftest import tiny_config


def _rows(workdir):
  return [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]


def _check_seen(m):
  assert m['step_s'] > 0 and 0 <= m['data_wait_s'] <= m['step_s']
  assert m['compute_s'] == pytest.approx(m['step_s'] - m['data_wait_s'])
  assert 0 < m['mfu_measured'] < 1e3 and m['mfu'] > 0
  assert 0 < m['goodput'] <= 1


def test_profile_trace_step_split_mfu_and_goodput(tmp_path, one_device):
  cfg = config_lib.build(tiny_config(train={'profile_steps': '1:3', 'flops_peak': 0.0}))
  first = loop.train_and_evaluate(cfg, tmp_path, stop_after=3, devices=one_device)
  traces = list((tmp_path / 'profile').glob('plugins/profile/*/*.xplane.pb'))
  assert traces and traces[0].stat().st_size > 0
  rows = [r for r in _rows(tmp_path) if 'loss' in r]
  assert [r['step'] for r in rows] == [2]
  _check_seen(rows[0])
  out = loop.train_and_evaluate(cfg, tmp_path, devices=one_device).metrics
  _check_seen(out)
  if not flops.spec_peak(one_device):  # CPU: both columns are the timed matmul's
    assert out['spec_peak_flops'] == 0 and out['mfu'] == out['mfu_measured']
  rows = [r for r in _rows(tmp_path) if 'loss' in r]
  assert [r['step'] for r in rows] == [2, 4, 6]
  # The second session's wall clock continues the first's (restart counted).
  assert rows[1]['run_wall_s'] > rows[0]['run_wall_s'] and rows[1]['productive_s'] > 0
  assert first.metrics['preempted'] and out['goodput'] < 1


def test_spec_peak_from_the_chip_table():
  h100 = types.SimpleNamespace(device_kind='NVIDIA H100 80GB HBM3', platform='gpu')
  v5e = types.SimpleNamespace(device_kind='TPU v5 lite', platform='tpu')
  assert flops.spec_peak([h100] * 8) == 8 * chips.CHIPS['h100'].bf16_flops
  assert flops.spec_peak([v5e] * 4) == 4 * chips.CHIPS['v5e'].bf16_flops
  assert flops.spec_peak(jax.devices('cpu')) == 0.0


@pytest.mark.parametrize('spec', ['3', '4:2', '0:7', 'a:b'])
def test_profile_steps_validation_names_the_field(spec):
  with pytest.raises(config_lib.ConfigError, match='train.profile_steps'):
    config_lib.build(tiny_config(train={'profile_steps': spec}))   # 6 steps
