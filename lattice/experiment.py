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
  """The typed config of one (arm, seed); errors name the arm's bad key.

  With `config.flops_budget` > 0 the arm's steps are set so that it trains for that
  many FLOPs (see `match_flops`), which makes arms of different cost comparable.
  """
  cfg = config_lib.build(config)
  try:
    cfg = config_lib.replace(cfg, **overrides, **{'train.seed': seed})
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'arms: {e}') from None
  budget = float(config.get('flops_budget', 0) or 0)
  return match_flops(cfg, budget) if budget > 0 else cfg


def flops_per_token(cfg: config_lib.Config) -> float:
  """Train FLOPs per token of `cfg`'s model, from abstract shapes (nothing is run)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from lattice import model as model_lib  # pylint: disable=g-import-not-at-top
  cfg = loop.resolve(cfg)
  model = model_lib.make_model(cfg.model)
  boxed = jax.eval_shape(model.init, jax.random.key(0), model_lib.init_batch(cfg))
  params = nn.unbox(boxed)['params']
  return model_lib.train_flops_per_token(params, cfg.model, cfg.data.seq_len)


# Step counts that scale with the run length when match_flops changes it.
_STEP_FIELDS = ('optimizer.warmup_steps', 'train.eval_every', 'train.log_every',
                'checkpoint.every', 'model.mtp.lam_switch_step')


def match_flops(cfg: config_lib.Config, budget: float) -> config_lib.Config:
  """`cfg` with train.steps set so that steps x tokens/step x FLOPs/token ~ budget.

  FLOPs per token count active parameters (MoE experts at k/E) plus attention, so
  arms that cost more per token train on fewer tokens. Warmup, eval, log, checkpoint
  intervals and the MTP lambda switch scale with the steps. Raises ConfigError when
  the budget buys less than one step.
  """
  tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
  fpt = flops_per_token(cfg)
  steps = int(round(budget / (fpt * tokens_per_step)))
  if steps < 1:
    raise config_lib.ConfigError(
        f'flops_budget: {budget:.3g} FLOPs buys less than one step of this arm '
        f'({fpt * tokens_per_step:.3g} FLOPs per step)')
  ratio = steps / cfg.train.steps
  fields = {'train.steps': steps}
  for path in _STEP_FIELDS:
    section, *rest = path.split('.')
    value = getattr(cfg, section)
    for name in rest:
      value = getattr(value, name)
    if value > 0:
      fields[path] = max(1, int(round(value * ratio)))
  return config_lib.replace(cfg, **fields)


def _record_key(cfg: config_lib.Config, config: ml_collections.ConfigDict) -> str:
  """What identifies a finished (arm, seed): its full typed config and the
  experiment's own settings (prompts, budgets...), hashed."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import hashlib  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  own = {k: v for k, v in config.to_dict().items()
         if k not in config_lib.SECTIONS and k not in ('arms', 'seeds', 'mode')}
  text = json.dumps({'config': dataclasses.asdict(cfg), 'experiment': own},
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


RECORD_FILE = 'record.json'


class Preempted(RuntimeError):
  """A run saved on SIGTERM before finishing; rerunning resumes it."""


def _load_record(run_dir: Path, key: str) -> dict | None:
  """The finished (arm, seed)'s record, None if not finished; a record of a
  different config is an error (its checkpoints would be resumed by mistake)."""
  import json  # pylint: disable=g-import-not-at-top
  path = run_dir / RECORD_FILE
  if not path.exists():
    return None
  record = json.loads(path.read_text())
  if record.get('key') != key:
    raise config_lib.ConfigError(
        f'{run_dir} holds a finished run of a different config (record key '
        f'{record.get("key")} vs {key}); use another workdir or delete that folder')
  return record


def _write_record(run_dir: Path, key: str, scalars: dict, out: dict) -> None:
  import json  # pylint: disable=g-import-not-at-top
  keep = {k: v for k, v in out.items() if k not in ('state', 'setup')}
  results._write_atomic(run_dir / RECORD_FILE, json.dumps(  # pylint: disable=protected-access
      {'key': key, 'measured': scalars, 'out': results._builtin(keep)}, indent=1))  # pylint: disable=protected-access


def _use_vmap(vmap_seeds: bool | str, cfg: config_lib.Config, n: int) -> bool:
  if vmap_seeds == 'auto':
    # Small models, one process, an accelerator. On CPU the vmapped step measured
    # slower than S separate steps (0.75-0.91x, benchmarks/seed_vmap.py in
    # BENCHMARKS.md) except at toy sizes where per-step overhead dominates.
    import jax  # pylint: disable=g-import-not-at-top
    return (n > 1 and jax.process_count() == 1 and jax.default_backend() != 'cpu'
            and flops_per_token(cfg) < 1e8)
  return bool(vmap_seeds) and n > 1


def run_arms(config: ml_collections.ConfigDict, workdir: str | Path, *,
             measure: Callable[[config_lib.Config, dict], dict] | None = None,
             skip_finished: bool = False, vmap_seeds: bool | str = False,
             ) -> tuple[list[results.Arm], dict[str, list[dict]]]:
  """Trains every arm x seed; returns Arms and each arm's per-seed raw outputs.

  Each (arm, seed) runs in `workdir/<arm>/seed_<k>`, resuming its checkpoints. With
  `skip_finished`, a finished (arm, seed) (its `record.json` written, with the same
  config) is not rerun at all: its recorded metrics and measurements are reused, and
  its raw output lacks `state`. With `vmap_seeds` (True, or 'auto': small models,
  one process, not CPU) an arm's unfinished seeds train together in one vmapped step
  (`lattice.train.vmap_seeds`, checkpoints in `workdir/<arm>/vmap_<seeds>`).
  """
  workdir = Path(workdir)
  seeds = list(config.get('seeds', [0]))
  arms, raw = [], {}
  for name, overrides in arm_list(config):
    first_cfg = arm_config(config, overrides, seeds[0])  # FLOP matching: once per arm
    cfgs = {seed: config_lib.replace(first_cfg, **{'train.seed': seed}) for seed in seeds}
    keys = {seed: _record_key(cfgs[seed], config) for seed in seeds}
    done: dict[int, dict] = {}
    if skip_finished:
      for seed in seeds:
        record = _load_record(workdir / name / f'seed_{seed}', keys[seed])
        if record is not None:
          done[seed] = {**record['out'], 'measured': record['measured']}
          print(f'[lattice] arm {name!r} seed {seed}: finished, not rerun')
    todo = [s for s in seeds if s not in done]
    fresh: dict[int, dict] = {}
    if todo and _use_vmap(vmap_seeds, cfgs[todo[0]], len(todo)):
      from lattice.train import vmap_seeds as vmap_lib  # pylint: disable=g-import-not-at-top
      print(f'[lattice] arm {name!r} seeds {todo} (vmapped)')
      group = workdir / name / ('vmap_' + '-'.join(map(str, todo)))
      outs = vmap_lib.train_seeds(cfgs[todo[0]], todo, group, seed_dirs=[
          workdir / name / f'seed_{seed}' for seed in todo])
      fresh.update(zip(todo, outs))
    else:
      for seed in todo:
        print(f'[lattice] arm {name!r} seed {seed}')
        fresh[seed] = loop.train_and_evaluate(cfgs[seed], workdir / name / f'seed_{seed}')
    for seed, out in fresh.items():
      if out.get('preempted'):
        raise Preempted(f'arm {name!r} seed {seed} saved its checkpoint on SIGTERM; '
                        'rerun the same command to resume')
      scalars = {k: float(out[k]) for k in SCALARS if k in out}
      if measure is not None:
        scalars.update(measure(
            config_lib.replace(out['setup'].cfg, **{'train.seed': seed}), out))
      run_dir = workdir / name / f'seed_{seed}'
      _write_record(run_dir, keys[seed], scalars, out)
      done[seed] = {k: v for k, v in out.items() if k not in ('state', 'setup')} | {
          'measured': scalars}
    outs = [done[seed] | {'seed': seed} for seed in seeds]
    first = outs[0]
    arms.append(results.Arm(
        name=name, overrides=overrides,
        metrics=results.aggregate([o['measured'] for o in outs]),
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


def eval_prompts(cfg: config_lib.Config, n: int, length: int) -> list:
  """The first `length` tokens of `n` validation windows of `cfg`'s text data, each
  [1, length] (prompts for decoding measurements)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lattice.data import pipeline, tokenizer  # pylint: disable=g-import-not-at-top
  batches = pipeline.make_eval_batches(cfg.data, tokenizer.ByteTokenizer(), 4)
  rows = np.concatenate([b['inputs'] for b in batches])
  return [rows[i:i + 1, :length] for i in range(min(n, len(rows)))]


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
