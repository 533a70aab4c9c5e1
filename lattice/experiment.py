"""What an experiment file uses, in one import: configs, arms, checks, plots, Result.

An experiment file (experiments/*.py) defines the module constants NAME, PAPER
({'title', 'arxiv'}) and CLAIM, `get_config(mode)` (modes built with `pick_mode`
over `lm_config`, written as named assignments) and `run(config, workdir)`, which
trains its arms (`run_arms`), turns the claim into `check`s and ends with
`finish(__name__, config, workdir, ...)`, which builds and writes the Result. The
machinery lives in `lattice.run` (one idea per file); this module gathers it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import ml_collections

from lattice import config as config_lib
from lattice import storage
from lattice.run import records
from lattice.run.arms import arm_config, run_arms  # pylint: disable=unused-import
from lattice.run.budget import flops_per_token  # pylint: disable=unused-import
from lattice.run.config_file import load_experiment_module  # pylint: disable=unused-import
from lattice.run.plots import plot_bars, plot_series, plot_training  # pylint: disable=unused-import
from lattice.run.records import Arm, Result, check  # pylint: disable=unused-import
from lattice.run.stats import aggregate  # pylint: disable=unused-import

__all__ = ['Arm', 'Result', 'aggregate', 'arm_config', 'check', 'finish', 'flops_per_token',
           'lm_config', 'load_experiment_module', 'metric_curve', 'pick_mode', 'plot_bars',
           'plot_series', 'plot_training', 'run_arms']


def result_env(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The Result's `env`: software and devices, plus what data the run trained on."""
  from lattice.data import pipeline  # pylint: disable=g-import-not-at-top
  return {**records.env_info(), 'data': pipeline.describe(config_lib.build(config).data)}


def finish(module_name: str, config: ml_collections.ConfigDict, workdir: str | Path, *,
           arms: list[Arm], checks: list[records.Check], headline: dict[str, str],
           plots: list[str] = (), notes: str = '', env: dict | None = None) -> Result:
  """The experiment's Result, written to `workdir` (result.json, table.md).

  `module_name` is the experiment module's `__name__`; its NAME, PAPER and CLAIM
  constants fill the Result's experiment, paper and claim. Raises AttributeError
  naming a missing constant.
  """
  module = sys.modules[module_name]
  missing = [c for c in ('NAME', 'PAPER', 'CLAIM') if not hasattr(module, c)]
  if missing:
    raise AttributeError(f'{module_name}: an experiment module needs the constants '
                         f'{", ".join(missing)}')
  result = Result(
      experiment=module.NAME, paper=module.PAPER,
      claim=' '.join(module.CLAIM.split()), mode=config.mode, arms=list(arms),
      checks=list(checks), headline=headline, plots=list(plots), notes=notes,
      env=env if env is not None else result_env(config))
  result.write(workdir)
  return result


def metric_curve(run_dir: str | Path, key: str) -> tuple[list[int], list[float]]:
  """(steps, values) of `key` over a run's metrics.jsonl (all sessions of a resumed run)."""
  lines = (storage.path(run_dir) / 'metrics.jsonl').read_text().splitlines()
  rows = [r for r in map(json.loads, lines) if key in r]
  return [r['step'] for r in rows], [r[key] for r in rows]


def eval_prompts(cfg: config_lib.Config, n: int, length: int) -> list:
  """The first `length` tokens of `n` validation windows of `cfg`'s text data, each
  [1, length] (prompts for decoding measurements)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from lattice.data import pipeline, tokenizer  # pylint: disable=g-import-not-at-top
  batches = pipeline.make_eval_batches(cfg.data, tokenizer.make_tokenizer(cfg.data.tokenizer), 4)
  rows = np.concatenate([b['inputs'] for b in batches])
  return [rows[i:i + 1, :length] for i in range(min(n, len(rows)))]


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
