"""Paired bootstrap checks over evaluation items (questions), not seeds.

When two methods answer the same n items (e.g. MoA and the best single proposer on
the same held-out questions), the uncertainty of their accuracy difference comes
from which items were drawn. `paired` resamples items with replacement and takes
the percentile interval of the mean per-item difference (Efron & Tibshirani 1993,
"An Introduction to the Bootstrap", ch. 13), via `scipy.stats.bootstrap`.
"A better than B" passes when the whole interval lies above 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lattice.run import records


def paired(a: Sequence[float], b: Sequence[float], *, level: float = 0.95,
           n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
  """Mean of a_i - b_i over items with its percentile bootstrap interval.

  Args:
    a, b: one score per item (e.g. 1.0 correct / 0.0 wrong), same items, same order.

  Returns:
    {'diff', 'lo', 'hi', 'n'}.

  Raises:
    ValueError: different lengths, or fewer than 2 items.
  """
  if len(a) != len(b) or len(a) < 2:
    raise ValueError(f'bootstrap: needs two equal-length score lists of >= 2 items, '
                     f'got {len(a)} and {len(b)}')
  from scipy import stats  # pylint: disable=g-import-not-at-top
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if np.all(d == d[0]):  # no spread: every resample has the same mean
    return {'diff': float(d[0]), 'lo': float(d[0]), 'hi': float(d[0]), 'n': len(d)}
  ci = stats.bootstrap((d,), np.mean, confidence_level=level, n_resamples=n_resamples,
                       method='percentile', random_state=np.random.default_rng(seed))
  return {'diff': float(d.mean()), 'lo': float(ci.confidence_interval.low),
          'hi': float(ci.confidence_interval.high), 'n': len(d)}


def better(label: str, a_name: str, a: Sequence[float], b_name: str,
           b: Sequence[float], *, level: float = 0.95, seed: int = 0) -> records.Check:
  """The Check "a better than b" on per-item scores (higher is better): passes
  when the paired bootstrap interval of mean(a - b) lies entirely above 0."""
  ci = paired(a, b, level=level, seed=seed)
  return records.check(
      label, ci['lo'] > 0,
      f'{a_name} - {b_name}: {ci["diff"]:+.4f}, {100 * level:g}% paired bootstrap CI '
      f'[{ci["lo"]:+.4f}, {ci["hi"]:+.4f}] over {ci["n"]} items ({a_name} '
      f'{np.mean(a):.3f}, {b_name} {np.mean(b):.3f}); needs the CI above 0')
