"""`train.profile_steps=A:B`: a `jax.profiler` trace of steps A+1..B of a run.

The trace goes to `workdir/profile` (TensorBoard/XProf read it:
`tensorboard --logdir WORKDIR/profile`, Profile tab; the files are
`plugins/profile/<run>/<host>.xplane.pb`). Every process traces its own steps.
"""

from __future__ import annotations

import os

import jax

from lattice import config as config_lib

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

  def before_step(self, i: int) -> None:
    """Called before running step i + 1 (0-based loop index i)."""
    if self.window and not self.running and self.window[0] <= i < self.window[1]:
      jax.profiler.start_trace(self.log_dir)
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
