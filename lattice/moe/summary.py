"""What an MoE model reports after an eval: load balance over the whole eval set.

Shape legend: Ly MoE layers, E experts.

The layer sows its per-batch token counts (`expert_load`, and with modality ids
`expert_load_image`); the eval step sums every name in `EVAL_SUMS` over the eval
batches, stacked per layer, and `summarize` turns the sums into metrics:
MaxVio_global (Wang et al. 2024, arXiv 2408.15664: per layer over the whole eval
set, (max load - mean load) / mean load, averaged over layers).
"""

from __future__ import annotations

from typing import Any

import numpy as np

EVAL_SUMS = ('expert_load', 'expert_load_image')


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
