"""Sweeps: every combination of some config values (grids), over seeds, in one table.

A grid is a config key and its values ('model.ffn.kind=dense,moe'); `expand` turns
grids into experiment arms (the first value of every grid is the baseline arm) and
`run_sweep` trains them through `run.arms` in `workdir/<arm>/seed_<k>` (a finished
(arm, seed) is recorded and never rerun, so the same call resumes), then writes
`workdir/sweep.json` (every arm, every seed's numbers, the effects),
`workdir/ablation.md` (`tables.sweep_markdown`) and `workdir/ablation.png`. The
command line is `lattice sweep` (`lattice.cli`).
"""

from __future__ import annotations

import ast
import itertools
import json
import pathlib
import re
from typing import Any, Sequence

import ml_collections

from lattice import config as config_lib
from lattice import storage
from lattice.run import arms as arms_lib
from lattice.run import equal_flops, plots, records, stats, tables

SWEEP_FILE = 'sweep.json'
TABLE_FILE = 'ablation.md'


def parse_value(text: str) -> Any:
  """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, 'bitnet' -> 'bitnet'."""
  text = text.strip()
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
  return value if isinstance(value, (int, float, str)) else text


def parse_grid(spec: str) -> tuple[str, list[Any]]:
  """'model.ffn.kind=dense,moe' -> ('model.ffn.kind', ['dense', 'moe'])."""
  if '=' not in spec:
    raise config_lib.ConfigError(f'--grid {spec!r}: expected KEY=V1,V2,...')
  key, _, values = spec.partition('=')
  key = key.strip()
  if not re.fullmatch(r'[A-Za-z_][\w.]*', key):
    raise config_lib.ConfigError(f'--grid {spec!r}: bad config key {key!r}')
  parsed = [parse_value(v) for v in values.split(',') if v.strip()]
  if not parsed:
    raise config_lib.ConfigError(f'--grid {spec!r}: no values')
  if len(set(map(repr, parsed))) != len(parsed):
    raise config_lib.ConfigError(f'--grid {spec!r}: a value is repeated')
  return key, parsed


def _slug(value: Any) -> str:
  return re.sub(r'[^\w.]+', '_', str(value)).strip('_') or 'x'


def expand(grids: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
  """Every combination, baseline (all first values) first, as experiment arms.

  An arm's name joins its values' folder-safe spellings with '-' ('bitnet-moe');
  values of one grid that spell the same get their index appended.
  """
  keys = [k for k, _ in grids]
  if len(set(keys)) != len(keys):
    raise config_lib.ConfigError(f'--grid: a key is given twice: {keys}')
  slugs = []
  for _, values in grids:
    s = [_slug(v) for v in values]
    slugs.append(s if len(set(s)) == len(s) else [f'{x}_{j}' for j, x in enumerate(s)])
  arms = []
  for idx in itertools.product(*[range(len(v)) for _, v in grids]):
    name = '-'.join(slugs[g][j] for g, j in enumerate(idx)) or 'baseline'
    arms.append({'name': name, 'overrides': {
        keys[g]: grids[g][1][j] for g, j in enumerate(idx)}})
  return arms


def _by_seed(arm: records.Arm, metric: str) -> dict[int, float]:
  """{seed: value} of an arm's metric, in the arm's seed order (values are one per
  seed; an arm whose counts differ is paired by position, as before seeds were
  recorded)."""
  values = list(arm.metrics[metric]['values'])
  seeds = list(arm.seeds) if len(arm.seeds) == len(values) else list(range(len(values)))
  return dict(zip(seeds, values))


def analyze(arms: list[records.Arm], grids: Sequence[tuple[str, list[Any]]],
            metric: str = 'val_loss', level: float = 0.95) -> dict[str, Any]:
  """Differences vs the baseline (the first arm), equal-FLOPs values and, when
  every grid has two or more values, factorial effects.

  An arm trained on the baseline's seeds is compared seed by seed
  (`stats.paired_diff_ci`, the interval the factorial effects use, so one effect
  has one CI in every table and in the plot); otherwise by Welch's interval. Where
  some arms ran more seeds than others (an arm's own `seeds`), the paired
  differences and the factorial effects use the seeds both / all arms ran.
  """
  base = arms[0]
  diffs = {}
  for a in arms:
    if metric in a.metrics and metric in base.metrics:
      va, vb = _by_seed(a, metric), _by_seed(base, metric)
      shared = [s for s in va if s in vb]
      paired = len(shared) >= 2 or (va.keys() == vb.keys())
      diffs[a.name] = (stats.paired_diff_ci([va[s] for s in shared], [vb[s] for s in shared],
                                            level) if paired
                       else stats.diff_ci(list(va.values()), list(vb.values()), level))
      diffs[a.name]['paired'] = paired
  target, at_flops = equal_flops.equal_flops(arms, metric)
  analysis = {'metric': metric, 'baseline': base.name, 'level': level, 'diffs': diffs,
              'equal_flops': {'flops': target, 'values': at_flops}, 'effects': []}
  by_levels = {tuple(a.overrides[k] for k, _ in grids): a for a in arms}
  complete = all(tuple(c) in by_levels for c in itertools.product(
      *[v for _, v in grids]))
  if grids and complete and all(metric in a.metrics for a in arms):
    common = set.intersection(*(set(a.seeds) for a in by_levels.values()))
    cells = {lv: [_by_seed(a, metric)[s] for s in sorted(common)]
             for lv, a in by_levels.items()}
    if common and len({len(v) for v in cells.values()}) == 1:
      analysis['effects'] = stats.factorial_effects(
          cells, [v for _, v in grids], [k.split('.', 1)[-1] for k, _ in grids], level)
  return analysis


def _grid_text(grids) -> str:
  return ' '.join(f'{k}={",".join(map(str, v))}' for k, v in grids or [])


def run_sweep(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
              grids: Sequence[tuple[str, list[Any]]], *, seeds: Sequence[int],
              metric: str = 'val_loss', vmap_seeds: bool | str = 'auto',
              measure=None, title: str = 'Ablation',
              arm_seeds: dict[str, Sequence[int]] | None = None) -> dict[str, Any]:
  """Runs (or resumes) the sweep and writes sweep.json, ablation.md, ablation.png.

  `arm_seeds` gives named arms (`expand`'s names) their own seeds instead of
  `seeds` (e.g. more for the two arms a noisy check compares); the factorial
  effects then use the seeds every arm ran.

  Raises ConfigError before training when `workdir` holds a sweep of other grids
  (whose table this one would replace), an arm's overrides do not fit, or
  `arm_seeds` names an arm the grids do not make.
  """
  workdir = storage.path(workdir)
  previous = workdir / SWEEP_FILE
  if previous.exists():
    before = json.loads(previous.read_text()).get('grids')
    now = records.to_builtin([[k, v] for k, v in grids])
    if before != now:
      raise config_lib.ConfigError(
          f'--workdir: {workdir} holds a sweep of other grids ({_grid_text(before)}); '
          f'its {TABLE_FILE} would be replaced by this one ({_grid_text(now)}). Use '
          'another workdir, or delete that sweep.json to replace it')
  config = ml_collections.ConfigDict(config.to_dict())
  config.arms = expand(grids)
  config.seeds = [int(s) for s in seeds]
  names = [a['name'] for a in config.arms]
  for name, own in (arm_seeds or {}).items():
    if name not in names:
      raise config_lib.ConfigError(f'arm_seeds: no arm {name!r} (arms: {", ".join(names)})')
    config.arms[names.index(name)]['seeds'] = [int(x) for x in own]
  arms_lib.validate_arms(config)  # a typo in a grid key fails before anything trains
  arms, _ = arms_lib.run_arms(config, workdir, measure=measure, skip_finished=True,
                              vmap_seeds=vmap_seeds)
  analysis = analyze(arms, grids, metric)
  # Every other scalar the arms measured, in the order they appear.
  extra = [m for m in dict.fromkeys(k for a in arms for k in a.metrics)
           if m not in (metric, 'mfu')]
  plot = None
  if records.is_primary_process():
    workdir.mkdir(parents=True, exist_ok=True)
    plots.plot_ablation(workdir / 'ablation.png', arms, analysis)
    plot = 'ablation.png'
  text = tables.sweep_markdown(title, arms, grids, analysis, extra, plot)
  out = {'grids': [[k, v] for k, v in grids], 'seeds': list(config.seeds),
         'metric': metric, 'arms': [records.to_builtin(a) for a in arms],
         'analysis': analysis, 'table': text}
  if records.is_primary_process():
    records.write_atomic(workdir / SWEEP_FILE, json.dumps(
        records.to_builtin(out), indent=1) + '\n')
    records.write_atomic(workdir / TABLE_FILE, text)
  out['arm_records'] = arms
  return out
