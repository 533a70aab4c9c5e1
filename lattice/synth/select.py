"""Train a teacher until a held-out score enters a target band, keeping that checkpoint.

A fixed step count is a fragile way to get an imperfect teacher: a skill such as
2-digit addition can appear abruptly (verified_synthetic measured held-out accuracy
0.496 after 1,600 steps and 0.917 after 1,650, issue #20), so which side of the
jump a run lands on depends on the machine and the code version. `train_to_band`
instead trains one run (one schedule over `train.steps`, the longest it may train)
in segments through the loop's resumable `stop_after`, scores each segment's model
on a selection set, and stops at the first score that reaches the band's lower
edge. It keeps, among the scores seen so far, the model closest to the band's
centre: the first in-band model when there is one, else the one just before the
jump when the jump overshoots the band by more than it undershot. A resumed run
equals an uninterrupted one (tests/faults_test.py), so the kept model is a
checkpoint of one ordinary training run.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lattice import config as config_lib
from lattice.synth import generate
from lattice.train import loop


def train_to_band(cfg: config_lib.Config, files: Sequence[str | Path] | None,
                  workdir: str | Path, score: Callable[[Any], float], *,
                  band: tuple[float, float], first: int, every: int,
                  val_fraction: float = 0.02, keep: int = 1) -> tuple[Any, list[dict]]:
  """Trains `cfg` on `files` (JSONL, field 'text'; None: on `cfg`'s own data) and
  keeps the checkpoint whose `score` (called with each segment's RunOutput; e.g.
  held-out accuracy, a fraction) is closest to the centre of `band`, stopping once a
  score >= band[0]. The last `keep` segments' checkpoints stay on disk (1: the last
  only; more when later runs restore an earlier segment's step).

  Segments end at steps first, first + every, ... up to cfg.train.steps (the
  schedule's length and the most steps trained). Returns (the kept run's RunOutput,
  as `loop.train_and_evaluate` returns it, its metrics plus 'selected_step',
  'selected_score' and 'wall_s' = the whole selection's wall time in seconds,
  training, compiles and scoring included; the history [{'step', 'score'}, ...] of
  every scored segment). A kept run stopped before cfg.train.steps has no final
  eval metrics (val_loss): score it on held-out data yourself.
  Raises ValueError for a band outside 0 <= lo <= hi or non-positive `first` /
  `every` / `keep`, and SystemExit if SIGTERM stopped training (as lm.train_on does).
  A selection is not resumable (the scores of earlier segments are not stored), so
  an existing `workdir` is deleted and the selection starts over.
  """
  lo, hi = band
  if not 0 <= lo <= hi:
    raise ValueError(f'train_to_band: band must satisfy 0 <= lo <= hi, got {band}')
  if first <= 0 or every <= 0 or keep <= 0:
    raise ValueError(f'train_to_band: first, every and keep must be positive, got '
                     f'{first}, {every}, {keep}')
  total = cfg.train.steps
  data = {} if files is None else generate.data_overrides(
      list(map(str, files)), val_fraction=val_fraction)
  cfg = config_lib.replace(cfg, **data, **{
      'checkpoint.enabled': True, 'checkpoint.every': total + 1,
      'checkpoint.keep': keep})
  centre = (lo + hi) / 2
  t0 = time.perf_counter()
  if Path(workdir).exists():
    print(f'[lattice] synth: {workdir} holds an earlier selection; starting over',
          flush=True)
    shutil.rmtree(workdir)
  history, kept, step = [], None, min(first, total)
  while True:
    out = loop.train_and_evaluate(cfg, workdir, stop_after=step if step < total else None)
    if out['preempted'] and out['steps'] != step:
      raise SystemExit(f'[lattice] synth: preempted while training {workdir}')
    s = float(score(out))
    history.append({'step': step, 'score': s})
    print(f'[lattice] synth: step {step} score {s:.3f}', flush=True)
    if kept is None or abs(s - centre) < abs(kept[1] - centre):
      kept = (out, s, step)
    if s >= lo or step >= total:
      break
    step = min(step + every, total)
  out, s, step = kept
  metrics = {**out.metrics, 'selected_step': step, 'selected_score': s,
             'wall_s': time.perf_counter() - t0}
  return dataclasses.replace(out, metrics=metrics), history
