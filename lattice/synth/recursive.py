"""Recursive training on synthetic data: which data generation g trains on.

Generation 0 trains on real data. Generation g >= 1 trains on a dataset composed
by a `Policy` from the real data and the synthetic datasets of generations
0..g-1 (dataset k is sampled from the model of generation k):

- replace:    only the previous generation's samples (Shumailov et al. 2024).
- accumulate: real + every synthetic dataset so far (Gerstgrasser et al. 2024,
              arXiv 2404.01413), so the data grows by one dataset per generation.
- mix:        the previous generation's samples with a fixed fraction of real
              records, at the size of one dataset.

Every record keeps its provenance ('source': 'real' or 'gen<k>'), so a run can
show what each generation saw. `run_generations` drives train -> evaluate on held-out
real data -> synthesize, through caller-supplied functions (the experiments pass
`lattice.train.loop.train_and_evaluate` on the written files).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lattice import config as config_lib

Record = dict[str, Any]
KINDS = ('replace', 'accumulate', 'mix')


@dataclasses.dataclass(frozen=True)
class Policy:
  kind: str = 'replace'
  real_fraction: float = 0.0  # mix only: share of real records per dataset

  def __post_init__(self):
    if self.kind not in KINDS:
      raise config_lib.ConfigError(f'policy.kind: {self.kind!r} is not one of {KINDS}')
    if self.kind == 'mix' and not 0.0 < self.real_fraction < 1.0:
      raise config_lib.ConfigError(
          f'policy.real_fraction: mix needs a fraction in (0, 1), got {self.real_fraction}')

  @property
  def name(self) -> str:
    if self.kind == 'mix':
      return f'mix{round(100 * self.real_fraction)}'
    return self.kind


def tag(records: Sequence[Record], source: str, **extra: Any) -> list[Record]:
  """Copies of `records` with their provenance set."""
  return [{**r, 'source': source, **extra} for r in records]


def compose(policy: Policy, real: Sequence[Record],
            synthetic: Sequence[Sequence[Record]], seed: int = 0) -> list[Record]:
  """The training set of generation `len(synthetic)` under `policy`.

  `synthetic[k]` is the dataset sampled from generation k's model. With no
  synthetic data yet (generation 0) every policy trains on `real`.
  """
  if not synthetic:
    return list(real)
  last = list(synthetic[-1])
  if policy.kind == 'replace':
    return last
  if policy.kind == 'accumulate':
    return [*real, *(r for ds in synthetic for r in ds)]
  n = len(last)
  n_real = int(round(policy.real_fraction * n))
  if n_real > len(real):
    raise ValueError(f'compose: mix needs {n_real} real records, only {len(real)}')
  rng = np.random.default_rng([seed, len(synthetic)])
  real_pick = [real[i] for i in sorted(rng.choice(len(real), n_real, replace=False))]
  syn_pick = [last[i] for i in sorted(rng.choice(n, n - n_real, replace=False))]
  return [*real_pick, *syn_pick]


def provenance(records: Sequence[Record]) -> dict[str, int]:
  """How many records came from each source."""
  out: dict[str, int] = {}
  for r in records:
    out[r.get('source', '?')] = out.get(r.get('source', '?'), 0) + 1
  return dict(sorted(out.items()))


def run_generations(policy: Policy, real: Sequence[Record], n_generations: int, *,
                    train: Callable[[list[Record], int], Any],
                    evaluate: Callable[[Any, int], dict[str, float]],
                    synthesize: Callable[[Any, int], list[Record]],
                    describe: Callable[[list[Record]], dict[str, float]] | None = None,
                    start: tuple[Any, dict[str, float], list[Record]] | None = None,
                    seed: int = 0) -> list[dict[str, Any]]:
  """Generations 0..n_generations-1; returns one row of metrics per generation.

  `train(records, g) -> model`, `evaluate(model, g) -> metrics on real held-out
  data`, `synthesize(model, g) -> records` (untagged). `start` reuses generation
  0's (model, metrics, synthetic records), which no policy changes, across
  policies.
  """
  synthetic: list[list[Record]] = []
  rows = []
  for g in range(n_generations):
    data = compose(policy, real, synthetic, seed)
    if g == 0 and start is not None:
      model, metrics, samples = start
    else:
      model = train(data, g)
      metrics = evaluate(model, g)
      samples = synthesize(model, g)
    synthetic.append(tag(samples, f'gen{g}', generation=g))
    described = describe(samples) if describe is not None else {}
    rows.append({'generation': g, 'train_records': len(data),
                 'provenance': provenance(data), **metrics,
                 **{f'samples_{k}': v for k, v in described.items()}})
  return rows


def late_slope(values: Sequence[float], n_last: int | None = None) -> float:
  """Least-squares slope per generation of the last `n_last` values (default: the
  later half, ceil(n / 2), at least 2): how fast a per-generation metric (test loss on
  real data) still moves at the end. Gerstgrasser et al. 2024 (arXiv 2404.01413)
  call accumulation "bounded" because its test loss flattens while replacement's
  keeps climbing; comparing late slopes tests that on a finite run.

  Raises:
    ValueError: fewer than 2 values to fit, or n_last < 2.
  """
  v = np.asarray(values, np.float64)
  k = max(2, -(-len(v) // 2)) if n_last is None else n_last
  if k < 2 or len(v) < k:
    raise ValueError(f'late_slope: need >= 2 of {len(v)} values, asked for the last {k}')
  return float(np.polyfit(np.arange(k), v[-k:], 1)[0])
