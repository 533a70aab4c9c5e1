"""Statistics over seeds: mean and std, one-sample and Welch t intervals, factorial
effects with seeds as replicates.

t quantiles come from scipy.stats.t; Welch's degrees of freedom are the
Welch-Satterthwaite approximation (Welch 1947, Biometrika 34:28-35).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Sequence


def aggregate(per_seed: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
  """Mean and sample std (ddof=1) of each metric over seeds.

  A NaN seed is kept in `values` and makes the mean NaN: a diverged seed must
  show up in the table, not silently vanish. A metric missing from some seeds is
  aggregated over the seeds that have it (`n` says how many).
  """
  values: dict[str, list[float]] = {}
  for i, metrics in enumerate(per_seed):
    for key, value in metrics.items():
      try:
        values.setdefault(key, []).append(float(value))
      except (TypeError, ValueError) as e:
        raise ValueError(f'aggregate: seed {i} metric {key!r} is not a number: '
                         f'{value!r}') from e
  out = {}
  for key, vs in values.items():
    n = len(vs)
    mean = sum(vs) / n
    std = (math.sqrt(sum((v - mean) ** 2 for v in vs) / (n - 1))
           if n > 1 else 0.0)
    out[key] = {'mean': mean, 'std': std, 'n': n, 'values': vs}
  return out


def t_quantile(p: float, df: float) -> float:
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.t.ppf(p, df))


# seeds_needed's search limit.
MAX_SEEDS = 500


def seeds_needed(mean: float, sd: float, bound: float, below: bool,
                 power: float = 0.5) -> int | None:
  """Smallest n >= 3 at which a paired t interval (95%) over n seeds whose true
  per-seed differences have mean `mean` and sd `sd` clears `bound` (below it when
  `below`, else above) with probability ~`power` (0.5: the expected interval just
  clears it). None when `mean` is on the failing side, MAX_SEEDS + 1 when more
  than MAX_SEEDS would be needed. Raises ValueError for power outside [0.5, 1).

  The rule: gap > (t_{n-1, 0.975} + t_{n-1, power}) sd / sqrt(n), the sample-size
  rule of a one-sample t test (Chow, Shao & Wang, "Sample Size Calculations in
  Clinical Research", 2008, sec. 3.1, with t quantiles in place of normal ones);
  scripts/seed_power.py applies it to the committed results."""
  if not 0.5 <= power < 1:
    raise ValueError(f'seeds_needed: power must be in [0.5, 1), got {power}')
  gap = (bound - mean) if below else (mean - bound)
  if gap <= 0:
    return None
  if sd == 0:
    return 3
  for n in range(3, MAX_SEEDS + 1):
    z = t_quantile(0.975, n - 1) + (t_quantile(power, n - 1) if power > 0.5 else 0)
    if z * sd / math.sqrt(n) < gap:
      return n
  return MAX_SEEDS + 1


def mean_var(xs: Sequence[float]) -> tuple[float, float, int]:
  n = len(xs)
  mean = sum(xs) / n
  var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else float('nan')
  return mean, var, n


def diff_ci(arm: Sequence[float], base: Sequence[float], level: float = 0.95
            ) -> dict[str, float]:
  """mean(arm) - mean(base) and its Welch t interval (NaN bounds with < 2 seeds)."""
  ma, va, na = mean_var(arm)
  mb, vb, nb = mean_var(base)
  diff = ma - mb
  if na < 2 or nb < 2:
    return {'diff': diff, 'lo': float('nan'), 'hi': float('nan'), 'df': float('nan')}
  se2 = va / na + vb / nb
  if se2 == 0:
    return {'diff': diff, 'lo': diff, 'hi': diff, 'df': float(na + nb - 2)}
  df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
  half = t_quantile(0.5 + level / 2, df) * math.sqrt(se2)
  return {'diff': diff, 'lo': diff - half, 'hi': diff + half, 'df': df}


def paired_diff_ci(arm: Sequence[float], base: Sequence[float], level: float = 0.95
                   ) -> dict[str, float]:
  """mean(arm - base) over seeds paired by index, and its one-sample t interval on
  the per-seed differences (NaN bounds with < 2 pairs).

  The interval `factorial_effects` gives a main effect (each seed a replicate), so
  a one-factor sweep's Δ vs the baseline and its main effect are one number with
  one CI. Raises ValueError when the lists differ in length.
  """
  if len(arm) != len(base):
    raise ValueError(f'paired_diff_ci: {len(arm)} arm values vs {len(base)} baseline '
                     'values; pairs need one of each per seed')
  d = mean_ci([a - b for a, b in zip(arm, base)], level)
  return {'diff': d['mean'], 'lo': d['lo'], 'hi': d['hi'],
          'df': float(d['n'] - 1) if d['n'] > 1 else float('nan')}


def mean_ci(xs: Sequence[float], level: float = 0.95) -> dict[str, float]:
  """Mean and its one-sample t interval (NaN bounds with < 2 values)."""
  mean, var, n = mean_var(xs)
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
