r"""`lattice sweep`: every combination of some config values, over seeds, in one table.

  lattice sweep experiments/baseline_lm.py:smoke --workdir runs/sweep \
      --grid 'model.linear.kind=float,bitnet' --grid 'model.ffn.kind=dense,moe' \
      --seeds 3 [--flops-budget 3e12] [--vmap-seeds auto|on|off] [--set key=value]

Each arm (one value per grid) x seed trains through the one train loop in
`workdir/<arm>/seed_<k>`; a finished (arm, seed) is recorded there and never rerun,
so the same command resumes a sweep. The first value of every grid is the baseline
arm. The result is `workdir/sweep.json` (every arm, every seed's numbers, the
effects) and `workdir/ablation.md`: mean ± std over seeds, the difference vs the
baseline with a 95% Welch t interval, the metric read at equal training FLOPs, and
for grids of two values each, main effects and two-way interactions estimated per
seed (seeds are replicates of the whole factorial) with t intervals over seeds.

`--flops-budget F` sets each arm's steps so it trains for F FLOPs (active
parameters x tokens, see `lattice.experiment.match_flops`).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import math
import pathlib
import re
import sys
from typing import Any, Sequence

import ml_collections

from lattice import config as config_lib
from lattice import results

SWEEP_FILE = 'sweep.json'
TABLE_FILE = 'ablation.md'


# ---------------------------------------------------------------------------
# Grids


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


# ---------------------------------------------------------------------------
# Statistics


def t_quantile(p: float, df: float) -> float:
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf(p, df))


def _mean_var(xs: Sequence[float]) -> tuple[float, float, int]:
  n = len(xs)
  mean = sum(xs) / n
  var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else float('nan')
  return mean, var, n


def diff_ci(arm: Sequence[float], base: Sequence[float], level: float = 0.95
            ) -> dict[str, float]:
  """mean(arm) - mean(base) and its Welch t interval (NaN bounds with < 2 seeds)."""
  ma, va, na = _mean_var(arm)
  mb, vb, nb = _mean_var(base)
  diff = ma - mb
  if na < 2 or nb < 2:
    return {'diff': diff, 'lo': float('nan'), 'hi': float('nan'), 'df': float('nan')}
  se2 = va / na + vb / nb
  if se2 == 0:
    return {'diff': diff, 'lo': diff, 'hi': diff, 'df': float(na + nb - 2)}
  df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
  half = t_quantile(0.5 + level / 2, df) * math.sqrt(se2)
  return {'diff': diff, 'lo': diff - half, 'hi': diff + half, 'df': df}


def mean_ci(xs: Sequence[float], level: float = 0.95) -> dict[str, float]:
  """Mean and its one-sample t interval (NaN bounds with < 2 values)."""
  mean, var, n = _mean_var(xs)
  if n < 2:
    return {'mean': mean, 'lo': float('nan'), 'hi': float('nan'), 'n': n}
  half = t_quantile(0.5 + level / 2, n - 1) * math.sqrt(var / n)
  return {'mean': mean, 'lo': mean - half, 'hi': mean + half, 'n': n}


def factorial_effects(cells: dict[tuple, list[float]], levels: Sequence[Sequence[Any]],
                      names: Sequence[str], level: float = 0.95) -> list[dict[str, Any]]:
  """Main effects and two-way interactions of a full factorial, per replicate.

  `cells` maps a tuple of levels (one per factor) to the per-seed values, in the
  same seed order in every cell. For each seed: the main effect of level j of
  factor f is the mean over the other factors' cells of y(f=j) - y(f=0); the
  interaction of f=a and g=b is the mean of (y(a,b) - y(0,b)) - (y(a,0) - y(0,0)),
  i.e. how much the effect of f changes when g moves off its baseline. Estimates
  are the mean over seeds with a t interval over seeds.
  """
  n_seeds = {len(v) for v in cells.values()}
  if len(n_seeds) != 1:
    raise ValueError(f'factorial_effects: cells have different seed counts {n_seeds}')
  n = n_seeds.pop()
  effects = []

  def contrast(fn) -> list[float]:
    return [fn(i) for i in range(n)]

  def mean_over_others(fixed: dict[int, Any], i: int) -> float:
    free = [f for f in range(len(levels)) if f not in fixed]
    vals = []
    for combo in itertools.product(*[levels[f] for f in free]):
      lv = dict(zip(free, combo)) | fixed
      vals.append(cells[tuple(lv[f] for f in range(len(levels)))][i])
    return sum(vals) / len(vals)

  for f, lv in enumerate(levels):
    for j in lv[1:]:
      per_seed = contrast(lambda i, f=f, j=j: mean_over_others({f: j}, i)
                          - mean_over_others({f: lv[0]}, i))
      effects.append({'effect': f'{names[f]}: {j} vs {lv[0]}', 'kind': 'main',
                      'per_seed': per_seed, **mean_ci(per_seed, level)})
  for f, g in itertools.combinations(range(len(levels)), 2):
    f0, g0 = levels[f][0], levels[g][0]
    for a in levels[f][1:]:
      for b in levels[g][1:]:
        def inter(i, f=f, g=g, a=a, b=b, f0=f0, g0=g0):
          y = lambda x, z: mean_over_others({f: x, g: z}, i)
          return (y(a, b) - y(f0, b)) - (y(a, g0) - y(f0, g0))
        per_seed = contrast(inter)
        effects.append({'effect': f'{names[f]}={a} x {names[g]}={b}',
                        'kind': 'interaction', 'per_seed': per_seed,
                        **mean_ci(per_seed, level)})
  return effects


# ---------------------------------------------------------------------------
# Analysis and table


def analyze(arms: list[results.Arm], grids: Sequence[tuple[str, list[Any]]],
            metric: str = 'val_loss', level: float = 0.95) -> dict[str, Any]:
  """Differences vs the baseline (the first arm), equal-FLOPs values and, when
  every grid has two or more values, factorial effects."""
  base = arms[0]
  diffs = {}
  for a in arms:
    if metric in a.metrics and metric in base.metrics:
      diffs[a.name] = diff_ci(a.metrics[metric]['values'],
                              base.metrics[metric]['values'], level)
  target, at_flops = results.equal_flops(arms, metric)
  analysis = {'metric': metric, 'baseline': base.name, 'level': level, 'diffs': diffs,
              'equal_flops': {'flops': target, 'values': at_flops}, 'effects': []}
  by_levels = {tuple(a.overrides[k] for k, _ in grids): a for a in arms}
  complete = all(tuple(c) in by_levels for c in itertools.product(
      *[v for _, v in grids]))
  if grids and complete and all(metric in a.metrics for a in arms):
    cells = {lv: a.metrics[metric]['values'] for lv, a in by_levels.items()}
    if len({len(v) for v in cells.values()}) == 1:
      analysis['effects'] = factorial_effects(
          cells, [v for _, v in grids], [k.split('.', 1)[-1] for k, _ in grids], level)
  return analysis


def _ci(d: dict[str, float]) -> str:
  diff = f'{d["diff"]:+.4g}'
  if math.isnan(d['lo']):
    return f'{diff} (1 seed: no CI)'
  star = ' *' if d['lo'] > 0 or d['hi'] < 0 else ''
  return f'{diff} [{d["lo"]:+.3g}, {d["hi"]:+.3g}]{star}'


def ablation_table(arms: list[results.Arm], grids: Sequence[tuple[str, list[Any]]],
                   analysis: dict[str, Any], extra_metrics: Sequence[str] = ()) -> str:
  """The markdown ablation table: one row per arm."""
  metric = analysis['metric']
  pct = int(round(analysis['level'] * 100))
  flops_at = analysis['equal_flops']['flops']
  keys = [k for k, _ in grids]
  header = ([k.split('.', 1)[-1] for k in keys] +
            [metric, f'Δ vs {analysis["baseline"]} [{pct}% CI]',
             f'{metric} @ {results.fmt_sci(flops_at)} FLOPs'] + list(extra_metrics) +
            ['active params', 'train FLOPs', 'tokens', 'seeds', 'wall s'])
  rows = ['| arm | ' + ' | '.join(results.cell(h) for h in header) + ' |',
          '|' + '---|' * (len(header) + 1)]
  for a in arms:
    d = analysis['diffs'].get(a.name)
    row = [f'**{results.cell(a.name)}**'] + [results.cell(a.overrides.get(k, '—'))
                                            for k in keys]
    row += [results.fmt_mean_std(a.metrics.get(metric)),
            '(baseline)' if a.name == analysis['baseline'] else (_ci(d) if d else '—'),
            results.fmt_mean_std(analysis['equal_flops']['values'].get(a.name))]
    row += [results.fmt_mean_std(a.metrics.get(m)) for m in extra_metrics]
    row += [results.fmt_count(a.active_params), results.fmt_sci(a.train_flops),
            results.fmt_count(a.tokens), str(len(a.seeds)), f'{a.wall_s:.0f}']
    rows.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(rows)


def effects_table(analysis: dict[str, Any]) -> str:
  if not analysis['effects']:
    return ''
  pct = int(round(analysis['level'] * 100))
  rows = [f'| effect on {analysis["metric"]} | kind | estimate | {pct}% CI | seeds |',
          '|---|---|---|---|---|']
  for e in analysis['effects']:
    ci = ('—' if math.isnan(e['lo']) else
          f'[{e["lo"]:+.3g}, {e["hi"]:+.3g}]' + (' *' if e['lo'] > 0 or e['hi'] < 0
                                                 else ''))
    rows.append(f'| {results.cell(e["effect"])} | {e["kind"]} | {e["mean"]:+.4g} | '
                f'{ci} | {e["n"]} |')
  return '\n'.join(rows)


def to_markdown(title: str, arms: list[results.Arm],
                grids: Sequence[tuple[str, list[Any]]], analysis: dict[str, Any],
                extra_metrics: Sequence[str] = (), plot: str | None = None) -> str:
  pct = int(round(analysis['level'] * 100))
  lines = [f'# {title}', '',
           f'Mean ± std over seeds. Δ: arm minus baseline, Welch t {pct}% interval; '
           '* marks an interval that excludes 0. The equal-FLOPs column reads every '
           'arm at the FLOPs the cheapest one reached (interpolated between eval '
           'points; — when outside them).', '',
           ablation_table(arms, grids, analysis, extra_metrics), '']
  effects = effects_table(analysis)
  if effects:
    lines += ['## Main effects and interactions', '',
              'Per seed, each seed a replicate of the whole factorial; estimate = '
              f'mean over seeds, t {pct}% interval over seeds.', '', effects, '']
  if plot:
    lines += [f'![{plot}]({plot})', '']
  return '\n'.join(lines)


def plot_ablation(path: str | pathlib.Path, arms: list[results.Arm],
                  analysis: dict[str, Any]) -> str:
  """Bars of the metric per arm; error bars: half the CI of Δ vs the baseline."""
  metric = analysis['metric']
  values = {a.name: a.metrics[metric]['mean'] for a in arms if metric in a.metrics}
  errors = {}
  for name in values:
    d = analysis['diffs'].get(name)
    errors[name] = 0.0 if not d or math.isnan(d['lo']) else (d['hi'] - d['lo']) / 2
  return results.plot_bars(path, values, errors, ylabel=metric,
                           title=f'{metric} per arm (bars: CI of Δ vs baseline)')


# ---------------------------------------------------------------------------
# Running


def run_sweep(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
              grids: Sequence[tuple[str, list[Any]]], *, seeds: Sequence[int],
              metric: str = 'val_loss', vmap_seeds: bool | str = 'auto',
              measure=None, title: str = 'Ablation') -> dict[str, Any]:
  """Runs (or resumes) the sweep and writes sweep.json, ablation.md, ablation.png."""
  from lattice import experiment  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  config = ml_collections.ConfigDict(config.to_dict())
  config.arms = expand(grids)
  config.seeds = [int(s) for s in seeds]
  # A typo in a grid key fails here, before anything trains.
  for arm in config.arms:
    experiment.arm_config(config, arm['overrides'], config.seeds[0])
  arms, _ = experiment.run_arms(config, workdir, measure=measure, skip_finished=True,
                                vmap_seeds=vmap_seeds)
  analysis = analyze(arms, grids, metric)
  extra = [m for m in ('val_bpb', 'train_loss', 'maxvio_global', 'tokens_per_s')
           if any(m in a.metrics for a in arms) and m != metric]
  plot = None
  if results.is_primary_process():
    workdir.mkdir(parents=True, exist_ok=True)
    plot_ablation(workdir / 'ablation.png', arms, analysis)
    plot = 'ablation.png'
  text = to_markdown(title, arms, grids, analysis, extra, plot)
  out = {'grids': [[k, v] for k, v in grids], 'seeds': list(config.seeds),
         'metric': metric, 'arms': [results._builtin(a) for a in arms],  # pylint: disable=protected-access
         'analysis': analysis, 'table': text}
  if results.is_primary_process():
    results._write_atomic(workdir / SWEEP_FILE, json.dumps(  # pylint: disable=protected-access
        results._builtin(out), indent=1) + '\n')  # pylint: disable=protected-access
    results._write_atomic(workdir / TABLE_FILE, text)  # pylint: disable=protected-access
  out['arm_records'] = arms
  return out


def _fail(message: str) -> None:
  print(f'lattice: error: sweep: {message}', file=sys.stderr)
  raise SystemExit(2)


def main(argv: Sequence[str] | None = None) -> None:
  """`lattice sweep FILE.py:MODE --workdir DIR --grid K=V1,V2 ... [--seeds N]`."""
  parser = argparse.ArgumentParser(prog='lattice sweep', description=__doc__.split(
      '\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('config', metavar='FILE.py:MODE')
  parser.add_argument('--workdir', required=True, type=pathlib.Path)
  parser.add_argument('--grid', action='append', default=[], metavar='KEY=V1,V2',
                      help='a config key and its values; repeat for more factors')
  parser.add_argument('--seeds', type=int, default=1, help='seeds 0..N-1 per arm')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='a base-config override applied to every arm')
  parser.add_argument('--flops-budget', type=float, default=0.0,
                      help='train every arm for this many FLOPs (sets its steps)')
  parser.add_argument('--vmap-seeds', choices=('auto', 'on', 'off'), default='auto',
                      help='train an arm\'s seeds together in one vmapped step '
                      '(auto: small models on an accelerator; on CPU it measured slower)')
  parser.add_argument('--metric', default='val_loss')
  args = parser.parse_args(argv)
  from lattice import experiment  # pylint: disable=g-import-not-at-top
  try:
    if not args.grid:
      raise config_lib.ConfigError('--grid: give at least one KEY=V1,V2')
    if args.seeds < 1:
      raise config_lib.ConfigError(f'--seeds: must be >= 1, got {args.seeds}')
    if args.workdir.exists() and not args.workdir.is_dir():
      raise config_lib.ConfigError(f'--workdir: {args.workdir} is not a folder')
    path, _, mode = args.config.partition(':')
    module = experiment.load_experiment_module(path)
    config = module.get_config(mode or None)
    config_lib.build(config)  # the base must be valid before --set changes it
    for item in args.set:
      key, value = parse_grid(item)
      if len(value) != 1:
        raise config_lib.ConfigError(f'--set {item!r}: one value, not {len(value)}')
      _set(config, key, value[0])
    if args.flops_budget:
      config.flops_budget = args.flops_budget
    grids = [parse_grid(g) for g in args.grid]
    vmap = {'auto': 'auto', 'on': True, 'off': False}[args.vmap_seeds]
    out = run_sweep(config, args.workdir, grids, seeds=range(args.seeds),
                    metric=args.metric, vmap_seeds=vmap,
                    title=f'Sweep of {args.config}')
  except config_lib.ConfigError as e:
    _fail(str(e))
  except experiment.Preempted as e:
    print(f'[lattice] preempted: {e}')
    return
  print(out['table'])
  print(f'wrote {args.workdir / TABLE_FILE} and {args.workdir / SWEEP_FILE}')


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  node, parts = config, key.split('.')
  for part in parts[:-1]:
    if part not in node:
      raise config_lib.ConfigError(f'--set {key}: unknown config key {part!r}')
    node = node[part]
  if parts[-1] not in node:
    raise config_lib.ConfigError(f'--set {key}: unknown config key {parts[-1]!r}')
  try:
    node[parts[-1]] = value
  except TypeError as e:
    raise config_lib.ConfigError(f'--set {key}: {e}') from None
