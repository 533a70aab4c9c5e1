"""Checkpoint seals on a local folder: the sha256 work is split over the processes
(each hashes 1/n of the files), and a same-size corrupted file is still caught by
whichever process's share holds it."""

import json

import numpy as np
import pytest

from lattice import config as config_lib
from lattice.train import checkpoint, seal


def _step(tmp_path):
  """A committed, sealed step of a small state (state/ files and the seal)."""
  state = {'w': np.arange(4096, dtype=np.float32), 'b': np.ones(64, np.float32),
           'step': np.int32(1)}
  cfg = config_lib.CheckpointConfig(every=1, keep=2, async_save=False)
  with checkpoint.Checkpointer(tmp_path / 'ckpt', cfg) as c:
    c.save(1, state)
  return tmp_path / 'ckpt' / '1', state


@pytest.fixture
def hashed(monkeypatch):
  """Names of the files whose bytes were hashed, in order."""
  names = []
  real = seal.sha256

  def count(path):
    names.append(path.name)
    return real(path)
  monkeypatch.setattr(seal, 'sha256', count)
  return names


def test_parts_split_the_hashing_and_merge_into_the_same_seal(tmp_path, hashed):
  step, _ = _step(tmp_path)
  whole = json.loads((step / seal.MANIFEST).read_text())
  assert whole['hashed_by'] == 1          # one process: it hashed every file itself
  names = sorted(whole['files'])
  assert len(names) >= 2
  hashed.clear()
  for i in range(2):                       # two processes, each its share
    seal.write_part(step, i, 2)
  assert sorted(hashed) == sorted(n.rsplit('/', 1)[-1] for n in names)
  assert len(hashed) == len(names)         # every file hashed once, not once per process
  hashed.clear()
  merged = seal.write_manifest(step)
  assert hashed == []                      # process 0 merged; it read no file's bytes
  assert merged['files'] == whole['files'] and merged['hashed_by'] == 2
  assert not list(step.glob('lattice_manifest.part-*'))   # parts removed


def test_a_same_size_corruption_is_caught_by_the_share_holding_it(tmp_path, hashed):
  step, state = _step(tmp_path)
  names = sorted(json.loads((step / seal.MANIFEST).read_text())['files'])
  victim = max(names, key=lambda n: (step / n).stat().st_size)   # an array's bytes
  data = bytearray((step / victim).read_bytes())
  data[len(data) // 2] ^= 0xFF
  (step / victim).write_bytes(bytes(data))
  owner = [i for i in range(2) if victim in seal.share(names, i, 2)]
  assert len(owner) == 1
  hashed.clear()
  verdicts = [seal.verify(step, i, 2) for i in range(2)]
  assert 'does not match its sha256' in verdicts[owner[0]]
  assert verdicts[1 - owner[0]] is None    # the other share is intact (sizes all fine)
  assert len(hashed) <= len(names)         # both shares together read the step at most once
  assert 'does not match its sha256' in seal.verify(step)
  # The Checkpointer refuses it and resumes from nothing rather than load garbage.
  cfg = config_lib.CheckpointConfig(every=1, keep=2)
  with checkpoint.Checkpointer(tmp_path / 'ckpt', cfg) as c:
    assert c.resume(state) is None
  assert (tmp_path / 'ckpt' / 'corrupt' / '1').is_dir()
