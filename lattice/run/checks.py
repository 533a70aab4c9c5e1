"""Pre-registered checks judged on the 95% CI of a paired difference over seeds.

An experiment declares its comparisons before it runs, as module-level code (and in
its docstring), e.g.

    CHECKS = (checks.better('moe_fine_shared', 'dense'),
              checks.not_worse('b158_d128', 'float_d64', margin=0.01, relative=True))

and after training judges each one on the arms (`judge(comparison, arms)`), which
returns the `records.Check` the Result holds. Every arm of a comparison must have run
the same seeds (paired by seed: same init seed and data order in both arms); the
per-seed differences d_s = a_s - b_s (or a_s / b_s - 1 with `relative`) get a
one-sample Student t interval (`stats.mean_ci`).

- "A better than B" (`better`) passes only when the whole interval lies on A's good
  side of zero: hi < 0 for a lower-is-better metric (loss), lo > 0 for a
  higher-is-better one (accuracy).
- "A not worse than B" (`not_worse`) is a non-inferiority test with a stated margin
  m >= 0: hi < m (lower is better) or lo > -m (higher is better). The margin is in
  the metric's units, or a fraction of B with `relative`.

Both fail, saying why, with fewer than `min_seeds` (default 3) paired seeds. There
is no best-of-N selection here: a comparison names its two arms up front.

The t interval of a mean over n paired differences is the textbook one
(e.g. Wasserman, "All of Statistics", 2004, sec. 10.7): mean +- t_{n-1, 0.975} s / sqrt(n).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

from lattice.run import records, stats

KINDS = ('better', 'not_worse')


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One pre-registered comparison of arm `a` against arm `b` on `metric`.

  kind: 'better' (the CI of a - b excludes zero on a's good side) or 'not_worse'
    (non-inferiority: the CI stays within `margin` of zero on a's bad side).
  margin: the non-inferiority margin (>= 0), in the metric's units, or a fraction of
    b when `relative`; must be 0 for 'better'.
  relative: judge a / b - 1 per seed instead of a - b.
  higher_is_better: the metric's good direction (accuracy: True; loss: False).
  label: the check's name in table.md; a default is built from the fields.
  """
  kind: str
  a: str
  b: str
  metric: str = 'val_loss'
  margin: float = 0.0
  relative: bool = False
  higher_is_better: bool = False
  label: str = ''

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'checks: kind must be one of {KINDS}, got {self.kind!r}')
    if not (self.margin >= 0 and math.isfinite(self.margin)):
      raise ValueError(f'checks: margin must be a finite number >= 0, got {self.margin!r}')
    if self.kind == 'better' and self.margin:
      raise ValueError('checks: a "better" comparison takes no margin (use not_worse)')

  @property
  def name(self) -> str:
    if self.label:
      return self.label
    if self.kind == 'better':
      return f'{self.a} better than {self.b} ({self.metric})'
    unit = f'{100 * self.margin:g}%' if self.relative else f'{self.margin:g}'
    return f'{self.a} not worse than {self.b} by more than {unit} ({self.metric})'


def better(a: str, b: str, metric: str = 'val_loss', *, higher_is_better: bool = False,
           relative: bool = False, label: str = '') -> Comparison:
  """"`a` better than `b`": the paired CI of a - b must exclude zero on a's side."""
  return Comparison('better', a, b, metric, 0.0, relative, higher_is_better, label)


def not_worse(a: str, b: str, margin: float, metric: str = 'val_loss', *,
              relative: bool = False, higher_is_better: bool = False,
              label: str = '') -> Comparison:
  """"`a` not worse than `b` by more than `margin`" (non-inferiority)."""
  return Comparison('not_worse', a, b, metric, margin, relative, higher_is_better, label)


def paired_ci(a: Sequence[float], b: Sequence[float], *, relative: bool = False,
              level: float = 0.95) -> dict[str, Any]:
  """The mean paired difference of a and b (a_s - b_s, or a_s / b_s - 1) with its
  one-sample t interval over seeds.

  `a` and `b` hold one value per seed, in the same seed order. Returns {'diff', 'lo',
  'hi', 'n', 'per_seed'}; lo and hi are NaN with fewer than 2 seeds. Raises
  ValueError when the lengths differ.
  """
  if len(a) != len(b):
    raise ValueError(f'paired_ci: {len(a)} vs {len(b)} values; pairs need one of each '
                     'per seed')
  per_seed = [x / y - 1 if relative else x - y for x, y in zip(a, b)]
  if not per_seed:
    raise ValueError('paired_ci: no values')
  ci = stats.mean_ci(per_seed, level)
  return {'diff': ci['mean'], 'lo': ci['lo'], 'hi': ci['hi'], 'n': ci['n'],
          'per_seed': per_seed}


def passes(comparison: Comparison, ci: Mapping[str, float]) -> bool:
  """Whether a paired CI (from `paired_ci`) passes the comparison (NaN bounds fail)."""
  lo, hi, m = ci['lo'], ci['hi'], comparison.margin
  if math.isnan(lo) or math.isnan(hi):
    return False
  if comparison.higher_is_better:
    return lo > 0 if comparison.kind == 'better' else lo > -m
  return hi < 0 if comparison.kind == 'better' else hi < m


def _fmt(x: float, relative: bool) -> str:
  return f'{100 * x:+.2f}%' if relative else f'{x:+.4g}'


def describe(comparison: Comparison, ci: Mapping[str, Any], seeds: Sequence[int],
             level: float = 0.95, min_seeds: int = 3) -> str:
  """The check's detail line: the difference, its CI, the rule and the margin."""
  c, rel = comparison, comparison.relative
  what = f'{c.a} / {c.b} - 1' if rel else f'{c.a} - {c.b}'
  pct = f'{100 * level:g}%'
  if math.isnan(ci['lo']):
    interval = f'{_fmt(ci["diff"], rel)} (no CI: {ci["n"]} seed)'
  else:
    interval = (f'{_fmt(ci["diff"], rel)}, {pct} CI [{_fmt(ci["lo"], rel)}, '
                f'{_fmt(ci["hi"], rel)}]')
  side = '>' if c.higher_is_better else '<'
  if c.kind == 'better':
    rule = f'needs the CI {"above" if c.higher_is_better else "below"} 0'
  else:
    bound = -c.margin if c.higher_is_better else c.margin
    rule = (f'non-inferiority margin {_fmt(bound, rel)}: needs the CI '
            f'{"lower" if c.higher_is_better else "upper"} bound {side} {_fmt(bound, rel)}')
  per_seed = ', '.join(f's{s} {_fmt(d, rel)}' for s, d in zip(seeds, ci['per_seed']))
  seeds_n = f'{ci["n"]} seed{"" if ci["n"] == 1 else "s"}'
  short = (f'; only {seeds_n} paired, {min_seeds} needed' if ci['n'] < min_seeds else '')
  return (f'{c.metric} {what}: {interval}, paired t over {seeds_n} '
          f'({per_seed}); {rule}{short}')


def seed_values(arm: Any, metric: str) -> dict[int, float]:
  """{seed: value} of one arm's metric (a `records.Arm`: `seeds` and aggregated
  `metrics[metric]['values']` in seed order). Raises ValueError naming the arm when
  the metric is missing or not one value per seed."""
  m = arm.metrics.get(metric)
  if m is None:
    raise ValueError(f'checks: arm {arm.name!r} has no metric {metric!r} '
                     f'(it has {", ".join(sorted(arm.metrics))})')
  values, seeds = list(m['values']), list(arm.seeds)
  if len(values) != len(seeds):
    raise ValueError(f'checks: arm {arm.name!r} metric {metric!r} has {len(values)} '
                     f'values for {len(seeds)} seeds; cannot pair by seed')
  return dict(zip(seeds, values))


def judge_values(comparison: Comparison, a: Mapping[int, float], b: Mapping[int, float],
                 *, level: float = 0.95, min_seeds: int = 3) -> records.Check:
  """The Check of one comparison from {seed: value} of each arm.

  The seeds both arms ran are paired (an arm may run more seeds than another,
  `lattice.run.arms.arm_seeds`; the detail line lists the seeds used); raises
  ValueError when the arms share no seed.
  """
  seeds = sorted(set(a) & set(b))
  if not seeds:
    raise ValueError(f'checks: {comparison.a!r} ran seeds {sorted(a)} but '
                     f'{comparison.b!r} ran {sorted(b)}; a paired check needs common seeds')
  ci = paired_ci([a[s] for s in seeds], [b[s] for s in seeds],
                 relative=comparison.relative, level=level)
  ok = passes(comparison, ci) and ci['n'] >= min_seeds
  detail = describe(comparison, ci, seeds, level, min_seeds)
  if not passes(comparison, ci):  # (too few seeds alone is said by `describe`)
    detail += f'; {why_failed(comparison, ci)}'
  return records.check(comparison.name, ok, detail)


def why_failed(comparison: Comparison, ci: Mapping[str, Any]) -> str:
  """Why a failed comparison failed, read from its own per-seed differences (issue
  #20: each check that does not reproduce says why, from its numbers).

  With the per-seed differences' mean and sd taken as the truth: either the mean is
  on the failing side of the check's bound (no seed count would pass this design at
  this scale), or it is on the passing side and the interval was too wide, with the
  paired seeds that give ~80% power (`stats.seeds_needed`, a one-sample t rule).
  `ci` is a `paired_ci` result. Returns one sentence starting 'why:'.
  """
  c, rel, n = comparison, comparison.relative, ci['n']
  if n < 2:
    return f'why: {n} seed, no interval'
  _, var, _ = stats.mean_var(ci['per_seed'])
  sd = math.sqrt(var)
  bound = (-c.margin if c.higher_is_better else c.margin) if c.kind == 'not_worse' else 0.0
  below = not c.higher_is_better
  n80 = stats.seeds_needed(ci['diff'], sd, bound, below, power=0.8)
  if n80 is None:
    return (f'why: the mean difference {_fmt(ci["diff"], rel)} is on the failing side '
            f'of {_fmt(bound, rel)} (sd {_fmt(sd, rel).lstrip("+")} over {n} seeds): '
            'more seeds would not make this design pass at this scale')
  need = f'more than {stats.MAX_SEEDS}' if n80 > stats.MAX_SEEDS else f'about {n80}'
  if n80 <= n:
    return (f'why: the mean difference {_fmt(ci["diff"], rel)} clears {_fmt(bound, rel)}, '
            f'but this draw\'s interval did not ({need} paired seeds give ~80% power at '
            f'this mean and sd; {n} ran)')
  return (f'why: the mean difference {_fmt(ci["diff"], rel)} is on the passing side of '
          f'{_fmt(bound, rel)} but the interval is wider than the gap: {need} paired '
          f'seeds would pass with ~80% power at this mean and sd '
          f'({_fmt(sd, rel).lstrip("+")}; {n} ran)')


def judge(comparison: Comparison, arms: Sequence[Any] | Mapping[str, Any], *,
          level: float = 0.95, min_seeds: int = 3) -> records.Check:
  """The Check of one comparison over trained arms (a list of `records.Arm`, or a
  {name: Arm} dict). Raises ValueError naming a missing arm or metric."""
  by = arms if isinstance(arms, Mapping) else {x.name: x for x in arms}
  for name in (comparison.a, comparison.b):
    if name not in by:
      raise ValueError(f'checks: no arm {name!r} (arms: {", ".join(by)})')
  return judge_values(comparison, seed_values(by[comparison.a], comparison.metric),
                      seed_values(by[comparison.b], comparison.metric),
                      level=level, min_seeds=min_seeds)


def judge_all(comparisons: Sequence[Comparison], arms: Sequence[Any] | Mapping[str, Any],
              *, level: float = 0.95, min_seeds: int = 3) -> list[records.Check]:
  """`judge` for each pre-registered comparison, in order."""
  return [judge(c, arms, level=level, min_seeds=min_seeds) for c in comparisons]


def ci_line(a: str, b: str, arms: Sequence[Any] | Mapping[str, Any],
            metric: str = 'val_loss', *, relative: bool = False,
            level: float = 0.95) -> str:
  """A paired difference reported as measured, with no verdict (for notes):
  'metric a - b: +0.012, 95% CI [...] over n seeds'. Raises as `judge` does."""
  by = arms if isinstance(arms, Mapping) else {x.name: x for x in arms}
  for name in (a, b):
    if name not in by:
      raise ValueError(f'checks: no arm {name!r} (arms: {", ".join(by)})')
  va, vb = seed_values(by[a], metric), seed_values(by[b], metric)
  seeds = sorted(set(va) & set(vb))  # the seeds both ran, as `judge_values`
  if not seeds:
    raise ValueError(f'checks: {a!r} ran seeds {sorted(va)} but {b!r} ran {sorted(vb)}; '
                     'a paired difference needs common seeds')
  ci = paired_ci([va[s] for s in seeds], [vb[s] for s in seeds], relative=relative,
                 level=level)
  what = f'{a} / {b} - 1' if relative else f'{a} - {b}'
  if math.isnan(ci['lo']):
    return f'{metric} {what}: {_fmt(ci["diff"], relative)} ({ci["n"]} seed: no CI)'
  return (f'{metric} {what}: {_fmt(ci["diff"], relative)}, {100 * level:g}% CI '
          f'[{_fmt(ci["lo"], relative)}, {_fmt(ci["hi"], relative)}] over {ci["n"]} seeds')


def proportion_above(label: str, successes: int, n: int, chance: float, *,
                     level: float = 0.95) -> records.Check:
  """"A rate is above `chance`": passes when the Clopper-Pearson (exact binomial)
  `level` interval of successes / n lies entirely above `chance` (e.g. accuracy on
  n held-out questions vs the most frequent answer's share). Raises ValueError for
  n < 1 or successes outside [0, n]."""
  if n < 1 or not 0 <= successes <= n:
    raise ValueError(f'checks: proportion needs 0 <= successes <= n and n >= 1, got '
                     f'{successes} of {n}')
  from scipy import stats as scipy_stats  # pylint: disable=g-import-not-at-top
  ci = scipy_stats.binomtest(int(successes), int(n)).proportion_ci(level)
  return records.check(label, ci.low > chance,
                       f'{successes}/{n} = {successes / n:.3f}, Clopper-Pearson '
                       f'{100 * level:g}% CI [{ci.low:.3f}, {ci.high:.3f}]; needs the '
                       f'CI above chance {chance:.3f}')
