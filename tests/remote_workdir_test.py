"""`--workdir=gs://...` end to end, against a local GCS emulator (127.0.0.1 only).

The issue's command, run twice as a user runs it: the first trains, checkpoints and
writes result.json/table.md/metrics.jsonl/config.json into the bucket; the second
resumes from the last checkpoint, trains nothing, and finishes. Then one checkpoint
object is rewritten and its seal (the store's crc32c checksums) must catch it.
Nothing may land in a local `gs:` folder (what pathlib made of the URL before).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip('gcp_storage_emulator')
pytest.importorskip('gcsfs')

from etils import epath  # pylint: disable=g-import-not-at-top

from lattice import storage  # pylint: disable=g-import-not-at-top
from lattice.train import checkpoint  # pylint: disable=g-import-not-at-top
import gcs_emulator  # pylint: disable=g-import-not-at-top  # tests/ is on sys.path
from conftest import XLA_TEST_FLAGS  # pylint: disable=g-import-not-at-top

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_storage_append_and_atomic_write_on_gcs():
  with gcs_emulator.running():
    p = epath.Path('gs://lattice-test/unit/rows.jsonl')
    storage.append_text(p, 'a\n')
    storage.append_text(p, 'b\n')  # gcsfs alone would overwrite: no append on GCS
    assert p.read_text() == 'a\nb\n'
    storage.write_atomic('gs://lattice-test/unit/deep/x.json', '{}')
    assert epath.Path('gs://lattice-test/unit/deep/x.json').read_text() == '{}'
    assert storage.is_remote(p) and not storage.is_remote('/tmp/x')


def _lattice(*args: str) -> str:
  """`python -m lattice.main ARGS` as a user runs it (one CPU device); its stdout."""
  env = {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': XLA_TEST_FLAGS}
  proc = subprocess.run([sys.executable, '-m', 'lattice.main', *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_smoke_run_trains_and_resumes_in_a_gcs_bucket():
  args = ['--config=experiments/baseline_lm.py:smoke', '--workdir=gs://lattice-test/run1']
  with gcs_emulator.running():
    first = _lattice(*args)
    run = epath.Path('gs://lattice-test/run1')
    result = json.loads((run / 'result.json').read_text())
    assert result['experiment'] == 'baseline_lm' and result['mode'] == 'smoke'
    assert (run / 'table.md').exists()
    seed = run / 'baseline' / 'seed_0'
    assert (seed / 'config.json').exists()
    steps = [json.loads(l)['step'] for l in (seed / 'metrics.jsonl').read_text()
             .splitlines() if l.strip() and 'loss' in json.loads(l)]
    assert steps and steps[-1] == 12
    assert sorted(int(p.name) for p in (seed / 'checkpoints').iterdir()
                  if p.name.isdigit())[-1] == 12
    assert 'resumed' not in first

    second = _lattice(*args)  # the identical command: resumes at the end, trains nothing
    assert 'resumed from step 12 in gs://lattice-test/run1/baseline/seed_0' in second
    assert 'wrote gs://lattice-test/run1/result.json' in second
    rows = [json.loads(l) for l in (seed / 'metrics.jsonl').read_text().splitlines()
            if l.strip()]
    train_steps = [r['step'] for r in rows if 'loss' in r]
    assert train_steps == sorted(set(train_steps))  # no step logged twice

    # The seal holds the store's own checksums (one listing, no bytes re-read), and
    # a checkpoint object rewritten afterwards, even at the same size, fails it.
    step_dir = seed / 'checkpoints' / '12'
    manifest = json.loads((step_dir / checkpoint.MANIFEST).read_text())['files']
    assert manifest and all('crc32c' in v and 'sha256' not in v
                            for v in manifest.values())
    assert checkpoint.verify(step_dir) is None
    victim = next(step_dir / n for n in sorted(manifest) if n.startswith('state/')
                  and manifest[n]['bytes'] > 0)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert 'does not match its crc32c' in checkpoint.verify(step_dir)
  assert not os.path.exists(os.path.join(ROOT, 'gs:'))


def test_report_of_a_bucket(tmp_path):
  from lattice import report  # pylint: disable=g-import-not-at-top
  from report_test import write_result  # pylint: disable=g-import-not-at-top
  with gcs_emulator.running():
    runs = epath.Path('gs://lattice-test/runs')
    write_result(runs / 'moe', 'moe_lossfree', passed=False, mode='smoke')
    assert (runs / 'moe' / 'loss.png').read_bytes().startswith(b'\x89PNG')
    out = report.write(runs)
    assert str(out) == 'gs://lattice-test/runs/REPRODUCTIONS.md'
    text = out.read_text()
    assert '1 results from `gs://lattice-test/runs`' in text
    assert '[moe](moe/table.md)' in text and '(moe/loss.png)' in text
