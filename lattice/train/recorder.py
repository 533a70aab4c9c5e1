"""What a training run records, for one seed or S seeds stacked in one step.

`Recorder` keeps the bookkeeping both trainers share (`loop.train_and_evaluate`,
S = 1, and `vmap_seeds.train_seeds`): tokens seen, steady-state tokens/s (the first
step of a process, which compiles, is not timed), the mean of the last 50 losses,
metrics.jsonl rows (`MetricsWriter`), the eval history, a progress bar, the
non-finite policy, and the final metrics each seed returns in a `RunOutput`.

Per seed of a stacked run, `tokens_per_s` counts the tokens that seed trained per
second of the shared step and `wall_s` is the shared wall time divided by S (so
summing over seeds gives the time actually spent); `mfu` is the whole step's
(S x tokens_per_s x FLOPs/token / peak). With S = 1 these are the one-seed values.

Seeing the run (metrics.jsonl rows and final metrics):
- `step_s`: wall seconds per step (the compiling first step of a process, evals
  and checkpoint saves excluded); `data_wait_s`: the part the host spent fetching
  and placing the batch (the device runs the previous step meanwhile, so it stalls
  the device only when it exceeds the compute); `compute_s` = step_s - data_wait_s.
  Rows average the steps since the previous row, final metrics the whole session.
- `mfu`: against the chips' published dense bf16 peak (`lattice.chips`, times the
  device count) where the chip is listed, else against the timed matmul;
  `mfu_measured`: always against the timed matmul (`matmul_peak_flops`), the
  second column, and the only one on a CPU. `spec_peak_flops` is 0 when no chip
  peak is known.
- `goodput`: productive step time (the step_s of every step that trained; not
  compilation, startup, evals, checkpoint saves, or steps lost to a restart) over
  the wall time of every session of the run, restarts included. Earlier sessions
  are counted to their last metrics row (`run_wall_s`, `productive_s`), so time a
  killed session spent after its last row is missed.

Shape legend: S seeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import numpy as np

from lattice import storage

CONFIG_FILE = 'config.json'
METRICS_FILE = 'metrics.jsonl'
FINAL_FILE = 'final_metrics.json'


class NonFiniteError(RuntimeError):
  """Raised when a step's loss or gradient is NaN/Inf and train.nonfinite='stop'."""


def save_config(workdir: str | os.PathLike, cfg) -> None:
  """Writes `workdir/config.json` (local or gs://): the typed, resolved Config."""
  storage.write_atomic(storage.path(workdir) / CONFIG_FILE,
                       json.dumps(dataclasses.asdict(cfg), indent=1))


@dataclasses.dataclass
class RunOutput:
  """One seed's trained run: its final `metrics` (val_loss, val_bpb, train_loss,
  params, active_params, flops_per_token, train_flops, tokens, tokens_per_s, mfu,
  wall_s, steps, preempted, history, ...), its final TrainState `state`, and the
  `setup` (lattice.train.loop.Setup) that built it.

  `out[key]` reads a metric (or 'state'/'setup') as the dict returned before did;
  new code reads `out.metrics[key]`.
  """
  metrics: dict[str, Any]
  state: Any
  setup: Any

  def __getitem__(self, key: str) -> Any:
    if key in ('state', 'setup'):
      return getattr(self, key)
    return self.metrics[key]

  def get(self, key: str, default: Any = None) -> Any:
    return self[key] if key in ('state', 'setup') else self.metrics.get(key, default)


class MetricsWriter:
  """metrics.jsonl on process 0 (and TensorBoard when asked and installed).

  Locally each row is appended at once. An object store (gs://) has no append, so
  there the rows are kept and the object is rewritten whole at most every
  `REMOTE_FLUSH_S` seconds and at `flush()` (evals, the end of a run): a run killed
  without warning loses at most that many seconds of rows, which its resume trains
  again anyway.
  """

  REMOTE_FLUSH_S = 30.0

  def __init__(self, workdir: str | os.PathLike, tensorboard: bool):
    self.path = storage.path(workdir) / METRICS_FILE
    self.enabled = jax.process_index() == 0
    self.remote = storage.is_remote(self.path)
    self._unwritten: list[str] = []  # remote: rows not yet in the object
    self._flushed_at = time.monotonic()
    self.tb = None
    if tensorboard and self.enabled:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self.tb = SummaryWriter(str(storage.path(workdir) / 'tb'))
      except ImportError:
        print('[lattice] train.tensorboard=True but tensorboardX is not installed; '
              'writing metrics.jsonl only')

  def _lines(self) -> list[str]:
    stored = self.path.read_text().splitlines() if self.path.exists() else []
    return [l for l in stored + self._unwritten if l.strip()]

  def rows(self) -> list[dict[str, Any]]:
    return [json.loads(l) for l in self._lines()]

  def flush(self) -> None:
    """Remote: writes the rows kept so far into the object. Local: nothing to do."""
    if self._unwritten:
      storage.append_text(self.path, ''.join(l + '\n' for l in self._unwritten))
      self._unwritten.clear()
    self._flushed_at = time.monotonic()

  def truncate_after(self, step: int) -> None:
    """Drops the rows past `step` (the restored checkpoint's): those steps run again,
    and would otherwise appear twice."""
    if not self.enabled or not self.path.exists():
      return
    self.flush()
    rows = self.rows()
    kept = [r for r in rows if r.get('step', 0) <= step]
    if len(kept) != len(rows):
      storage.write_atomic(self.path, ''.join(json.dumps(r) + '\n' for r in kept))

  def eval_history(self) -> list[dict[str, float]]:
    """The eval points already logged ({'step', val_loss, ...}), in step order: a
    resumed run's history starts from them instead of from nothing."""
    evals = {r['step']: {k: v for k, v in r.items() if k != 'wall_s'}
             for r in self.rows() if 'val_loss' in r}
    return [evals[k] for k in sorted(evals)]

  def previous_wall_s(self) -> float:
    """Wall time a resumed run had already spent (its last logged `wall_s`)."""
    return max((r.get('wall_s', 0.0) for r in self.rows()), default=0.0)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    line = json.dumps({'step': step, **metrics})
    if self.remote:
      self._unwritten.append(line)
      if time.monotonic() - self._flushed_at >= self.REMOTE_FLUSH_S:
        self.flush()
    else:
      storage.append_text(self.path, line + '\n')
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(k, v, step)


# Seconds between progress-bar redraws when stderr is a file or pipe (a log): a
# redraw per step wrote ~220 KB over the 1200-step quickstart.
LOG_REDRAW_S = 30.0


def progress_bar(total: int, initial: int, enabled: bool, file=None):
  """A tqdm bar on process 0 when `enabled`, else None. On a terminal it redraws
  at most every 0.1 s; into a file or pipe (`file`, default stderr, not a TTY) at
  most every LOG_REDRAW_S seconds, so a log holds a line per ~30 s, not per step."""
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  file = sys.stderr if file is None else file
  interactive = hasattr(file, 'isatty') and file.isatty()
  return tqdm(total=total, initial=initial, dynamic_ncols=True, desc='train', file=file,
              mininterval=0.1 if interactive else LOG_REDRAW_S)


def advance_bar(bar, loss: float, tokens_per_s: float | None) -> None:
  """One step on `bar` showing the loss and tokens/s; redraws only as often as the
  bar's mininterval allows (set_postfix with refresh=True would redraw every step)."""
  bar.set_postfix(loss=f'{loss:.3f}',
                  tok_s=f'{tokens_per_s:.0f}' if tokens_per_s else '-', refresh=False)
  bar.update(1)


def previous_final(workdir: str | os.PathLike, trained: bool, tokens_per_s: float,
                   train_loss: float) -> tuple[float, float]:
  """When nothing trained in this session (the run had finished), the training
  session's tokens/s and train loss from final_metrics.json, not an empty one's."""
  previous = storage.path(workdir) / FINAL_FILE
  if not trained and previous.exists():
    before = json.loads(previous.read_text())
    return (before.get('tokens_per_s', tokens_per_s),
            before.get('train_loss', train_loss))
  return tokens_per_s, train_loss


def previous_peak(workdir: str | os.PathLike, trained: bool, peak: float) -> float:
  """When nothing trained in this session, the matmul peak the training session's
  MFU was computed with (a fresh measurement would change a finished run's MFU)."""
  previous = storage.path(workdir) / FINAL_FILE
  if not trained and previous.exists():
    return json.loads(previous.read_text()).get('matmul_peak_flops', peak)
  return peak


def previous_split(workdir: str | os.PathLike, trained: bool, split: dict[str, float]
                   ) -> dict[str, float]:
  """When nothing trained in this session, the training session's step_s,
  data_wait_s and compute_s from final_metrics.json."""
  previous = storage.path(workdir) / FINAL_FILE
  if not trained and previous.exists():
    before = json.loads(previous.read_text())
    return {k: before.get(k, v) for k, v in split.items()}
  return split


class Recorder:
  """Bookkeeping of one run of S stacked seeds (S = 1: a plain run).

  Args:
    cfg: the resolved Config (train.steps, log_every, nonfinite, progress; data
      batch_size and seq_len).
    seeds: the S seeds; `seed_dirs` their folders (metrics.jsonl, final_metrics.json).
    flops_per_token: train FLOPs per token of one seed's model.
    peak: the device's matmul peak, FLOP/s (for MFU).
    start_step: the step the run resumes from (0 when fresh).
    stacked: whether metrics carry a leading seed axis (the non-finite message then
      names seeds rather than the loss and gradient norm).
  """

  def __init__(self, cfg, seeds: list[int], seed_dirs: list[str | os.PathLike], *,
               flops_per_token: float, peak: float, start_step: int, t_start: float,
               stacked: bool, spec_peak: float = 0.0):
    self.cfg, self.seeds, self.seed_dirs = cfg, list(seeds), [
        storage.path(d) for d in seed_dirs]
    self.n, self.stacked = len(self.seeds), stacked
    self.flops_per_token, self.peak, self.spec_peak = flops_per_token, peak, spec_peak
    self.writers = [MetricsWriter(d, cfg.train.tensorboard) for d in self.seed_dirs]
    # Goodput over every session: earlier sessions' wall time counts whole (rows
    # about to be dropped included); their productive time only up to the restored
    # step (the steps past it are lost and run again).
    rows = self.writers[0].rows()
    self.t_session = t_start
    self.prior_run_wall = max((r.get('run_wall_s', r.get('wall_s', 0.0)) for r in rows),
                              default=0.0)
    for w in self.writers:  # steps past the restored one run again: no duplicates
      w.truncate_after(start_step)
    self.prior_productive = max((r.get('productive_s', 0.0) for r in rows
                                 if r.get('step', 0) <= start_step), default=0.0)
    self.timed_data_s, self.timed_steps = 0.0, 0
    self.window = [0.0, 0.0, 0]  # step seconds, data seconds, steps since the last row
    # wall_s counts every session of a resumed run.
    self.t_start = t_start - self.n * self.writers[0].previous_wall_s()
    self.tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    self.tokens_seen = start_step * self.tokens_per_step
    self.timed_tokens, self.timed_s = 0, 0.0
    self.recent: list[np.ndarray] = []
    # A resumed run's eval history starts from the points it already logged.
    self.histories = [w.eval_history() for w in self.writers]
    self.bar = progress_bar(cfg.train.steps, start_step, cfg.train.progress)

  def wall_s(self) -> float:
    return (time.perf_counter() - self.t_start) / self.n

  def tokens_per_s(self) -> float:
    return self.timed_tokens / self.timed_s if self.timed_s else 0.0

  def goodput(self) -> float:
    """Productive step seconds over wall seconds, every session counted."""
    wall = self.prior_run_wall + time.perf_counter() - self.t_session
    return (self.prior_productive + self.timed_s) / wall if wall > 0 else 0.0

  def mfus(self, tokens_per_s: float, matmul_peak: float) -> dict[str, float]:
    """mfu (the chip's published peak when known, else the timed matmul's) and
    mfu_measured (the timed matmul's) of the whole step's throughput."""
    achieved = self.n * tokens_per_s * self.flops_per_token
    measured = achieved / matmul_peak
    return {'mfu': achieved / self.spec_peak if self.spec_peak else measured,
            'mfu_measured': measured}

  @staticmethod
  def step_split(step_s: float, data_s: float, steps: int) -> dict[str, float]:
    """Mean step_s, data_wait_s and compute_s over `steps` timed steps (0 if none)."""
    if not steps:
      return {'step_s': 0.0, 'data_wait_s': 0.0, 'compute_s': 0.0}
    return {'step_s': step_s / steps, 'data_wait_s': data_s / steps,
            'compute_s': (step_s - data_s) / steps}

  def _check_finite(self, step: int, m_S: dict[str, np.ndarray]) -> None:
    bad = [s for s, ok in zip(self.seeds, m_S['finite']) if not ok]
    if not bad:
      return
    if self.stacked:
      msg = f'non-finite loss or gradient at step {step} for seeds {bad}'
    else:
      m = {k: float(v[0]) for k, v in m_S.items()}
      names = [k for k in ('loss', 'grad_norm') if not np.isfinite(m[k])]
      msg = (f'non-finite {", ".join(names) or "value"} at step {step} '
             f'(loss={m["loss"]}, grad_norm={m["grad_norm"]})')
    if self.cfg.train.nonfinite == 'stop':
      raise NonFiniteError(msg + '; the state was not updated and no checkpoint of '
                           'it is written. Set train.nonfinite=skip to skip such steps.')
    print(f'[lattice] skipped step: {msg}')

  def on_step(self, step: int, device_metrics: dict, seconds: float, first: bool,
              data_s: float = 0.0):
    """One step's metrics (device arrays, [S] when stacked, else scalars); `seconds`
    its wall time, `data_s` the part spent fetching its batch."""
    m_S = {k: np.reshape(np.asarray(v), (self.n,))
           for k, v in jax.device_get(device_metrics).items()}
    self._check_finite(step, m_S)
    self.tokens_seen += self.tokens_per_step
    if not first:  # the first step of a process includes compilation
      self.timed_tokens += self.tokens_per_step
      self.timed_s += seconds
      self.timed_data_s += data_s
      self.timed_steps += 1
      self.window = [self.window[0] + seconds, self.window[1] + data_s,
                     self.window[2] + 1]
    self.recent.append(m_S['loss'].astype(np.float64))
    del self.recent[:-50]
    cfg = self.cfg
    if step % cfg.train.log_every == 0 or step == cfg.train.steps:
      tps, wall = self.tokens_per_s(), self.wall_s()
      seen = {**self.mfus(tps, self.peak), **self.step_split(*self.window),
              'goodput': self.goodput(), 'wall_s': wall,
              'run_wall_s': self.prior_run_wall + time.perf_counter() - self.t_session,
              'productive_s': self.prior_productive + self.timed_s}
      self.window = [0.0, 0.0, 0]
      for i, w in enumerate(self.writers):
        w.write(step, {**{k: float(v[i]) for k, v in m_S.items()}, 'tokens_per_s': tps,
                       **seen})
    if self.bar is not None:
      advance_bar(self.bar, float(np.mean(m_S['loss'])),
                  self.n * self.timed_tokens / self.timed_s if self.timed_s else None)

  def on_eval(self, step: int, evals: list[dict[str, float]]) -> None:
    """One eval point per seed."""
    for h, w, ev in zip(self.histories, self.writers, evals):
      h.append({'step': step, **ev})
      w.write(step, h[-1])
      w.flush()

  def finish(self, final_step: int, finals: list[dict[str, float]], preempted: bool,
             seed_metrics: list[dict[str, Any]], states: list[Any], setup: Any
             ) -> list[RunOutput]:
    """Each seed's RunOutput; writes its final eval row and final_metrics.json.

    `finals` are the seeds' final evals ({} when preempted); `seed_metrics` adds
    per-seed entries (params, active_params, ...) to the metrics.
    """
    wall = self.wall_s()
    tps = self.tokens_per_s()
    train_loss_S = (np.mean(np.stack(self.recent), axis=0) if self.recent
                    else np.full((self.n,), np.nan))
    outs = []
    for i, d in enumerate(self.seed_dirs):
      final, history = finals[i], self.histories[i]
      if final and (not history or history[-1]['step'] != final_step):
        history.append({'step': final_step, **final})
        self.writers[i].write(final_step, {**final, 'wall_s': wall})
      self.writers[i].flush()
      seed_tps, seed_loss = previous_final(d, bool(self.timed_s), tps,
                                           float(train_loss_S[i]))
      peak = previous_peak(d, bool(self.timed_s), self.peak)
      split = previous_split(d, bool(self.timed_s), self.step_split(
          self.timed_s, self.timed_data_s, self.timed_steps))
      metrics = {
          **final, 'train_loss': seed_loss, 'params': seed_metrics[i]['params'],
          'active_params': seed_metrics[i]['active_params'],
          'flops_per_token': self.flops_per_token,
          'train_flops': self.flops_per_token * self.tokens_seen,
          'tokens': self.tokens_seen, 'tokens_per_s': seed_tps,
          'matmul_peak_flops': peak, 'spec_peak_flops': self.spec_peak,
          **self.mfus(seed_tps, peak), **split, 'goodput': self.goodput(),
          'wall_s': wall, 'steps': final_step, 'preempted': preempted,
          'history': history, **seed_metrics[i].get('extra', {})}
      if jax.process_index() == 0:
        storage.write_atomic(d / FINAL_FILE, json.dumps(metrics, indent=1))
      outs.append(RunOutput(metrics=metrics, state=states[i], setup=setup))
    return outs

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
