"""What an MoE model reports after an eval: load balance over the whole eval set.

Shape legend: Ly MoE layers, E experts.

The layer sows its per-batch token counts (`expert_load`, and with modality ids
`expert_load_image`); the eval step sums every name in `EVAL_SUMS` over the eval
batches, stacked per layer, and `summarize` turns the sums into metrics:
MaxVio_global (Wang et al. 2024, arXiv 2408.15664: per layer over the whole eval
set, (max load - mean load) / mean load, averaged over layers), and
`maxvio_late`, MaxVio_global averaged over the evaluations of the last part of a
run (a less noisy reading of the trained router's balance than the final
evaluation alone).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

EVAL_SUMS = ('expert_load', 'expert_load_image')
# `maxvio_late`'s default window: the evaluations in the last quarter of training.
LATE_FRACTION = 0.25


def summarize(sums: dict[str, Any], detail: bool = False) -> dict[str, Any]:
  """`maxvio_global`; with `detail` also `expert_load` [Ly][E] and `image_share`
  [Ly][E] (each expert's share of image tokens). {} without MoE sums."""
  if 'expert_load' not in sums:
    return {}
  load_LxE = np.asarray(sums['expert_load'], np.float64)
  mean_L = load_LxE.mean(axis=1)
  out: dict[str, Any] = {
      'maxvio_global': float(np.mean((load_LxE.max(axis=1) - mean_L) / mean_L))}
  if detail and 'expert_load_image' in sums:
    share = sums['expert_load_image'] / np.maximum(sums['expert_load'], 1.0)
    out['image_share'] = np.asarray(share).tolist()
    out['expert_load'] = np.asarray(sums['expert_load']).tolist()
  return out


def maxvio_late(history: Sequence[Mapping[str, float]], steps: int,
                fraction: float = LATE_FRACTION, key: str = 'maxvio_global'
                ) -> tuple[float, int]:
  """(mean of `key` over the evaluations in the last `fraction` of a run, their count).

  `history`: one run's eval rows ({'step', key, ...}, e.g. a Result arm's
  extra['history'][seed]), `steps` the run's length. The window is every row with
  step >= (1 - fraction) * steps. MaxVio_global itself (module docstring) already
  pools the whole eval set, so its run-to-run spread comes from the router's state
  at the evaluated step: loss-free balancing moves each bias by +-u every step, and
  an auxiliary loss balances only on average, so the final step's balance is one
  draw from a fluctuating process. Averaging evaluations spaced through the late
  phase (after the bias has caught up) reads the router's typical late balance
  instead; each term is Wang et al.'s MaxVio_global, so the mean keeps its units
  and its ideal value 0.

  Raises ValueError when fraction is not in (0, 1] or no row falls in the window
  (e.g. no evaluation was scheduled in it: set train.eval_every).
  """
  if not 0 < fraction <= 1:
    raise ValueError(f'maxvio_late: fraction must be in (0, 1], got {fraction}')
  start = (1 - fraction) * steps
  values = [float(r[key]) for r in history if r.get('step', -1) >= start and key in r]
  if not values:
    raise ValueError(f'maxvio_late: no evaluation with {key!r} at step >= {start:g} of '
                     f'{steps} (rows at steps {[r.get("step") for r in history]}); '
                     'schedule evaluations in the window with train.eval_every')
  return float(np.mean(values)), len(values)
