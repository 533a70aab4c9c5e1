"""scripts/smoke_parity.py: what it compares, and how a reference is (re)recorded.

The script runs every experiment's smoke mode (minutes each), so the test checks its
logic on hand-written key numbers only; running it is the lead's (see its docstring).
"""

import importlib.util
import json
import pathlib

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / 'scripts' / 'smoke_parity.py'


@pytest.fixture(scope='module')
def parity():
  spec = importlib.util.spec_from_file_location('smoke_parity', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _numbers(loss, wall=1.0, passed=True, params=100):
  return {'arms': {'a': {'params': params, 'metrics': {'val_loss': [loss],
                                                       'wall_s': [wall]}}},
          'checks': {'claim': passed, 'faster than dense': True}}


def test_differences_beyond_tolerance_only(parity):
  ref = {'exp': _numbers(2.0)}
  assert parity.differences(ref, {'exp': _numbers(2.0 * (1 + 1e-7), wall=9.0)}) == []
  then, now = _numbers(2.0), _numbers(2.0)
  then['arms']['a']['metrics']['goodput'] = [0.5]  # a share of wall time
  now['arms']['a']['metrics']['goodput'] = [0.2]
  assert parity.differences({'exp': then}, {'exp': now}) == []
  assert parity.differences(ref, {'exp': _numbers(2.001)}) == [
      'exp.arms.a.metrics.val_loss[0]: 2.0 -> 2.001']
  assert parity.differences(ref, {'exp': _numbers(2.0, params=101)}) == [
      'exp.arms.a.params: 100 -> 101']
  assert parity.differences(ref, {'exp': _numbers(2.0, passed=False)}) == [
      'exp.checks.claim: True -> False']
  now = _numbers(2.0)
  now['arms']['a']['metrics']['new_metric'] = [1.0]
  assert parity.differences(ref, {'exp': now}) == [
      'ADDED exp.arms.a.metrics.new_metric: (now [1.0])']


def test_record_stamps_the_commit_and_merges_named_experiments(parity, tmp_path,
                                                               monkeypatch):
  monkeypatch.setattr(parity, 'REFERENCE', tmp_path / 'ref.json')
  monkeypatch.setattr(parity, 'git_commit', lambda: 'aaa1111')
  full = parity.record({'x': _numbers(1.0), 'y': _numbers(2.0)}, None)
  assert full[parity.META] == {'x': 'aaa1111', 'y': 'aaa1111'}
  parity.REFERENCE.write_text(json.dumps(full))
  monkeypatch.setattr(parity, 'git_commit', lambda: 'bbb2222+dirty')
  merged = parity.record({'y': _numbers(3.0)}, ['y'])
  assert merged['x'] == full['x'] and merged['y'] == _numbers(3.0)
  assert merged[parity.META] == {'x': 'aaa1111', 'y': 'bbb2222+dirty'}


def test_the_reference_names_the_commit_of_every_experiment(parity):
  ref = json.loads(parity.REFERENCE.read_text())
  assert set(ref[parity.META]) == set(ref) - {parity.META}
  assert parity.git_commit()  # a hash (or 'unknown' outside git), never empty
