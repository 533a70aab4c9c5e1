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

import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from lattice import config as config_lib
from lattice import sharding
from lattice.data import tokenizer as tokenizer_lib
from lattice.train import artifacts, checkpoint, flops, loop, step as step_lib


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


def unstack(tree: Any, i: int) -> Any:
  """Seed i's slice of a stacked pytree."""
  return jax.tree.map(lambda x: x[i], tree)


def _evaluate(setup: loop.Setup, eval_step, state, batches, n_seeds: int
              ) -> list[dict[str, float]]:
  totals = loop.eval_sums(setup, state, batches, eval_step)
  return [step_lib.summarize_eval({k: v[i] for k, v in totals.items()})
          for i in range(n_seeds)]


def train_seeds(cfg: config_lib.Config, seeds: list[int], workdir: str | Path, *,
                seed_dirs: list[str | Path] | None = None,
                stop_after: int | None = None) -> list[dict[str, Any]]:
  """Trains `cfg` once per seed, all seeds in one vmapped step; resumes from workdir.

  The stacked checkpoints go to `workdir/checkpoints`, each seed's files to
  `seed_dirs` (default `workdir/seed_<k>`).

  Returns one dict per seed with the keys `loop.train_and_evaluate` returns (its
  `state` is that seed's unstacked TrainState, `setup` the shared one-seed Setup).
  """
  workdir = Path(workdir)
  seeds = [int(s) for s in seeds]
  n = len(seeds)
  if n < 1 or len(set(seeds)) != n:
    raise config_lib.ConfigError(f'seeds: need distinct seeds, got {seeds}')
  t_start = time.perf_counter()
  tok = tokenizer_lib.ByteTokenizer()
  setup, fns = build(cfg, n)
  cfg = setup.cfg
  seed_dirs = [Path(d) for d in seed_dirs] if seed_dirs else [
      workdir / f'seed_{s}' for s in seeds]
  if len(seed_dirs) != n:
    raise ValueError(f'train_seeds: {len(seed_dirs)} seed_dirs for {n} seeds')
  primary = jax.process_index() == 0
  for s, d in zip(seeds, seed_dirs):
    d.mkdir(parents=True, exist_ok=True)
    if primary:
      artifacts.save_config(d, config_lib.replace(cfg, **{'train.seed': s}))
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
  n_params = flops.count_params(params0)
  flops_per_token = flops.train_flops_per_token(
      params0, cfg.model, cfg.data.seq_len)
  peak = cfg.train.flops_peak or flops.measure_matmul_peak()
  writers = [loop._MetricsWriter(d, cfg.train.tensorboard) for d in seed_dirs]  # pylint: disable=protected-access
  t_start -= n * writers[0].previous_wall_s()
  start_step = int(state.step[0])
  histories: list[list[dict[str, float]]] = [[] for _ in seeds]
  recent: list[np.ndarray] = []
  tokens = cfg.data.batch_size * cfg.data.seq_len
  tokens_seen = start_step * tokens
  timed_tokens, timed_s = 0, 0.0
  bar = loop._progress(cfg.train.steps, start_step, cfg.train.progress)  # pylint: disable=protected-access

  def on_step(step: int, m: dict[str, np.ndarray], seconds: float, first: bool):
    nonlocal tokens_seen, timed_tokens, timed_s
    bad = [s for s, ok in zip(seeds, m['finite']) if not ok]
    if bad:
      msg = f'non-finite loss or gradient at step {step} for seeds {bad}'
      if cfg.train.nonfinite == 'stop':
        raise loop.NonFiniteError(msg + '; the state was not updated and no checkpoint '
                                  'of it is written. Set train.nonfinite=skip to skip '
                                  'such steps.')
      print(f'[lattice] skipped step: {msg}')
    tokens_seen += tokens
    if not first:
      timed_tokens += tokens
      timed_s += seconds
    recent.append(m['loss'])
    del recent[:-50]
    if step % cfg.train.log_every == 0 or step == cfg.train.steps:
      tps = timed_tokens / timed_s if timed_s else 0.0
      wall = (time.perf_counter() - t_start) / n
      for i, w in enumerate(writers):
        w.write(step, {**{k: float(v[i]) for k, v in m.items()}, 'tokens_per_s': tps,
                       'mfu': n * tps * flops_per_token / peak, 'wall_s': wall})
    if bar is not None:
      bar.update(1)
      bar.set_postfix(loss=f'{float(np.mean(m["loss"])):.3f}',
                      tok_s=f'{n * timed_tokens / timed_s:.0f}' if timed_s else '-')

  def on_eval(step: int, state):
    for h, w, ev in zip(histories, writers, _evaluate(
        setup, fns['eval_step'], state, eval_batches, n)):
      h.append({'step': step, **ev})
      w.write(step, h[-1])

  state, final_step, preempted = loop.run_steps(
      cfg, setup.mesh, state, fns['train_step'], train_iter, ckpt,
      on_step=lambda step, m, seconds, first: on_step(
          step, {k: np.asarray(v) for k, v in jax.device_get(m).items()}, seconds, first),
      on_eval=on_eval, stop_after=stop_after, bar=bar)

  if preempted:
    print(f'[lattice] SIGTERM: saved step {final_step} of seeds {seeds} to {workdir}')
  finals = (_evaluate(setup, fns['eval_step'], state, eval_batches, n)
            if not preempted else [{} for _ in seeds])
  wall = (time.perf_counter() - t_start) / n
  tps = timed_tokens / timed_s if timed_s else 0.0
  train_loss = (np.mean(np.stack(recent), axis=0) if recent
                else np.full((n,), np.nan))
  outs = []
  for i, (s, d) in enumerate(zip(seeds, seed_dirs)):
    final, history = finals[i], histories[i]
    if final and (not history or history[-1]['step'] != final_step):
      history.append({'step': final_step, **final})
      writers[i].write(final_step, {**final, 'wall_s': wall})
    seed_tps, seed_loss = loop.previous_final(d, bool(timed_s), tps, float(train_loss[i]))
    params = unstack(state.params, i)
    result = {
        **final, 'train_loss': seed_loss, 'params': n_params,
        'active_params': flops.active_params(params, cfg.model),
        'flops_per_token': flops_per_token, 'train_flops': flops_per_token * tokens_seen,
        'tokens': tokens_seen, 'tokens_per_s': seed_tps, 'matmul_peak_flops': peak,
        'mfu': n * seed_tps * flops_per_token / peak, 'wall_s': wall, 'steps': final_step,
        'preempted': preempted, 'history': history, 'vmapped_seeds': seeds,
    }
    if primary:
      (d / 'final_metrics.json').write_text(json.dumps(result, indent=1))
    result['state'] = unstack(state, i)
    result['setup'] = setup
    outs.append(result)
  return outs
