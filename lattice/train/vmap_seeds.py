"""Several seeds of one config trained together: `jax.vmap` over seeds in one step.

For small models one seed leaves most of a chip (or the CPU's vector units) idle,
so `train_seeds(cfg, seeds, workdir)` stacks the seeds' train states on a leading
axis S and runs `vmap(train_step)` inside one jitted call. Every seed sees the same
batches (the data order comes from `data.shuffle_seed`, not `train.seed`, exactly as
in sequential runs), so seed k here equals `loop.train_and_evaluate` with
`train.seed=k` up to float reassociation (tests/sweep_test.py checks this).

The stacked state is checkpointed as one pytree in `workdir/checkpoints` (resume,
SIGTERM and non-finite handling behave as in the one-seed loop); each seed gets its
own `seed_<k>/metrics.jsonl`, `config.json` and `final_metrics.json`. Per-seed
`tokens_per_s` counts the tokens that seed trained per second of the shared step, and
per-seed `wall_s` is the shared wall time divided by S, so summing over seeds gives
the wall time actually spent; `mfu` is the whole stacked step's (S x tokens_per_s).

Shape legend: S seeds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from lattice import config as config_lib
from lattice import sharding
from lattice import storage
from lattice.data import tokenizer as tokenizer_lib
from lattice.train import checkpoint, flops, loop, step as step_lib
from lattice.train import recorder as recorder_lib
from lattice.train.recorder import Recorder, RunOutput


def _stacked(s: NamedSharding) -> NamedSharding:
  return NamedSharding(s.mesh, P(None, *s.spec))


def build(cfg: config_lib.Config, n_seeds: int, *, devices=None
          ) -> tuple[loop.Setup, dict[str, Any]]:
  """The one-seed Setup plus jitted, seed-vmapped init/train/eval and the stacked
  abstract state (for checkpoint restore)."""
  setup = loop.build(cfg, devices=devices)
  state_sh = jax.tree.map(_stacked, setup.state_sharding)
  repl = sharding.replicated(setup.mesh)
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct((n_seeds, *a.shape), a.dtype, sharding=s),
      setup.abstract_state, state_sh)
  fns = {
      'init': jax.jit(jax.vmap(setup.init_fn), out_shardings=state_sh),
      'train_step': jax.jit(jax.vmap(setup.train_step_fn, in_axes=(0, None)),
                            in_shardings=(state_sh, setup.batch_sharding),
                            out_shardings=(state_sh, repl), donate_argnums=0),
      'eval_step': jax.jit(jax.vmap(setup.eval_step_fn, in_axes=(0, None)),
                           in_shardings=(state_sh, setup.batch_sharding),
                           out_shardings=repl),
      'abstract_state': abstract,
  }
  return setup, fns


@jax.jit
def _take(tree: Any, i: jax.Array) -> Any:
  return jax.tree.map(lambda x: x[i], tree)


def unstack(tree: Any, i: int) -> Any:
  """Seed i's slice of a stacked pytree (every leaf has a leading S axis).

  One jitted gather with `i` traced: indexing each leaf eagerly with a Python int
  compiles one program per (leaf shape, i) pair (over a hundred for two seeds of a
  small MoE+MTP train state); here it is one per tree structure.
  """
  return _take(tree, jnp.asarray(i, jnp.int32))


def _evaluate(setup: loop.Setup, eval_step, state, batches, n_seeds: int
              ) -> list[dict[str, float]]:
  totals = loop.eval_sums(setup, state, batches, eval_step)
  return [step_lib.summarize_eval({k: v[i] for k, v in totals.items()})
          for i in range(n_seeds)]


def train_seeds(cfg: config_lib.Config, seeds: list[int], workdir: str | Path, *,
                seed_dirs: list[str | Path] | None = None,
                stop_after: int | None = None) -> list[RunOutput]:
  """Trains `cfg` once per seed, all seeds in one vmapped step; resumes from workdir.

  The stacked checkpoints go to `workdir/checkpoints`, each seed's files to
  `seed_dirs` (default `workdir/seed_<k>`).

  Returns one RunOutput per seed, as `loop.train_and_evaluate` does (its `state` is
  that seed's unstacked TrainState, `setup` the shared one-seed Setup; its metrics
  add `vmapped_seeds`). Raises ConfigError for repeated or no seeds.
  """
  workdir = storage.path(workdir)
  seeds = [int(s) for s in seeds]
  n = len(seeds)
  if n < 1 or len(set(seeds)) != n:
    raise config_lib.ConfigError(f'seeds: need distinct seeds, got {seeds}')
  t_start = time.perf_counter()
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  setup, fns = build(cfg, n)
  cfg = setup.cfg
  seed_dirs = [storage.path(d) for d in seed_dirs] if seed_dirs else [
      workdir / f'seed_{s}' for s in seeds]
  if len(seed_dirs) != n:
    raise ValueError(f'train_seeds: {len(seed_dirs)} seed_dirs for {n} seeds')
  for s, d in zip(seeds, seed_dirs):
    d.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
      recorder_lib.save_config(d, config_lib.replace(cfg, **{'train.seed': s}))
  train_iter, eval_batches = loop.make_data(cfg, tok)
  ckpt = checkpoint.Checkpointer(workdir / 'checkpoints', cfg.checkpoint)
  with sharding.use_mesh(setup.mesh):
    state = ckpt.resume(fns['abstract_state'], train_iter)
    if state is not None:
      print(f'[lattice] resumed seeds {seeds} from step {int(state.step[0])} in {workdir}')
    else:
      keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
      state = fns['init'](keys)
  params0 = unstack(state.params, 0)
  flops_per_token = flops.train_flops_per_token(
      params0, cfg.model, cfg.data.seq_len, setup.param_axes)
  recorder = Recorder(
      cfg, seeds, seed_dirs, flops_per_token=flops_per_token,
      peak=cfg.train.flops_peak or flops.measured_peak(setup.mesh.devices.flat),
      spec_peak=flops.spec_peak(setup.mesh.devices.flat),
      start_step=int(state.step[0]), t_start=t_start, stacked=True)

  state, final_step, preempted = loop.run_steps(
      cfg, setup.mesh, state, fns['train_step'], train_iter, ckpt,
      on_step=recorder.on_step,
      on_eval=lambda step, st: recorder.on_eval(
          step, _evaluate(setup, fns['eval_step'], st, eval_batches, n)),
      stop_after=stop_after, bar=recorder.bar, profile_dir=workdir / loop.profile_lib.PROFILE_DIR)

  finals = (_evaluate(setup, fns['eval_step'], state, eval_batches, n)
            if not preempted else [{} for _ in seeds])
  n_params = flops.count_params(params0)
  counts = [{'params': n_params,
             'active_params': flops.active_params(unstack(state.params, i), cfg.model,
                                                 setup.param_axes),
             'extra': {'vmapped_seeds': seeds}} for i in range(n)]
  return recorder.finish(final_step, finals, preempted, counts,
                         [unstack(state, i) for i in range(n)], setup)
