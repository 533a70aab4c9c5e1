"""Running an experiment's arms over seeds through the one train loop.

An experiment file lists its arms in its ConfigDict (`config.arms`: a list of
{name, overrides}) and its seeds (`config.seeds`); `run_arms` trains and evaluates
each (arm, seed) in `workdir/<arm>/seed_<k>` (so a rerun resumes), optionally
measures more with `measure(cfg, out) -> dict`, and aggregates over seeds into the
`results.Arm` records a Result holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import ml_collections

from lattice import config as config_lib
from lattice import results
from lattice.train import loop

SCALARS = ('val_loss', 'val_bpb', 'train_loss', 'tokens_per_s', 'mfu', 'maxvio_global')


def load_experiment_module(path: str):
  """Imports an experiment file by path (for `run` and `get_config`)."""
  import importlib.util
  p = Path(path)
  if not p.is_file():
    raise config_lib.ConfigError(
        f'--config: no such experiment file: {path!r} (expected FILE.py:MODE, e.g. '
        f'experiments/baseline_lm.py:smoke)')
  spec = importlib.util.spec_from_file_location(f'lattice_experiment_{p.stem}', p)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for name in ('get_config', 'run'):
    if not hasattr(module, name):
      raise config_lib.ConfigError(f'--config: {path} defines no `{name}` function')
  return module


def arm_list(config: ml_collections.ConfigDict) -> list[tuple[str, dict[str, Any]]]:
  arms = config.get('arms') or [{'name': 'baseline', 'overrides': {}}]
  out = []
  for arm in arms:
    arm = dict(arm)
    out.append((arm['name'], dict(arm.get('overrides', {}))))
  return out


def arm_config(config: ml_collections.ConfigDict, overrides: dict[str, Any],
               seed: int) -> config_lib.Config:
  """The typed config of one (arm, seed); errors name the arm's bad key."""
  cfg = config_lib.build(config)
  try:
    return config_lib.replace(cfg, **overrides, **{'train.seed': seed})
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'arms: {e}') from None


def run_arms(config: ml_collections.ConfigDict, workdir: str | Path, *,
             measure: Callable[[config_lib.Config, dict], dict] | None = None,
             ) -> tuple[list[results.Arm], dict[str, list[dict]]]:
  """Trains every arm x seed; returns Arms and each arm's per-seed raw outputs."""
  workdir = Path(workdir)
  seeds = list(config.get('seeds', [0]))
  arms, raw = [], {}
  for name, overrides in arm_list(config):
    per_seed, outs = [], []
    for seed in seeds:
      cfg = arm_config(config, overrides, seed)
      print(f'[lattice] arm {name!r} seed {seed}')
      out = loop.train_and_evaluate(cfg, workdir / name / f'seed_{seed}')
      scalars = {k: float(out[k]) for k in SCALARS if k in out}
      if measure is not None:
        scalars.update(measure(out['setup'].cfg, out))
      per_seed.append(scalars)
      outs.append({k: v for k, v in out.items() if k not in ('state', 'setup')}
                  | {'seed': seed, 'measured': scalars})
    first = outs[0]
    arms.append(results.Arm(
        name=name, overrides=overrides, metrics=results.aggregate(per_seed),
        params=int(first['params']), active_params=int(first['active_params']),
        train_flops=float(first['train_flops']), tokens=int(first['tokens']),
        wall_s=sum(o['wall_s'] for o in outs), seeds=seeds,
        extra={'history': [o['history'] for o in outs]}))
    raw[name] = outs
  return arms, raw


def metric_curve(run_dir: str | Path, key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of `key` over a run's metrics.jsonl (all sessions of a resumed run)."""
  import json
  lines = (Path(run_dir) / 'metrics.jsonl').read_text().splitlines()
  rows = [r for r in map(json.loads, lines) if key in r]
  return [r['step'] for r in rows], [r[key] for r in rows]


def result_env(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The Result's `env`: software and devices, plus what data the run trained on."""
  from lattice.data import pipeline
  return {**results.env_info(), 'data': pipeline.describe(config_lib.build(config).data)}


def lm_config(d_model: int, n_layers: int, n_heads: int, seq_len: int, batch: int,
              steps: int, lr: float, *, warmup: int | None = None, eval_every: int = 0,
              max_len: int | None = None, log_points: int = 50, checkpoints: int = 2,
              **model: Any) -> ml_collections.ConfigDict:
  """The common experiment config: an LM on the stdlib corpus, one seed, one arm.

  `model` adds model fields (e.g. ffn=dict(kind='moe', ...)); the experiment then
  sets its own `arms`, `seeds` and extra keys.
  """
  return ml_collections.ConfigDict(dict(
      model=dict(d_model=d_model, n_layers=n_layers, max_len=max_len or seq_len,
                 attention=dict(n_heads=n_heads), **model),
      data=dict(source='stdlib', seq_len=seq_len, batch_size=batch, eval_batches=16),
      optimizer=dict(lr=lr, warmup_steps=max(steps // 20, 1) if warmup is None else warmup),
      train=dict(steps=steps, log_every=max(steps // log_points, 1), eval_every=eval_every),
      checkpoint=dict(every=max(steps // checkpoints, 1)),
      seeds=[0], arms=[dict(name='baseline', overrides={})]))


def pick_mode(arg: str | None, modes: dict[str, Callable[[], Any]]
              ) -> ml_collections.ConfigDict:
  """`get_config(arg)` helper: the mode's config over the library defaults.

  The mode's ConfigDict is merged onto every section's defaults, so any field
  (`--config.mesh.tensor=2`, `--config.checkpoint.keep=5`) can be overridden on the
  command line even when the experiment leaves it at its default, and a mistyped
  key is reported by name. An unknown mode raises a ConfigError listing the modes.
  """
  arg = arg or 'smoke'
  if arg not in modes:
    raise config_lib.ConfigError(
        f'--config: unknown mode {arg!r}; choose one of {", ".join(modes)}')
  config = config_lib.to_config_dict(config_lib.Config())
  try:
    config.update(modes[arg]())
  except TypeError as e:  # ConfigDict's type safety: a default's type was changed.
    raise config_lib.ConfigError(f'--config: mode {arg!r} sets a field to the wrong '
                                 f'type: {e}') from None
  config.mode = arg
  return config
