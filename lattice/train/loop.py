"""`train_and_evaluate(config, workdir) -> metrics`: the one train loop.

Init goes eval_shape -> shardings -> jit(init, out_shardings); the step is jitted
with explicit shardings and donation. `workdir` may be local or remote (`gs://...`,
through etils.epath: lattice.storage). A run resumes from `workdir` by itself (train
state and data-iterator state are checkpointed together), saves on SIGTERM or
Ctrl-C (SIGINT) and exits cleanly (with several processes, all of them after the
same step, whichever was signalled: lattice.train.preemption), and stops on a
non-finite loss naming the step (or skips it, by config). A resumed run drops the metrics.jsonl rows past the restored
step (they are trained again) and rebuilds its eval history from the rows before
it; a workdir whose checkpoints hold a model of another shape is refused before
anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from lattice import config as config_lib
from lattice import model as model_lib
from lattice import sharding
from lattice import storage
from lattice.data import batches, tokenizer as tokenizer_lib
from lattice.train import checkpoint, flops, optim, step as step_lib
from lattice.train import preemption as preemption_lib
from lattice.train import recorder as recorder_lib
from lattice.train import profile as profile_lib
from lattice.train import rundir
from lattice.train.recorder import NonFiniteError, Recorder, RunOutput  # pylint: disable=unused-import
from lattice.train.state import TrainState

__all__ = ['NonFiniteError', 'RunOutput', 'Setup', 'build', 'eval_sums', 'evaluate', 'make_data',
           'resolve', 'run_steps', 'train_and_evaluate']


def resolve(cfg: config_lib.Config, tok=None) -> config_lib.Config:
  """Fills derived fields (model.vocab_size=0 -> the tokenizer's, padded to 128)."""
  tok = tok or tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
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
  # Logical axis names of every parameter (nn.flops.logical_axes): the FLOP and
  # active-parameter counts find per-expert weights by them.
  param_axes: Any = None


def build(cfg: config_lib.Config, *, model: nn.Module | None = None,
          loss_fn: Callable | None = None, extra_update: Callable | None = None,
          devices=None, check_vocab: bool = True) -> Setup:
  """Mesh, shardings and jitted init/train/eval for `cfg` (no compilation yet).

  The model, loss, init inputs and eval step come from `lattice.model`;
  `model` and `loss_fn` override its. `check_vocab=False` skips loading the
  tokenizer when `model.vocab_size` is set (`lattice plan`, offline)."""
  if check_vocab or cfg.model.vocab_size == 0:
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
                                           extra_update=extra_update,
                                           microbatches=cfg.train.microbatches)
  eval_step_fn = model_lib.make_eval_step(model)
  train_step = jax.jit(train_step_fn, in_shardings=(state_sh, batch_sh),
                       out_shardings=(state_sh, repl), donate_argnums=0)
  eval_step = jax.jit(eval_step_fn, in_shardings=(state_sh, batch_sh), out_shardings=repl)
  return Setup(cfg, model, mesh, tx, schedule, state_sh, abstract,
               jax.jit(init, out_shardings=state_sh), train_step, eval_step,
               init_fn=init, train_step_fn=train_step_fn, eval_step_fn=eval_step_fn,
               batch_sharding=batch_sh,
               param_axes=flops.logical_axes(boxed['params']))


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


def make_data(cfg: config_lib.Config, tok) -> tuple[Any, list[dict]]:
  """The checkpointable train iterator and the eval batches of `cfg`'s data source."""
  return batches.make_data(cfg, tok)


def run_steps(cfg: config_lib.Config, mesh, state, train_step: Callable, train_iter,
              ckpt: checkpoint.Checkpointer, *, on_step: Callable, on_eval: Callable,
              stop_after: int | None = None, bar=None, profile_dir=None
              ) -> tuple[Any, int, bool]:
  """Steps from `state.step` to train.steps: eval, checkpoint and SIGTERM handling.

  `on_step(step, device metrics, seconds, first, data_s)` sees each step's metrics
  one step late (so reading them does not stall the device), and always before an
  eval, a save or the end; `seconds` is the step's wall time (evals and checkpoint
  saves excluded) and `data_s` the part of it the host spent fetching the batch; `on_eval(step, state)` runs every train.eval_every steps. The
  step counter is `state.step` (a leading seed axis is allowed: seed 0's is read).
  With `profile_dir`, train.profile_steps are traced there (train/profile.py).
  Returns (state, final step, preempted).
  """
  step_of = lambda st: int(st.step) if st.step.ndim == 0 else int(st.step[0])
  start_step = step_of(state)
  preempted = False
  profile = profile_lib.ProfileWindow(cfg.train, profile_dir)
  try:
    with preemption_lib.Signals() as signals, sharding.use_mesh(mesh):
      # Every process stops after the same step, whichever one was signalled.
      agreement = preemption_lib.Agreement(signals)
      pending = []  # at most one (step, device metrics, seconds, first): read late

      def flush():
        for args in pending:
          on_step(*args)
        pending.clear()

      t_last = time.perf_counter()
      for i in range(start_step, cfg.train.steps):
        profile.before_step(i)
        t_data = time.perf_counter()
        batch = sharding.global_batch(next(train_iter), mesh)
        data_s = time.perf_counter() - t_data
        state, metrics = train_step(state, batch)
        flush()  # the previous step's metrics, while this step runs
        now = time.perf_counter()
        pending.append((i + 1, metrics, now - t_last, i == start_step, data_s))
        t_last = now
        step = i + 1
        profile.after_step(step, metrics)
        if cfg.train.eval_every and step % cfg.train.eval_every == 0:
          flush()
          on_eval(step, state)
          t_last = time.perf_counter()
        if cfg.checkpoint.enabled and step % cfg.checkpoint.every == 0:
          flush()  # never save before the step's finiteness is known
          ckpt.save(step, state, train_iter)
          t_last = time.perf_counter()  # a save stall is not step time
        if agreement.stop(step) or step == stop_after:
          preempted = True
          break
      flush()
      final_step = step_of(state)
      if cfg.checkpoint.enabled and final_step not in ckpt.all_steps():
        ckpt.save(final_step, state, train_iter, force=True)
      ckpt.wait()
      if agreement.stopped_by:
        print(f'[lattice] {agreement.stopped_by}: saved step {final_step}; rerun the '
              'same command to resume', flush=True)
  finally:
    profile.close()
    if bar is not None:
      bar.close()
    ckpt.close()
  return state, final_step, preempted


def _state_shapes(abstract_state) -> dict[str, tuple]:
  """'params/layers_0/...' -> (shape, dtype) of every params/extra leaf."""
  tree = {'params': abstract_state.params, **abstract_state.extra}
  return {jax.tree_util.keystr(path): (tuple(leaf.shape), str(leaf.dtype))
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _flat(tree: dict, prefix: str = 'model') -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    out.update(_flat(v, f'{prefix}.{k}') if isinstance(v, dict) else {f'{prefix}.{k}': v})
  return out


def refuse_reshaped_workdir(workdir: str | os.PathLike, setup: Setup, **build_kwargs) -> None:
  """Raises ConfigError, before anything is written, when `workdir` holds checkpoints
  of a model whose state has other shapes than `setup`'s, naming the differing
  `model.*` fields (resuming would fail deep inside Orbax, and overwriting
  config.json would leave the old checkpoints unloadable)."""
  workdir = storage.path(workdir)
  ckpt_dir = workdir / 'checkpoints'
  if not (workdir / rundir.CONFIG_FILE).is_file() or not ckpt_dir.is_dir() or not any(
      p.name.isdigit() for p in ckpt_dir.iterdir()):
    return
  try:
    stored = rundir.load_config(workdir)
  except (ValueError, TypeError, config_lib.ConfigError):
    return  # an older schema; the checkpoint restore will judge the shapes
  old = _flat(dataclasses.asdict(stored.model))
  new = _flat(dataclasses.asdict(setup.cfg.model))
  fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
  if not fields:
    return
  if _state_shapes(build(stored, **build_kwargs).abstract_state) == _state_shapes(
      setup.abstract_state):
    return  # e.g. remat or dtype: the same checkpoint fits
  changes = ', '.join(f'{k} (stored {old.get(k)!r}, now {new.get(k)!r})' for k in fields)
  raise config_lib.ConfigError(
      f'{fields[0]}: {workdir} holds checkpoints of another model shape; changed: '
      f'{changes}. Use a new --workdir, or delete this one to start over')


def train_and_evaluate(config: ml_collections.ConfigDict | config_lib.Config,
                       workdir: str | os.PathLike, *, stop_after: int | None = None,
                       **build_kwargs) -> RunOutput:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint) and evaluates.

  `stop_after=k` behaves as if SIGTERM arrived after step k (save, then return);
  `build_kwargs` go to `build` (e.g. `devices=` for a sub-mesh).

  Returns a RunOutput: the final metrics (val_loss, val_bpb, train_loss, params,
  active_params, flops_per_token, train_flops, tokens, tokens_per_s, mfu,
  mfu_measured, step_s, data_wait_s, compute_s, goodput, wall_s, steps, preempted,
  `history` of eval points; train/recorder.py defines them), the final state and
  the Setup.
  """
  cfg = config if isinstance(config, config_lib.Config) else config_lib.build(config)
  if cfg.train.init_from:
    cfg = rundir.with_model_of(cfg, cfg.train.init_from)
  workdir = storage.path(workdir)
  t_start = time.perf_counter()
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  setup = build(cfg, **build_kwargs)
  cfg = setup.cfg
  refuse_reshaped_workdir(workdir, setup, **build_kwargs)
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() == 0:
    recorder_lib.save_config(workdir, cfg)
  train_iter, eval_batches = make_data(cfg, tok)
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', cfg.checkpoint)

  with sharding.use_mesh(setup.mesh):
    # The newest checkpoint that verifies; corrupt ones are skipped with a warning.
    state = ckpt.resume(setup.abstract_state, train_iter)
    if state is not None:
      print(f'[lattice] resumed from step {int(state.step)} in {workdir}')
    else:
      state = setup.init(jax.random.key(cfg.train.seed))
      if cfg.train.init_from:
        state = state.replace(params=rundir.load_params(
            cfg.train.init_from, setup.abstract_state.params,
            step=cfg.train.init_from_step or None))
        print(f'[lattice] started from the params of {cfg.train.init_from}'
              f'{f" at step {cfg.train.init_from_step}" if cfg.train.init_from_step else ""}')
  flops_per_token = flops.train_flops_per_token(
      state.params, cfg.model, cfg.data.seq_len, setup.param_axes)
  recorder = Recorder(
      cfg, [cfg.train.seed], [workdir], flops_per_token=flops_per_token,
      peak=cfg.train.flops_peak or flops.measured_peak(setup.mesh.devices.flat),
      spec_peak=flops.spec_peak(setup.mesh.devices.flat),
      start_step=int(state.step), t_start=t_start, stacked=False)

  state, final_step, preempted = run_steps(
      cfg, setup.mesh, state, setup.train_step, train_iter, ckpt,
      on_step=recorder.on_step,
      on_eval=lambda step, st: recorder.on_eval(
          step, [evaluate(setup, st, eval_batches)]),
      stop_after=stop_after, bar=recorder.bar,
      profile_dir=workdir / profile_lib.PROFILE_DIR)

  final = evaluate(setup, state, eval_batches) if not preempted else {}
  counts = {'params': flops.count_params(state.params),
            'active_params': flops.active_params(state.params, cfg.model,
                                                 setup.param_axes)}
  return recorder.finish(final_step, [final], preempted, [counts], [state], setup)[0]
