"""An experiment's arms x seeds, each trained through the one train loop.

An experiment config lists its arms (`config.arms`: a list of {name, overrides}, and
optionally the arm's own `seeds`) and seeds (`config.seeds`, every arm's unless it
lists its own); `run_arms` trains and evaluates each (arm, seed) in
`workdir/<arm>/seed_<k>` (so a rerun resumes), optionally measures more with
`measure(cfg, out: RunOutput) -> dict`, and aggregates over seeds into the
`records.Arm`s a Result holds. A finished (arm, seed) leaves `record.json` (its
config's hash, measured scalars and metrics), so a sweep can skip it on rerun.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import signal
from pathlib import Path
from typing import Any, Callable

import ml_collections

from lattice import config as config_lib
from lattice import storage
from lattice.run import budget as budget_lib
from lattice.run import records, stats
from lattice.train import loop
from lattice.train import vmap_seeds as vmap_lib
from lattice.train.recorder import RunOutput

RECORD_FILE = 'record.json'
# What a run reports that is not an aggregated scalar metric.
_NOT_SCALAR = ('params', 'active_params', 'flops_per_token', 'train_flops', 'tokens',
               'matmul_peak_flops', 'wall_s', 'steps', 'preempted', 'history',
               'vmapped_seeds')


class Preempted(RuntimeError):
  """A run saved on SIGTERM before finishing; rerunning resumes it."""


# The exit status of `lattice run` / `lattice sweep` after a preempted run saved its
# checkpoint: 128 + SIGTERM, the shell's status for "ended by SIGTERM". A supervisor
# (a Kubernetes Job's restart policy, Slurm --requeue, a shell `until` loop) then
# reruns the command, which resumes; status 0 would mark the unfinished run done.
PREEMPTED_EXIT = 128 + signal.SIGTERM  # 143


def arm_list(config: ml_collections.ConfigDict) -> list[tuple[str, dict[str, Any]]]:
  """(name, overrides) of each arm; one 'baseline' arm when the config lists none."""
  arms = config.get('arms') or [{'name': 'baseline', 'overrides': {}}]
  return [(dict(a)['name'], dict(dict(a).get('overrides', {}))) for a in arms]


def arm_seeds(config: ml_collections.ConfigDict) -> dict[str, list[int]]:
  """{arm name: the seeds it runs}: the arm's own `seeds` where it lists them (e.g.
  more seeds for the two arms a noisy pre-registered check compares), else
  `config.seeds` (default [0]). Raises ConfigError for an empty or repeated list."""
  default = [int(s) for s in (config.get('seeds') or [0])]
  out = {}
  for a in (config.get('arms') or [{'name': 'baseline'}]):
    a = dict(a)
    seeds = [int(s) for s in a['seeds']] if a.get('seeds') is not None else default
    if not seeds or len(set(seeds)) != len(seeds):
      raise config_lib.ConfigError(
          f'arms: {a["name"]}: seeds must be a non-empty list without repeats, '
          f'got {seeds}')
    out[a['name']] = seeds
  return out


def arm_config(config: ml_collections.ConfigDict, overrides: dict[str, Any],
               seed: int, *, fpt: float | None = None) -> config_lib.Config:
  """The typed config of one (arm, seed); errors name the arm's bad key.

  With `config.flops_budget` > 0 the arm's steps are set so that it trains for that
  many FLOPs (`budget.match_flops`; `fpt` reuses a FLOPs-per-token count).
  """
  cfg = config_lib.build(config)
  try:
    cfg = config_lib.replace(cfg, **overrides, **{'train.seed': seed})
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'arms: {e}') from None
  flops_budget = float(config.get('flops_budget', 0) or 0)
  return budget_lib.match_flops(cfg, flops_budget, fpt) if flops_budget > 0 else cfg


def validate_arms(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the first arm whose overrides do not fit the config
  (no model is built: FLOP budgets are matched later, once per arm)."""
  base = config_lib.build(config)
  arm_seeds(config)
  for name, overrides in arm_list(config):
    try:
      config_lib.replace(base, **overrides)
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f'arms: {name}: {e}') from None


def record_key(cfg: config_lib.Config, config: ml_collections.ConfigDict) -> str:
  """What identifies a finished (arm, seed): its full typed config and the
  experiment's own settings (prompts, budgets...), hashed (16 hex digits)."""
  own = {k: v for k, v in config.to_dict().items()
         if k not in config_lib.SECTIONS and k not in ('arms', 'seeds', 'mode')}
  text = json.dumps({'config': dataclasses.asdict(cfg), 'experiment': own},
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_record(run_dir: Path, key: str) -> dict | None:
  """The finished (arm, seed)'s record, None if not finished; a record of a
  different config is a ConfigError (its checkpoints would be resumed by mistake)."""
  path = run_dir / RECORD_FILE
  if not path.exists():
    return None
  record = json.loads(path.read_text())
  if record.get('key') != key:
    raise config_lib.ConfigError(
        f'{run_dir} holds a finished run of a different config (record key '
        f'{record.get("key")} vs {key}); use another workdir or delete that folder')
  return record


def write_record(run_dir: Path, key: str, scalars: dict, metrics: dict) -> None:
  records.write_atomic(run_dir / RECORD_FILE, json.dumps(
      {'key': key, 'measured': scalars, 'out': records.to_builtin(metrics)}, indent=1))


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
  """The run's scalar metrics (losses, rates, and whatever a technique's eval adds),
  without counts, costs and bookkeeping."""
  return {k: float(v) for k, v in metrics.items()
          if k not in _NOT_SCALAR and isinstance(v, (int, float)) and
          not isinstance(v, bool)}


def use_vmap(vmap_seeds: bool | str, n: int, fpt: Callable[[], float]) -> bool:
  """Whether an arm's `n` seeds train in one vmapped step; `fpt()` gives FLOPs/token."""
  if vmap_seeds == 'auto':
    # Small models, one process, an accelerator. On CPU the vmapped step measured
    # slower than S separate steps (0.75-0.91x, benchmarks/seed_vmap.py in
    # BENCHMARKS.md) except at toy sizes where per-step overhead dominates.
    import jax  # pylint: disable=g-import-not-at-top
    return (n > 1 and jax.process_count() == 1 and jax.default_backend() != 'cpu'
            and fpt() < 1e8)
  return bool(vmap_seeds) and n > 1


def _train(name: str, cfgs: dict[int, config_lib.Config], todo: list[int],
           workdir: Path, vmap: bool) -> dict[int, RunOutput]:
  if vmap:
    print(f'[lattice] arm {name!r} seeds {todo} (vmapped)')
    group = workdir / name / ('vmap_' + '-'.join(map(str, todo)))
    outs = vmap_lib.train_seeds(cfgs[todo[0]], todo, group, seed_dirs=[
        workdir / name / f'seed_{seed}' for seed in todo])
    return dict(zip(todo, outs))
  fresh = {}
  for seed in todo:
    print(f'[lattice] arm {name!r} seed {seed}')
    fresh[seed] = loop.train_and_evaluate(cfgs[seed], workdir / name / f'seed_{seed}')
    if fresh[seed].metrics.get('preempted'):
      break  # saved on SIGTERM: start no further seed (the caller raises Preempted)
  return fresh


def run_arms(config: ml_collections.ConfigDict, workdir: str | Path, *,
             measure: Callable[[config_lib.Config, RunOutput], dict] | None = None,
             skip_finished: bool = False, vmap_seeds: bool | str = False,
             ) -> tuple[list[records.Arm], dict[str, list[dict]]]:
  """Trains every arm x seed (`arm_seeds`); returns Arms and each arm's per-seed
  metrics.

  Each (arm, seed) runs in `workdir/<arm>/seed_<k>`, resuming its checkpoints. With
  `skip_finished`, a finished (arm, seed) (its `record.json` written, with the same
  config) is not rerun at all: its recorded metrics and measurements are reused.
  With `vmap_seeds` (True, or 'auto': small models, one process, not CPU) an arm's
  unfinished seeds train together in one vmapped step (`lattice.train.vmap_seeds`,
  checkpoints in `workdir/<arm>/vmap_<seeds>`). FLOPs per token are counted at most
  once per arm (for the budget and the vmap policy). Raises Preempted when a run
  saved on SIGTERM.
  """
  workdir = storage.path(workdir)
  seeds_of = arm_seeds(config)
  flops_budget = float(config.get('flops_budget', 0) or 0)
  arms, raw = [], {}
  for name, overrides in arm_list(config):
    seeds = seeds_of[name]
    fpt_cache: list[float] = []

    def fpt(cfg: config_lib.Config) -> float:
      if not fpt_cache:
        fpt_cache.append(budget_lib.flops_per_token(cfg))
      return fpt_cache[0]

    base = arm_config(config, overrides, seeds[0])
    first_cfg = arm_config(config, overrides, seeds[0],
                           fpt=fpt(base)) if flops_budget > 0 else base
    cfgs = {seed: config_lib.replace(first_cfg, **{'train.seed': seed}) for seed in seeds}
    keys = {seed: record_key(cfgs[seed], config) for seed in seeds}
    done: dict[int, dict] = {}
    if skip_finished:
      for seed in seeds:
        record = load_record(workdir / name / f'seed_{seed}', keys[seed])
        if record is not None:
          done[seed] = {**record['out'], 'measured': record['measured']}
          print(f'[lattice] arm {name!r} seed {seed}: finished, not rerun')
    todo = [s for s in seeds if s not in done]
    vmap = bool(todo) and use_vmap(vmap_seeds, len(todo), lambda: fpt(first_cfg))
    for seed, out in _train(name, cfgs, todo, workdir, vmap).items():
      if out.metrics.get('preempted'):
        raise Preempted(f'arm {name!r} seed {seed} saved its checkpoint on SIGTERM; '
                        'rerun the same command to resume')
      scalars = scalar_metrics(out.metrics)
      if measure is not None:
        scalars.update(measure(
            config_lib.replace(out.setup.cfg, **{'train.seed': seed}), out))
      write_record(workdir / name / f'seed_{seed}', keys[seed], scalars, out.metrics)
      done[seed] = {**out.metrics, 'measured': scalars}
    outs = [done[seed] | {'seed': seed} for seed in seeds]
    first = outs[0]
    arms.append(records.Arm(
        name=name, overrides=overrides,
        metrics=stats.aggregate([o['measured'] for o in outs]),
        params=int(first['params']), active_params=int(first['active_params']),
        train_flops=float(first['train_flops']), tokens=int(first['tokens']),
        wall_s=sum(o['wall_s'] for o in outs), seeds=seeds,
        extra={'history': [o['history'] for o in outs]}))
    raw[name] = outs
  return arms, raw
