"""A run survives what a new user does to it (issue 19): Ctrl-C saves and exits without
a traceback, resuming or rerunning keeps the eval history and metrics, a workdir of
another model shape is refused before anything is written, and results are 0644.

The runs are tiny (a ~30k-parameter model, 6 steps, one CPU device); the SIGINT test
runs one training subprocess (imports and compile: most of its time).
"""

import json
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import time

import jax
import pytest

from lattice import config as config_lib
from lattice.run import records as results
from lattice.run import stats
from lattice.train import checkpoint, loop

from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cfg(**train):
  return tiny_config(train={'steps': 6, 'log_every': 1, 'eval_every': 2, **train},
                     checkpoint={'every': 2, 'keep': 5})


def _train(workdir, cfg=None, **kw):
  return loop.train_and_evaluate(config_lib.build(cfg or _cfg()), workdir,
                                 devices=jax.devices()[:1], **kw)


def _rows(workdir):
  return [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]


def test_resume_rerun_and_reshape_of_a_workdir(tmp_path):
  # Interrupted after step 3 (saved there); then the step-3 checkpoint is lost, so
  # the run resumes from step 2 while metrics.jsonl already holds step 3's row.
  out = _train(tmp_path, stop_after=3)
  assert out['preempted'] and out['steps'] == 3
  shutil.rmtree(tmp_path / 'checkpoints' / '3')
  out = _train(tmp_path)
  assert out['steps'] == 6 and not out['preempted']
  rows = _rows(tmp_path)
  train_steps = [r['step'] for r in rows if 'loss' in r]
  eval_steps = [r['step'] for r in rows if 'val_loss' in r]
  assert train_steps == [1, 2, 3, 4, 5, 6]  # step 3 once, though it was trained twice
  assert eval_steps == [2, 4, 6]
  # The step-2 eval point came from the first session and is still in the history.
  assert [h['step'] for h in out['history']] == [2, 4, 6]
  final = json.loads((tmp_path / 'final_metrics.json').read_text())
  # Rerunning the finished run changes neither its history nor its metrics.
  again = _train(tmp_path)
  after = json.loads((tmp_path / 'final_metrics.json').read_text())
  assert after['history'] == final['history'] and len(after['history']) == 3
  for key in ('mfu', 'tokens_per_s', 'matmul_peak_flops', 'train_loss', 'val_loss',
              'tokens', 'steps'):
    assert after[key] == final[key], key
  assert again['history'] == out['history']
  assert _rows(tmp_path) == rows  # nothing appended twice

  # The same workdir with a wider model: refused before anything is written.
  files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')}
  stored = (tmp_path / 'config.json').read_bytes()
  wider = _cfg()
  wider['model'] = {**wider['model'], 'd_model': 64}
  with pytest.raises(config_lib.ConfigError) as e:
    _train(tmp_path, wider)
  message = str(e.value)
  assert message.startswith('model.d_model:') and '\n' not in message
  assert 'stored 32, now 64' in message
  assert (tmp_path / 'config.json').read_bytes() == stored
  assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')} == files
  # A change that keeps every shape (the RoPE base) is not refused.
  same_shape = _cfg()
  same_shape['model'] = {**same_shape['model'],
                         'attention': {**same_shape['model']['attention'],
                                       'rope_theta': 500.0}}
  assert _train(tmp_path, same_shape)['steps'] == 6


def test_a_new_workdir_is_created_only_once_the_config_builds(tmp_path):
  bad = _cfg()
  bad['model'] = {**bad['model'], 'vocab_size': 100}  # found when the run is built
  with pytest.raises(config_lib.ConfigError, match='model.vocab_size'):
    _train(tmp_path / 'run', bad)
  assert not (tmp_path / 'run').exists()


_SCRIPT = '''
import json, sys, time
import jax
from lattice import sharding
from lattice.train import loop
assemble = sharding.global_batch
def slow(batch, mesh):  # a slow step, so the signal lands mid-run
  time.sleep(0.3)
  return assemble(batch, mesh)
sharding.global_batch = slow
out = loop.train_and_evaluate(json.loads(sys.argv[2]), sys.argv[1],
                              devices=jax.devices()[:1])
print('RESULT', json.dumps({'steps': out['steps'], 'preempted': out['preempted']}))
'''


def test_ctrl_c_saves_the_current_step_and_exits_without_a_traceback(tmp_path):
  cfg = tiny_config(train={'steps': 200, 'log_every': 1},
                    checkpoint={'every': 100, 'keep': 2})
  env = {**os.environ, 'PYTHONPATH': str(ROOT)}
  proc = subprocess.Popen([sys.executable, '-c', _SCRIPT, str(tmp_path), json.dumps(cfg)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env)
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 240
  while not (metrics.exists() and metrics.read_text().count('\n') >= 3):
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline, 'training never started'
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  t0 = time.time()
  stdout, stderr = proc.communicate(timeout=120)
  assert time.time() - t0 < 30, 'saving on Ctrl-C should take seconds'
  assert proc.returncode in (0, 130), stderr[-3000:]
  assert 'Traceback' not in stderr and 'KeyboardInterrupt' not in stderr, stderr[-3000:]
  saved = json.loads(stdout.split('RESULT ')[1])
  assert saved['preempted'] and 3 <= saved['steps'] < 100
  assert [l for l in stdout.splitlines() if 'SIGINT' in l] == [
      f'[lattice] SIGINT: saved step {saved["steps"]}; rerun the same command to resume']
  with checkpoint.Checkpointer(tmp_path / 'checkpoints',
                               config_lib.CheckpointConfig()) as c:
    assert c.latest_step() == saved['steps']  # the interrupted step, not step 0


def test_result_files_are_readable_by_others(tmp_path):
  old = os.umask(0o022)
  try:
    results.Result(experiment='e', paper={'title': 't', 'arxiv': '0000.00000'},
                   claim='c', mode='smoke', checks=[],
                   arms=[results.Arm('a', {}, stats.aggregate([{'loss': 1.0}]),
                                     params=1)],
                   headline={'paper': 'p', 'ours': 'o'},
                   env={'jax': '0', 'backend': 'cpu', 'device_count': 1,
                        'device_kind': 'cpu', 'git_commit': 'x'}).write(tmp_path)
  finally:
    os.umask(old)
  for name in (results.RESULT_FILE, results.TABLE_FILE):
    assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
