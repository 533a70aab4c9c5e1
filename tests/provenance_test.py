"""Tests for lattice.run.provenance: a workdir bound to one commit, the load average
recorded with a result and the warning table.md prints when it was busy."""

import json
import types

import pytest

from lattice import config as config_lib
from lattice import main as main_lib
from lattice import report
from lattice.run import provenance, records, stats, tables

ENV = {'jax': '0.0.0', 'backend': 'cpu', 'device_count': 1, 'git_commit': 'abc1234'}


def result(env):
  arm = records.Arm('baseline', {}, stats.aggregate([{'loss': 2.0}]), seeds=[0])
  return records.Result(
      experiment='e', paper={'title': 'P'}, claim='c', mode='quick', arms=[arm],
      checks=[records.check('direction', True, 'a < b')], headline={}, env=env)


def test_bind_workdir_stamps_then_refuses_another_commit(tmp_path):
  provenance.bind_workdir(tmp_path / 'w', 'abc1234')
  stamp = tmp_path / 'w' / provenance.PROVENANCE_FILE
  assert json.loads(stamp.read_text()) == {'git_commit': 'abc1234'}
  provenance.bind_workdir(tmp_path / 'w', 'abc1234')  # same code: resumes
  with pytest.raises(config_lib.ConfigError,
                     match=r'trained at commit abc1234, this code is commit def5678'):
    provenance.bind_workdir(tmp_path / 'w', 'def5678')
  provenance.bind_workdir(tmp_path / 'w', None)  # unknown provenance: not checked


def test_bind_workdir_writes_only_when_told(tmp_path):
  provenance.bind_workdir(tmp_path / 'w', 'abc1234', write=False)
  assert not (tmp_path / 'w' / provenance.PROVENANCE_FILE).exists()


def test_main_refuses_a_workdir_of_another_commit(tmp_path, monkeypatch):
  monkeypatch.setattr(records, 'git_commit', lambda _: 'def5678')
  (tmp_path / provenance.PROVENANCE_FILE).write_text('{"git_commit": "abc1234"}')
  called = []
  monkeypatch.setattr(main_lib, '_experiment_module',
                      types.SimpleNamespace(run=lambda *a: called.append(a)))
  with pytest.raises(config_lib.ConfigError, match='never mixes code versions'):
    main_lib.run(None, str(tmp_path))
  assert not called
  assert provenance.env_fields('def5678')['load_average_start'] is None  # forgotten


def test_env_fields_and_busy_warning():
  provenance.mark_start('abc1234')
  try:
    fields = provenance.env_fields('abc1234')
    assert len(fields['load_average_start']) == 3 and fields['cpu_count'] >= 1
    assert fields['git_commit'] == 'abc1234' and 'git_commit_end' not in fields
    # The tree moved during the run: the result keeps the commit it started from.
    moved = provenance.env_fields('def5678')
    assert (moved['git_commit'], moved['git_commit_end']) == ('abc1234', 'def5678')
    assert '(the tree was at def5678 when the result was written)' in (
        tables.result_markdown(result({**ENV, **moved})))
  finally:
    provenance.forget_start()
  assert provenance.env_fields('def5678')['load_average_start'] is None
  assert provenance.env_fields('def5678')['git_commit'] == 'def5678'
  idle = {**ENV, 'cpu_count': 2, 'load_average_start': [0.6, 1, 1],
          'load_average_end': [1.9, 1, 1]}
  assert provenance.busy(idle) is None
  assert provenance.busy({**idle, 'load_average_end': [2.9, 1, 1]}) is None  # itself
  busy = {**idle, 'load_average_end': [3.4, 2, 1]}
  assert provenance.busy(busy) == (
      '1-minute load average 0.60 at the start and 3.40 at the end, above 3 on 2 '
      'cores: wall-clock figures (wall s, tokens/s, MFU) are not measurements')
  assert provenance.busy({**idle, 'load_average_start': [2.5, 1, 1]}) is None
  assert provenance.busy({**idle, 'load_average_start': [3.5, 1, 1]}) is not None
  assert provenance.busy(ENV) is None  # written before the fields existed
  assert '- **⚠ Load:** 1-minute load average' in tables.result_markdown(result(busy))
  md = tables.result_markdown(result(idle))
  assert '- **Load:** 1-minute load average 0.60 at the start, 1.90 at the end (2 cores)' in md
  assert 'Load' not in tables.result_markdown(result(ENV))


def test_env_info_records_the_load_average():
  env = records.env_info()
  assert len(env['load_average_end']) == 3 and env['cpu_count'] >= 1


def test_report_names_the_commits():
  one = [result(ENV), result(ENV)]
  assert report.commits_line(one) == 'Every result is from one commit: `abc1234` (2).'
  two = one + [result({**ENV, 'git_commit': 'def5678-dirty'})]
  assert report.commits_line(two) == (
      'Results by commit (not one commit): `abc1234` (2), `def5678-dirty` (1).')
