"""`train_and_evaluate(config, workdir) -> metrics`: the one train loop.

Init goes eval_shape -> shardings -> jit(init, out_shardings); the step is jitted
with explicit shardings and donation. A run resumes from `workdir` by itself (train
state and data-iterator state are checkpointed together), saves on SIGTERM and exits
cleanly, and stops on a non-finite loss naming the step (or skips it, by config).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from lattice import config as config_lib
from lattice import model as model_lib
from lattice import sharding
from lattice.data import batches, tokenizer as tokenizer_lib
from lattice.train import artifacts, checkpoint, flops, optim, step as step_lib
from lattice.train.state import TrainState


class NonFiniteError(RuntimeError):
  """Raised when a step's loss or gradient is NaN/Inf and train.nonfinite='stop'."""


def resolve(cfg: config_lib.Config, tok=None) -> config_lib.Config:
  """Fills derived fields (model.vocab_size=0 -> the tokenizer's, padded to 128)."""
  tok = tok or tokenizer_lib.ByteTokenizer()
  if cfg.model.vocab_size == 0:
    cfg = config_lib.replace(
        cfg, **{'model.vocab_size': tokenizer_lib.padded_vocab_size(tok)})
  elif cfg.model.vocab_size < tok.vocab_size:
    raise config_lib.ConfigError(
        f'model.vocab_size: {cfg.model.vocab_size} is smaller than the tokenizer '
        f'vocabulary ({tok.vocab_size})')
  return cfg


@dataclasses.dataclass
class Setup:
  """Everything built (not yet run) for one config: model, mesh, jitted functions."""
  cfg: config_lib.Config
  model: nn.Module
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  state_sharding: Any
  abstract_state: Any
  init: Callable[[jax.Array], TrainState]
  train_step: Callable
  eval_step: Callable
  # The same three unjitted, for transformations (vmap over seeds: train/vmap_seeds.py).
  init_fn: Callable | None = None
  train_step_fn: Callable | None = None
  eval_step_fn: Callable | None = None
  batch_sharding: Any = None


def build(cfg: config_lib.Config, *, model: nn.Module | None = None,
          loss_fn: Callable | None = None, extra_update: Callable | None = None,
          devices=None) -> Setup:
  """Mesh, shardings and jitted init/train/eval for `cfg` (no compilation yet).

  The model, loss, init inputs and eval step come from `lattice.model`;
  `model` and `loss_fn` override its."""
  cfg = resolve(cfg)
  mesh = sharding.make_mesh(cfg.mesh, devices)
  sharding.validate_for_mesh(cfg, mesh)
  model = model or model_lib.make_model(cfg.model)
  loss_fn = loss_fn or model_lib.loss_fn
  tx, schedule = optim.make_optimizer(cfg.optimizer, cfg.train.steps)
  init_args = (model_lib.init_batch(cfg),)

  def init(key):
    return TrainState.create(nn.unbox(model.init(key, *init_args)), tx)

  with sharding.use_mesh(mesh):
    boxed = jax.eval_shape(model.init, jax.random.key(0), *init_args)
    var_sh = sharding.logical_to_sharding(boxed, mesh)
    abstract = jax.eval_shape(init, jax.random.key(0))
  repl = sharding.replicated(mesh)
  opt_sh = optax.tree_utils.tree_map_params(
      tx, lambda _, s: s, abstract.opt_state, var_sh['params'],
      transform_non_params=lambda _: repl,
      is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
  state_sh = TrainState(step=repl, params=var_sh['params'], opt_state=opt_sh,
                        extra={k: var_sh[k] for k in abstract.extra})
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, state_sh)
  batch_sh = sharding.batch_sharding(mesh)
  train_step_fn = step_lib.make_train_step(model, tx, schedule, loss_fn=loss_fn,
                                           extra_update=extra_update)
  eval_step_fn = model_lib.make_eval_step(model)
  train_step = jax.jit(train_step_fn, in_shardings=(state_sh, batch_sh),
                       out_shardings=(state_sh, repl), donate_argnums=0)
  eval_step = jax.jit(eval_step_fn, in_shardings=(state_sh, batch_sh), out_shardings=repl)
  return Setup(cfg, model, mesh, tx, schedule, state_sh, abstract,
               jax.jit(init, out_shardings=state_sh), train_step, eval_step,
               init_fn=init, train_step_fn=train_step_fn, eval_step_fn=eval_step_fn,
               batch_sharding=batch_sh)


def eval_sums(setup: Setup, state, batches: list[dict], eval_step=None
              ) -> dict[str, np.ndarray]:
  """`eval_step` (default the Setup's) summed over the eval batches, in float64."""
  eval_step = eval_step or setup.eval_step
  totals: dict[str, Any] = {}
  with sharding.use_mesh(setup.mesh):
    for batch in batches:
      sums = jax.device_get(eval_step(state, sharding.global_batch(batch, setup.mesh)))
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)
  return totals


def evaluate(setup: Setup, state: TrainState, batches: list[dict]) -> dict[str, float]:
  return step_lib.summarize_eval(eval_sums(setup, state, batches))


class _Preemption:
  """Turns SIGTERM into a flag the loop polls, so it can save and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class _MetricsWriter:
  """metrics.jsonl on process 0 (and TensorBoard when asked and installed)."""

  def __init__(self, workdir: Path, tensorboard: bool):
    self.path = workdir / 'metrics.jsonl'
    self.enabled = jax.process_index() == 0
    self.tb = None
    if tensorboard and self.enabled:
      try:
        from tensorboardX import SummaryWriter  # optional dependency
        self.tb = SummaryWriter(str(workdir / 'tb'))
      except ImportError:
        print('[lattice] train.tensorboard=True but tensorboardX is not installed; '
              'writing metrics.jsonl only')

  def previous_wall_s(self) -> float:
    """Wall time a resumed run had already spent (its last logged `wall_s`)."""
    if not self.path.exists():
      return 0.0
    walls = [json.loads(l).get('wall_s', 0.0) for l in self.path.read_text().splitlines()
             if l.strip()]
    return max(walls, default=0.0)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    with self.path.open('a') as f:
      f.write(json.dumps({'step': step, **metrics}) + '\n')
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(k, v, step)


def _progress(total: int, initial: int, enabled: bool):
  if not enabled or jax.process_index() != 0:
    return None
  from tqdm.auto import tqdm
  return tqdm(total=total, initial=initial, dynamic_ncols=True, desc='train')


def _host(metrics: dict) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def make_data(cfg: config_lib.Config, tok) -> tuple[Any, list[dict]]:
  """The checkpointable train iterator and the eval batches of `cfg`'s data source."""
  return batches.make_data(cfg, tok)


def run_steps(cfg: config_lib.Config, mesh, state, train_step: Callable, train_iter,
              ckpt: checkpoint.Checkpointer, *, on_step: Callable, on_eval: Callable,
              stop_after: int | None = None, bar=None) -> tuple[Any, int, bool]:
  """Steps from `state.step` to train.steps: eval, checkpoint and SIGTERM handling.

  `on_step(step, device metrics, seconds, first)` sees each step's metrics one step
  late (so reading them does not stall the device), and always before an eval, a
  save or the end; `on_eval(step, state)` runs every train.eval_every steps. The
  step counter is `state.step` (a leading seed axis is allowed: seed 0's is read).
  Returns (state, final step, preempted).
  """
  step_of = lambda st: int(st.step) if st.step.ndim == 0 else int(st.step[0])
  start_step = step_of(state)
  preempted = False
  try:
    with _Preemption() as preemption, sharding.use_mesh(mesh):
      pending = []  # at most one (step, device metrics, seconds, first): read late

      def flush():
        for args in pending:
          on_step(*args)
        pending.clear()

      t_last = time.perf_counter()
      for i in range(start_step, cfg.train.steps):
        batch = sharding.global_batch(next(train_iter), mesh)
        state, metrics = train_step(state, batch)
        flush()  # the previous step's metrics, while this step runs
        now = time.perf_counter()
        pending.append((i + 1, metrics, now - t_last, i == start_step))
        t_last = now
        step = i + 1
        if cfg.train.eval_every and step % cfg.train.eval_every == 0:
          flush()
          on_eval(step, state)
          t_last = time.perf_counter()
        if cfg.checkpoint.enabled and step % cfg.checkpoint.every == 0:
          flush()  # never save before the step's finiteness is known
          ckpt.save(step, state, train_iter)
        if preemption.requested or step == stop_after:
          preempted = True
          break
      flush()
      final_step = step_of(state)
      if cfg.checkpoint.enabled and final_step not in ckpt.all_steps():
        ckpt.save(final_step, state, train_iter, force=True)
      ckpt.wait()
  finally:
    if bar is not None:
      bar.close()
    ckpt.close()
  return state, final_step, preempted


def previous_final(workdir: Path, trained: bool, tokens_per_s: float,
                   train_loss: float) -> tuple[float, float]:
  """When nothing trained in this session (the run had finished), the training
  session's tokens/s and train loss from final_metrics.json, not an empty one's."""
  previous = workdir / 'final_metrics.json'
  if not trained and previous.exists():
    before = json.loads(previous.read_text())
    return (before.get('tokens_per_s', tokens_per_s),
            before.get('train_loss', train_loss))
  return tokens_per_s, train_loss


def train_and_evaluate(config: ml_collections.ConfigDict | config_lib.Config,
                       workdir: str | os.PathLike, *, stop_after: int | None = None,
                       **build_kwargs) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint) and evaluates.

  `stop_after=k` behaves as if SIGTERM arrived after step k (save, then return);
  `build_kwargs` go to `build` (e.g. `devices=` for a sub-mesh).

  Returns the final metrics: val_loss, val_bpb, train_loss, params, flops_per_token,
  tokens, tokens_per_s, mfu, wall_s, steps, preempted, and `history` (eval points).
  """
  cfg = config if isinstance(config, config_lib.Config) else config_lib.build(config)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  t_start = time.perf_counter()
  tok = tokenizer_lib.ByteTokenizer()
  setup = build(cfg, **build_kwargs)
  cfg = setup.cfg
  if jax.process_index() == 0:
    artifacts.save_config(workdir, cfg)
  train_iter, eval_batches = make_data(cfg, tok)
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', cfg.checkpoint)

  with sharding.use_mesh(setup.mesh):
    # The newest checkpoint that verifies; corrupt ones are skipped with a warning.
    state = ckpt.resume(setup.abstract_state, train_iter)
    if state is not None:
      print(f'[lattice] resumed from step {int(state.step)} in {workdir}')
    else:
      state = setup.init(jax.random.key(cfg.train.seed))
  n_params = flops.count_params(state.params)
  flops_per_token = flops.train_flops_per_token(
      state.params, cfg.model, cfg.data.seq_len)
  peak = cfg.train.flops_peak or flops.measure_matmul_peak()
  writer = _MetricsWriter(workdir, cfg.train.tensorboard)
  t_start -= writer.previous_wall_s()  # wall_s counts every session of a resumed run
  start_step = int(state.step)
  history: list[dict[str, float]] = []
  recent: list[float] = []
  tokens_seen = start_step * cfg.data.batch_size * cfg.data.seq_len
  timed_tokens, timed_s = 0, 0.0
  bar = _progress(cfg.train.steps, start_step, cfg.train.progress)

  def on_step(step: int, m: dict[str, float], seconds: float, first: bool):
    nonlocal tokens_seen, timed_tokens, timed_s
    if not m['finite']:
      bad = [k for k in ('loss', 'grad_norm') if not np.isfinite(m[k])]
      msg = (f'non-finite {", ".join(bad) or "value"} at step {step} '
             f'(loss={m["loss"]}, grad_norm={m["grad_norm"]})')
      if cfg.train.nonfinite == 'stop':
        raise NonFiniteError(msg + '; the state was not updated and no checkpoint of '
                             'it is written. Set train.nonfinite=skip to skip such steps.')
      print(f'[lattice] skipped step: {msg}')
    tokens = cfg.data.batch_size * cfg.data.seq_len
    tokens_seen += tokens
    if not first:  # the first step of a process includes compilation
      timed_tokens += tokens
      timed_s += seconds
    recent.append(m['loss'])
    del recent[:-50]
    if step % cfg.train.log_every == 0 or step == cfg.train.steps:
      tps = timed_tokens / timed_s if timed_s else 0.0
      writer.write(step, {**m, 'tokens_per_s': tps, 'mfu': tps * flops_per_token / peak,
                          'wall_s': time.perf_counter() - t_start})
    if bar is not None:
      bar.update(1)
      bar.set_postfix(loss=f'{m["loss"]:.3f}',
                      tok_s=f'{timed_tokens / timed_s:.0f}' if timed_s else '-')

  def on_eval(step: int, state):
    history.append({'step': step, **evaluate(setup, state, eval_batches)})
    writer.write(step, history[-1])

  state, final_step, preempted = run_steps(
      cfg, setup.mesh, state, setup.train_step, train_iter, ckpt,
      on_step=lambda step, m, seconds, first: on_step(step, _host(m), seconds, first),
      on_eval=on_eval, stop_after=stop_after, bar=bar)

  if preempted:
    print(f'[lattice] SIGTERM: saved step {final_step} to {workdir}; exiting')
  final = evaluate(setup, state, eval_batches) if not preempted else {}
  if final and (not history or history[-1]['step'] != final_step):
    history.append({'step': final_step, **final})
    writer.write(final_step, {**final, 'wall_s': time.perf_counter() - t_start})
  tps = timed_tokens / timed_s if timed_s else 0.0
  train_loss = float(np.mean(recent)) if recent else float('nan')
  tps, train_loss = previous_final(workdir, bool(timed_s), tps, train_loss)
  result = {
      **final,
      'train_loss': train_loss,
      'params': n_params,
      'active_params': flops.active_params(state.params, cfg.model),
      'flops_per_token': flops_per_token,
      'train_flops': flops_per_token * tokens_seen,
      'tokens': tokens_seen,
      'tokens_per_s': tps,
      'matmul_peak_flops': peak,
      'mfu': tps * flops_per_token / peak,
      'wall_s': time.perf_counter() - t_start,
      'steps': final_step,
      'preempted': preempted,
      'history': history,
  }
  if jax.process_index() == 0:
    (workdir / 'final_metrics.json').write_text(json.dumps(result, indent=1))
  result['state'] = state
  result['setup'] = setup
  return result
