"""Where a result's numbers came from: the code an experiment workdir was trained
with, and how busy the machine was while it ran.

Two rules of issue #20 ("honest measurement") live here:

- **A result never mixes code versions.** An experiment's arms resume from their
  workdir (`lattice.run.arms`), so rerunning an experiment after a code change would
  reuse arms trained by the old code next to new ones. `bind_workdir` stamps the
  workdir with the commit that first ran in it (`provenance.json`) and refuses a
  different commit with one line that says what to do. A tree with uncommitted
  changes has the commit `<sha>-dirty`; two dirty trees at the same sha cannot be
  told apart, which is one more reason measured runs come from a clean clone.
- **Wall-clock figures need an idle machine.** `mark_start` takes the load average
  (and the commit) when the experiment starts; `env_fields` adds them, the load
  average at the end and the core count to the result's `env`; `busy` turns them into the warning
  `table.md` prints when the machine was busy with other work.
"""

from __future__ import annotations

import json
import os
from typing import Any

from lattice import config as config_lib
from lattice import storage

PROVENANCE_FILE = 'provenance.json'

# What `mark_start` saw when the experiment started: its load average and commit.
_start: dict[str, Any] = {}


def load_average() -> list[float] | None:
  """The 1-, 5- and 15-minute load averages (runnable processes, `os.getloadavg`),
  rounded to 0.01; None where the platform has none."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except (AttributeError, OSError):
    return None


def mark_start(commit: str | None = None) -> None:
  """Remembers the load average now and the code's `commit`, as the experiment's
  start (`env_fields`)."""
  _start.clear()
  _start.update(load=load_average(), commit=commit)


def forget_start() -> None:
  """Drops what `mark_start` saw (the experiment ended; the next result in this
  process, e.g. in a test session, must not inherit it)."""
  _start.clear()


def env_fields(commit_now: str | None) -> dict[str, Any]:
  """A result's provenance fields, given the commit of the tree as it is written:
  'git_commit' (the commit `mark_start` saw, else `commit_now`), 'git_commit_end'
  (only when the tree moved to another commit during the run), and
  'load_average_start' / 'load_average_end' ([1, 5, 15 min] or None) and
  'cpu_count'. Without `mark_start` in this process (e.g. an experiment's `run`
  called directly by a test) the start fields are unknown."""
  start = _start.get('commit') or commit_now
  moved = {'git_commit_end': commit_now} if commit_now != start else {}
  return {'git_commit': start, **moved, 'load_average_start': _start.get('load'),
          'load_average_end': load_average(), 'cpu_count': os.cpu_count() or 0}


def busy(env: dict[str, Any]) -> str | None:
  """The warning for a result whose machine was busy, else None (also for results
  written before these fields existed).

  Busy means a 1-minute load average above the core count + 1 at the start or the
  end. A run keeps about one process per core runnable itself, and the 1-minute
  average still holds the previous run's load when runs follow each other (idle,
  back-to-back quick modes on 2 cores read 1.5-2.5 at both ends), so only more
  than one further runnable process shows other work.
  """
  cores = env.get('cpu_count') or 0
  loads = [(when, env.get(f'load_average_{when}')) for when in ('start', 'end')]
  loads = [(when, x[0]) for when, x in loads if x]
  if not cores or not loads or max(x for _, x in loads) <= cores + 1:
    return None
  seen = ' and '.join(f'{x:.2f} at the {when}' for when, x in loads)
  return (f'1-minute load average {seen}, above {cores + 1} on {cores} cores: '
          'wall-clock figures (wall s, tokens/s, MFU) are not measurements')


def bind_workdir(workdir: str | os.PathLike[str], commit: str | None, *,
                 write: bool = True) -> None:
  """Stamps `workdir` with the code commit that runs in it, or checks the stamp.

  The first run writes `workdir/provenance.json` ({"git_commit": commit}); a later
  run with another commit raises ConfigError, because its result would mix arms
  trained by both. Nothing is checked when either commit is unknown (None: not a
  git checkout). Every process checks; only those given `write` (process 0) write.
  """
  if commit is None:
    return
  path = storage.path(workdir) / PROVENANCE_FILE
  if path.exists():
    bound = json.loads(path.read_text()).get('git_commit')
    if bound is not None and bound != commit:
      raise config_lib.ConfigError(
          f'--workdir: {workdir} holds arms trained at commit {bound}, this code is '
          f'commit {commit}; a result never mixes code versions: use a fresh '
          f'--workdir (or delete {path} to resume them anyway)')
    return
  if write:
    storage.write_atomic(path, json.dumps({'git_commit': commit}) + '\n')
