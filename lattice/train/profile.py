"""`train.profile_steps=A:B`: a `jax.profiler` trace of steps A+1..B of a run.

The trace goes to `workdir/profile` (TensorBoard/XProf read it:
`tensorboard --logdir WORKDIR/profile`, Profile tab; the files are
`plugins/profile/<run>/<host>.xplane.pb`). Every process traces its own steps.

On a bucket workdir (`gs://...`) the trace is written to a local temporary folder
and copied into `workdir/profile` through etils.epath when it stops: jax's own
writer goes to GCS through the TSL filesystem, which ignores the credentials and
emulator settings the rest of lattice uses (against a local emulator it tried
www.googleapis.com and the run died in `stop_trace`).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import jax

from lattice import config as config_lib
from lattice import storage

PROFILE_DIR = 'profile'


class ProfileWindow:
  """Starts the trace before step A+1 and stops it once step B has finished.

  A run resumed inside the window traces from its first step; one resumed past B
  traces nothing. `close()` stops a trace still running (a preempted run).
  """

  def __init__(self, train: config_lib.TrainConfig, log_dir: str | os.PathLike | None):
    window = config_lib.profile_range(train)
    self.window = window if log_dir is not None else None
    self.log_dir = str(log_dir) if log_dir is not None else ''
    self.running = False
    self._local = ''   # the local folder a remote log_dir's trace is written to

  def before_step(self, i: int) -> None:
    """Called before running step i + 1 (0-based loop index i)."""
    if self.window and not self.running and self.window[0] <= i < self.window[1]:
      target = self.log_dir
      if storage.is_remote(self.log_dir):
        self._local = target = tempfile.mkdtemp(prefix='lattice-profile-')
      jax.profiler.start_trace(target)
      self.running = True
      print(f'[lattice] profiling steps {i + 1}..{self.window[1]} into {self.log_dir}',
            flush=True)

  def after_step(self, step: int, outputs) -> None:
    """Called after dispatching step `step` (1-based) with its outputs."""
    if self.running and step >= self.window[1]:
      jax.block_until_ready(outputs)  # the trace holds the device work of step B
      self.close()

  def close(self) -> None:
    if self.running:
      jax.profiler.stop_trace()
      self.running = False
      if self._local:
        upload(self._local, self.log_dir)
        shutil.rmtree(self._local, ignore_errors=True)
        self._local = ''


def upload(local_dir: str, remote_dir: str) -> list[str]:
  """Copies every file under `local_dir` to the same relative path under
  `remote_dir` (any etils.epath location); returns the relative paths copied."""
  copied = []
  for root, _, names in os.walk(local_dir):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), local_dir)
      dst = storage.path(remote_dir) / rel
      dst.parent.mkdir(parents=True, exist_ok=True)
      with open(os.path.join(root, name), 'rb') as f:
        dst.write_bytes(f.read())
      copied.append(rel)
  return copied
