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

Shape legend: S seeds.
"""

from __future__ import annotations

import dataclasses
import json
import os
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


def progress_bar(total: int, initial: int, enabled: bool):
  """A tqdm bar on process 0 when `enabled`, else None."""
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, dynamic_ncols=True, desc='train')


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
               stacked: bool):
    self.cfg, self.seeds, self.seed_dirs = cfg, list(seeds), [
        storage.path(d) for d in seed_dirs]
    self.n, self.stacked = len(self.seeds), stacked
    self.flops_per_token, self.peak = flops_per_token, peak
    self.writers = [MetricsWriter(d, cfg.train.tensorboard) for d in self.seed_dirs]
    for w in self.writers:  # steps past the restored one run again: no duplicates
      w.truncate_after(start_step)
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

  def on_step(self, step: int, device_metrics: dict, seconds: float, first: bool):
    """One step's metrics (device arrays, [S] when stacked, else scalars)."""
    m_S = {k: np.reshape(np.asarray(v), (self.n,))
           for k, v in jax.device_get(device_metrics).items()}
    self._check_finite(step, m_S)
    self.tokens_seen += self.tokens_per_step
    if not first:  # the first step of a process includes compilation
      self.timed_tokens += self.tokens_per_step
      self.timed_s += seconds
    self.recent.append(m_S['loss'].astype(np.float64))
    del self.recent[:-50]
    cfg = self.cfg
    if step % cfg.train.log_every == 0 or step == cfg.train.steps:
      tps, wall = self.tokens_per_s(), self.wall_s()
      for i, w in enumerate(self.writers):
        w.write(step, {**{k: float(v[i]) for k, v in m_S.items()}, 'tokens_per_s': tps,
                       'mfu': self.n * tps * self.flops_per_token / self.peak,
                       'wall_s': wall})
    if self.bar is not None:
      self.bar.update(1)
      self.bar.set_postfix(
          loss=f'{float(np.mean(m_S["loss"])):.3f}',
          tok_s=f'{self.n * self.timed_tokens / self.timed_s:.0f}' if self.timed_s else '-')

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
      metrics = {
          **final, 'train_loss': seed_loss, 'params': seed_metrics[i]['params'],
          'active_params': seed_metrics[i]['active_params'],
          'flops_per_token': self.flops_per_token,
          'train_flops': self.flops_per_token * self.tokens_seen,
          'tokens': self.tokens_seen, 'tokens_per_s': seed_tps,
          'matmul_peak_flops': peak,
          'mfu': self.n * seed_tps * self.flops_per_token / peak,
          'wall_s': wall, 'steps': final_step, 'preempted': preempted,
          'history': history, **seed_metrics[i].get('extra', {})}
      if jax.process_index() == 0:
        storage.write_atomic(d / FINAL_FILE, json.dumps(metrics, indent=1))
      outs.append(RunOutput(metrics=metrics, state=states[i], setup=setup))
    return outs

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
