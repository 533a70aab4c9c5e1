"""The whole preemption story in a `gs://` bucket, against a local GCS emulator:
train -> SIGTERM mid-run (saves, exits 0) -> resume to the end (with a profiler
trace, copied into the bucket) -> corrupt the newest checkpoint object (same size)
-> resume again: the seal catches it, the step is moved aside with a warning, and
the run falls back to the previous checkpoint and ends exactly where the
uninterrupted resume ended. One test, three training processes, smoke sizes.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import fsspec
import pytest

pytest.importorskip('gcp_storage_emulator')
pytest.importorskip('gcsfs')

from etils import epath  # pylint: disable=g-import-not-at-top

from lattice.train import checkpoint  # pylint: disable=g-import-not-at-top
import gcs_emulator  # pylint: disable=g-import-not-at-top  # tests/ is on sys.path
from conftest import tiny_config  # pylint: disable=g-import-not-at-top

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS, EVERY = 8, 3
WORKDIR = 'gs://lattice-test/sequence'

# One training process. `slow` sleeps in each batch's assembly and counts the
# batches into a local file, so the test can SIGTERM it at a known step.
_SCRIPT = '''
import json, sys, time
import jax
from lattice import sharding
from lattice.train import loop
workdir, cfg, opts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
if opts.get('slow'):
  assemble, count = sharding.global_batch, [0]
  def slow(batch, mesh):
    time.sleep(opts['slow'])
    count[0] += 1
    open(opts['marker'], 'w').write(str(count[0]))
    return assemble(batch, mesh)
  sharding.global_batch = slow
out = loop.train_and_evaluate(cfg, workdir, devices=jax.devices()[:1])
print('RESULT', json.dumps({k: out.metrics.get(k) for k in ('steps', 'preempted',
                                                         'val_loss')}), flush=True)
'''


def _cfg(**train):
  return tiny_config(train={'steps': STEPS, 'log_every': 1, **train},
                     checkpoint={'every': EVERY, 'keep': 5})


def _spawn(tmp_path, cfg, **opts):
  env = {**os.environ, 'PYTHONPATH': str(ROOT), 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': '',
         'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'xla'),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  return subprocess.Popen([sys.executable, '-c', _SCRIPT, WORKDIR, json.dumps(cfg),
                           json.dumps(opts)], cwd=ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc, timeout=600) -> tuple[dict, str, str]:
  out, err = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, err[-3000:]
  return json.loads(out.split('RESULT ')[1]), out, err


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
  with gcs_emulator.running():
    ckpts = epath.Path(WORKDIR) / 'checkpoints'

    # 1. Train; SIGTERM lands between two saves: the current step is saved, exit 0.
    proc = _spawn(tmp_path, _cfg(), slow=0.4, marker=str(marker))
    deadline = time.time() + 300
    while not (marker.exists() and marker.read_text() and int(marker.read_text()) >= 4):
      assert proc.poll() is None, proc.communicate()
      assert time.time() < deadline, 'never reached step 4'
      time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    first, _, _ = _finish(proc)
    assert first['preempted'] and EVERY < first['steps'] < STEPS
    saved = first['steps']
    assert _steps(ckpts) == [EVERY, saved]
    assert checkpoint.verify(ckpts / str(saved)) is None

    # 2. The same command resumes and finishes; steps 6..7 are profiled into the bucket.
    second, out, _ = _finish(_spawn(tmp_path, _cfg(profile_steps=f'{saved + 1}:{saved + 2}')))
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
    third, out, err = _finish(_spawn(tmp_path, _cfg()))
    assert f'resumed from step 6 in {WORKDIR}' in out
    assert f'step {STEPS} in {ckpts}' in err and 'does not match its crc32c' in err
    assert third['steps'] == STEPS
    assert str(STEPS) in _ls(f'{WORKDIR}/checkpoints/corrupt')   # moved aside, kept
    assert third['val_loss'] == pytest.approx(second['val_loss'], rel=1e-6)
    assert checkpoint.verify(ckpts / str(STEPS)) is None    # saved afresh, sealed
