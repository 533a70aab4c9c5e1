"""The whole preemption story in a `gs://` bucket, against a local GCS emulator:
train -> SIGTERM mid-run (saves, exits the run) -> resume to the end (with a profiler
trace, copied into the bucket) -> corrupt the newest checkpoint object (same size)
-> resume again: the seal catches it, the step is moved aside with a warning, and
the run falls back to the previous checkpoint and ends exactly where the
uninterrupted resume ended. Smoke sizes.

The three runs are three `train_and_evaluate` calls in one training process, driven
line by line over stdin: each call builds its checkpointer, data iterator and jitted
steps afresh and finds its state only in the bucket, while JAX, gcsfs and the train
stack are imported once (each extra process cost ~10 s of imports and cached
compiles). The resume of a fresh process is tests/preemption_test.py's.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import fsspec
import pytest

pytest.importorskip('gcp_storage_emulator')
pytest.importorskip('gcsfs')

from etils import epath  # pylint: disable=g-import-not-at-top

from lattice.train import checkpoint  # pylint: disable=g-import-not-at-top
import gcs_emulator  # pylint: disable=g-import-not-at-top  # tests/ is on sys.path
from conftest import XLA_TEST_FLAGS, tiny_config  # pylint: disable=g-import-not-at-top

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 8, 3
WORKDIR = 'gs://lattice-test/sequence'

# One training process; each stdin line `[cfg, opts]` is one run. `slow` sleeps in
# each batch's assembly and counts the batches into a local file, so the test can
# SIGTERM the run at a known step. Each run marks its start on stderr.
_SCRIPT = '''
import json, os, sys, time
import jax
import gcs_emulator
gcs_emulator.no_retries_on_not_implemented()  # the emulator has no moveTo
from lattice import sharding
from lattice.train import loop
workdir, assemble = sys.argv[1], sharding.global_batch
for n, line in enumerate(iter(sys.stdin.readline, '')):
  cfg, opts = json.loads(line)
  sharding.global_batch = assemble
  if opts.get('slow'):
    count = [0]
    def slow(batch, mesh):
      time.sleep(opts['slow'])
      count[0] += 1
      with open(opts['marker'] + '.tmp', 'w') as f:  # replaced whole: never read half-written
        f.write(str(count[0]))
      os.replace(opts['marker'] + '.tmp', opts['marker'])
      return assemble(batch, mesh)
    sharding.global_batch = slow
  print(f'RUN {n}', file=sys.stderr, flush=True)
  out = loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
  print('RESULT', json.dumps({k: out.metrics.get(k) for k in ('steps', 'preempted',
                                                           'val_loss')}), flush=True)
'''


def _cfg(**train):
  return tiny_config(train={'steps': STEPS, 'log_every': 1, **train},
                     checkpoint={'every': EVERY, 'keep': 5})


class _Trainer:
  """The training process: `start(cfg)` begins a run, `finish()` waits for its
  RESULT and returns (result, its stdout, its stderr)."""

  def __init__(self, tmp_path):
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), str(ROOT / 'tests')]),
           'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': XLA_TEST_FLAGS}
    self.err_path = tmp_path / 'stderr.txt'
    self.runs = 0
    with open(self.err_path, 'w') as err:
      self.proc = subprocess.Popen([sys.executable, '-c', _SCRIPT, WORKDIR], cwd=ROOT,
                                   env=env, text=True, stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=err)
    self.watchdog = threading.Timer(600, self.proc.kill)  # a hang fails, not blocks
    self.watchdog.daemon = True
    self.watchdog.start()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.watchdog.cancel()
    if self.proc.poll() is None:   # a failed assertion left it running
      self.proc.kill()
      self.proc.wait()

  def start(self, cfg, **opts):
    self.proc.stdin.write(json.dumps([cfg, opts]) + '\n')
    self.proc.stdin.flush()
    self.runs += 1

  def finish(self) -> tuple[dict, str, str]:
    out = []
    while not (out and out[-1].startswith('RESULT ')):
      line = self.proc.stdout.readline()
      assert line, self.err_path.read_text()[-3000:]   # the process died
      out.append(line)
    err = self.err_path.read_text().split(f'RUN {self.runs - 1}\n')[-1]
    return json.loads(out[-1].split('RESULT ')[1]), ''.join(out), err

  def close(self):
    """Ends the process (stdin closed) and checks it exited cleanly."""
    self.proc.stdin.close()
    assert self.proc.wait(60) == 0, self.err_path.read_text()[-3000:]


def _ls(url: str) -> list[str]:
  """Names under `url` from a fresh listing (gcsfs caches listings, and other
  processes wrote since)."""
  fs = fsspec.core.url_to_fs(url)[0]
  fs.invalidate_cache()
  return [p.rstrip('/').rsplit('/', 1)[-1] for p in fs.ls(url)]


def _steps(ckpts: epath.Path) -> list[int]:
  return sorted(int(n) for n in _ls(str(ckpts)) if n.isdigit())


def test_train_sigterm_resume_corrupt_resume_in_a_bucket(tmp_path):
  marker = tmp_path / 'batches'
  with gcs_emulator.running(), _Trainer(tmp_path) as trainer:
    ckpts = epath.Path(WORKDIR) / 'checkpoints'

    # 1. Train; SIGTERM lands between two saves: the current step is saved, the run
    # returns (preempted).
    trainer.start(_cfg(), slow=0.4, marker=str(marker))
    deadline = time.time() + 300
    while not (marker.exists() and int(marker.read_text()) >= 4):
      assert trainer.proc.poll() is None, trainer.err_path.read_text()[-3000:]
      assert time.time() < deadline, 'never reached step 4'
      time.sleep(0.05)
    trainer.proc.send_signal(signal.SIGTERM)
    first, _, _ = trainer.finish()
    assert first['preempted'] and EVERY < first['steps'] < STEPS
    saved = first['steps']
    assert _steps(ckpts) == [EVERY, saved]
    assert checkpoint.verify(ckpts / str(saved)) is None

    # 2. The same config resumes and finishes; steps 6..7 are profiled into the bucket.
    trainer.start(_cfg(profile_steps=f'{saved + 1}:{saved + 2}'))
    second, out, _ = trainer.finish()
    assert f'resumed from step {saved} in {WORKDIR}' in out
    assert second['steps'] == STEPS and not second['preempted']
    assert _steps(ckpts) == sorted({EVERY, saved, 6, STEPS})
    fs = fsspec.core.url_to_fs(WORKDIR)[0]
    fs.invalidate_cache()
    traces = fs.glob(f'{WORKDIR}/profile/plugins/profile/*/*.xplane.pb')
    assert traces and fs.size(traces[0]) > 0

    # 3. Rewrite the newest checkpoint's largest array object, same size, one byte off.
    step_dir = ckpts / str(STEPS)
    files = json.loads((step_dir / checkpoint.MANIFEST).read_text())['files']
    victim = step_dir / max((n for n in files if n.startswith('state/')),
                            key=lambda n: files[n]['bytes'])
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    # 4. Resume again: step 8 is refused (named in a warning), the run falls back to
    # step 6, trains 7..8 again, and ends where the uninterrupted resume ended.
    trainer.start(_cfg())
    third, out, err = trainer.finish()
    trainer.close()
    assert f'resumed from step 6 in {WORKDIR}' in out
    assert f'step {STEPS} in {ckpts}' in err and 'does not match its crc32c' in err
    assert third['steps'] == STEPS
    assert str(STEPS) in _ls(f'{WORKDIR}/checkpoints/corrupt')   # moved aside, kept
    assert third['val_loss'] == pytest.approx(second['val_loss'], rel=1e-6)
    assert checkpoint.verify(ckpts / str(STEPS)) is None    # saved afresh, sealed
