"""Measurements the multimodal experiment reports: scaling fits, expert modality
specialization, and a train step's compiled memory.

`fit_power_law` fits Shukor et al.'s L = E + A * C^-alpha (arXiv 2504.07951, Eq. 1
form) to (compute, loss) points on their lower envelope; scipy is imported only here.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np

from lattice import sharding


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
  """The (compute, loss) points no cheaper point beats: the loss-vs-compute envelope."""
  out, best = [], math.inf
  for c, l in sorted(points):
    if l < best:
      out.append((c, l))
      best = l
  return out


def fit_power_law(points: Sequence[tuple[float, float]]) -> dict[str, float]:
  """{E, A, alpha, c0} with L = E + A * (C / c0)^-alpha; NaNs when it cannot fit."""
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  pts = pareto(points)
  if len(pts) < 3:
    pts = sorted(points)
  c, l = np.array(pts, np.float64).T
  c0 = float(c.min())
  nan = {'E': math.nan, 'A': math.nan, 'alpha': math.nan, 'c0': c0, 'n_points': len(pts)}
  if len(pts) < 3:
    return nan
  f = lambda x, e, a, alpha: e + a * x ** -alpha
  try:
    (e, a, alpha), _ = optimize.curve_fit(
        f, c / c0, l, p0=(0.8 * l.min(), l.max() - 0.8 * l.min(), 0.3),
        bounds=([0.0, 0.0, 0.0], [l.min(), np.inf, 5.0]), maxfev=20_000)
  except (RuntimeError, ValueError):
    return nan
  return {'E': float(e), 'A': float(a), 'alpha': float(alpha), 'c0': c0,
          'n_points': len(pts)}


def predict(fit: dict[str, float], c: np.ndarray) -> np.ndarray:
  return fit['E'] + fit['A'] * (np.asarray(c, np.float64) / fit['c0']) ** -fit['alpha']


def modality_nmi(load_E: np.ndarray, image_E: np.ndarray) -> float:
  """I(modality; expert) / H(modality) from per-expert token and image-token counts:
  0 when routing ignores modality, 1 when every expert sees one modality only."""
  load_E, image_E = np.asarray(load_E, np.float64), np.asarray(image_E, np.float64)
  joint = np.stack([image_E, load_E - image_E]) / load_E.sum()  # [modality, expert]
  pm, pe = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
  nz = joint > 0
  mi = float(np.sum(joint[nz] * np.log(joint[nz] / (pm @ pe)[nz])))
  hm = float(-np.sum(pm[pm > 0] * np.log(pm[pm > 0])))
  return mi / hm if hm > 0 else 0.0


def step_memory_bytes(setup, batch: dict[str, np.ndarray]) -> int:
  """Arguments + temporaries of the compiled train step (XLA's memory analysis)."""
  shard = sharding.batch_sharding(setup.mesh)
  abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=shard)
                    for k, v in batch.items()}
  with sharding.use_mesh(setup.mesh):
    stats: Any = setup.train_step.lower(setup.abstract_state, abstract_batch
                                        ).compile().memory_analysis()
  return int(stats.argument_size_in_bytes + stats.temp_size_in_bytes)


def interleaved_step_seconds(runs: list[tuple[Any, Any]], batch: dict[str, np.ndarray],
                             rounds: int = 5) -> list[float]:
  """Best-of-`rounds` seconds of one train step for each (setup, state), timing the
  runs in turn within each round, so that load on a shared machine hits all alike.
  The states are trained further (and donated); pass copies you no longer need."""
  import time  # pylint: disable=g-import-not-at-top
  states = [state for _, state in runs]
  batches = [sharding.global_batch(batch, setup.mesh) for setup, _ in runs]
  best = [math.inf] * len(runs)
  for r in range(rounds + 1):  # round 0 warms up (compiles if needed)
    for i, (setup, _) in enumerate(runs):
      with sharding.use_mesh(setup.mesh):
        t0 = time.perf_counter()
        states[i], metrics = setup.train_step(states[i], batches[i])
        jax.block_until_ready(metrics)
        if r:
          best[i] = min(best[i], time.perf_counter() - t0)
  return best
