"""Preemption: a signal becomes a flag, and all processes agree on the step to stop.

`Signals` turns SIGTERM and Ctrl-C (SIGINT) into a flag the loop polls, so it can
save the current step and exit cleanly; a second Ctrl-C interrupts at once.

`Agreement.stop(step)` says whether to stop after `step`. With one process it is
the local flag. With several (`jax.distributed`), a host that sees SIGTERM at some
step must not stop alone: the others would wait forever in the next step's
collectives (or save a different step). So every process decides from the same
information, through the coordination service's key-value store (the same service
Orbax's own preemption sync uses; host-side only, no device sync):

  1. a process whose flag is up publishes `<session>/<process> = step` once,
     before the step-`step` barrier;
  2. every process waits at the step-`step` barrier;
  3. every process stops iff some published value is <= `step`.

A value published before barrier `s` is visible to all after it, so all see it at
`s`; one published later carries a larger step, which a slower process still at
`s` ignores. Hence all processes stop after the same step. The cost is one
barrier round trip to the coordinator per step (a few ms on a pod's host network).
"""

from __future__ import annotations

import itertools
import signal
import threading
from typing import Any

import jax

_sessions = itertools.count()  # run_steps calls in this process (keys stay fresh)
_BARRIER_MS = 10 * 60 * 1000  # a host slower than this by a whole step is lost


class Signals:
  """SIGTERM / SIGINT -> `requested` (and `name`), while the context is open."""

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.requested = False
    self.name = ''  # the signal's name once one arrived
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> Signals:
    if threading.current_thread() is threading.main_thread():
      for sig in self.SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.requested and signum == signal.SIGINT:
      signal.default_int_handler(signum, frame)  # second Ctrl-C: stop now
    self.requested = True
    self.name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)


def _client():
  """The jax.distributed coordination client (None in a one-process run)."""
  # Private, as in orbax.checkpoint's multihost.get_jax_distributed_client.
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return distributed.global_state.client


class Agreement:
  """Whether all processes stop after a step; see the module docstring."""

  def __init__(self, signals: Signals):
    self.signals = signals
    self.multi = jax.process_count() > 1
    self._published = False
    self._client = _client() if self.multi else None
    # Every process makes the same number of run_steps calls, so the same session.
    self._prefix = f'lattice_preemption/{next(_sessions)}'
    self.stopped_by = ''  # who asked, once the processes agreed to stop

  def stop(self, step: int) -> bool:
    """True on every process, after the same `step`, once any process was signalled."""
    if not self.multi:
      if self.signals.requested:
        self.stopped_by = self.signals.name
      return self.signals.requested
    if self.signals.requested and not self._published:
      self._client.key_value_set(f'{self._prefix}/{jax.process_index()}',
                                 f'{step} {self.signals.name}')
      self._published = True
    self._client.wait_at_barrier(f'{self._prefix}/step_{step}', _BARRIER_MS)
    asked = []
    for key, value in self._client.key_value_dir_get(f'{self._prefix}/'):
      at, name = value.split(' ', 1)
      if int(at) <= step:
        asked.append(f'{name} on process {key.rsplit("/", 1)[-1]}')
    if asked:
      self.stopped_by = ', '.join(sorted(asked))
    return bool(asked)
