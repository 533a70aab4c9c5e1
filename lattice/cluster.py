"""k-means (Lloyd's algorithm, numpy) and nearest-centroid assignment.

Shape legend: T rows, Q features, K centres.

One implementation for every user: the Chameleon-style image codebook
(`lattice.multimodal.codebook`: k distinct random rows as the start, float32) and
the routing of agent requests to specialists (`lattice.agents.routing`: k-means++
starts, Arthur & Vassilvitskii 2007, best of several restarts by inertia).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def nearest(x_TxQ, centroids_KxQ, xp: Any = np):
  """Index of the nearest centre (squared Euclidean) of every row, int32 [T].

  `xp` is numpy (fitting) or jax.numpy (inside a model): |x|^2 - 2 x.c + |c|^2.
  """
  d_TxK = (xp.sum(x_TxQ * x_TxQ, -1, keepdims=True) - 2 * x_TxQ @ centroids_KxQ.T
           + xp.sum(centroids_KxQ * centroids_KxQ, -1))
  return xp.argmin(d_TxK, axis=-1).astype(xp.int32)


def _random_rows(x_TxQ: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  uniq = np.unique(x_TxQ, axis=0)
  c_KxQ = uniq[rng.choice(len(uniq), size=min(k, len(uniq)), replace=False)]
  if len(c_KxQ) < k:  # fewer distinct rows than centres: repeat some
    c_KxQ = c_KxQ[np.arange(k) % len(c_KxQ)]
  return c_KxQ


def _kmeans_pp(x_TxQ: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  c_KxQ = x_TxQ[[rng.integers(len(x_TxQ))]]
  while len(c_KxQ) < k:
    d2_T = ((x_TxQ[:, None] - c_KxQ[None]) ** 2).sum(-1).min(1)
    c_KxQ = np.vstack([c_KxQ, x_TxQ[rng.choice(len(x_TxQ), p=d2_T / d2_T.sum())]])
  return c_KxQ


def kmeans(x_TxQ: np.ndarray, k: int, *, iters: int = 15, seed: int = 0,
           init: str = 'random_rows', restarts: int = 1, dtype=np.float32
           ) -> tuple[np.ndarray, np.ndarray]:
  """(centres [K, Q], labels int32 [T]) of Lloyd's k-means; of `restarts` runs the
  one with the lowest inertia. Empty clusters keep their centre.

  `init`: 'random_rows' (k distinct rows) or 'kmeans++'. Raises ValueError for an
  unknown init, k < 1 or no rows.
  """
  inits = {'random_rows': _random_rows, 'kmeans++': _kmeans_pp}
  if init not in inits:
    raise ValueError(f'kmeans: init must be one of {sorted(inits)}, got {init!r}')
  x_TxQ = np.asarray(x_TxQ, dtype)
  if k < 1 or len(x_TxQ) == 0:
    raise ValueError(f'kmeans: need k >= 1 and rows, got k={k}, {len(x_TxQ)} rows')
  rng = np.random.default_rng(seed)
  best = None
  for _ in range(restarts):
    c_KxQ = inits[init](x_TxQ, k, rng)
    for _ in range(iters):
      assign_T = nearest(x_TxQ, c_KxQ)
      sums_KxQ = np.zeros_like(c_KxQ)
      np.add.at(sums_KxQ, assign_T, x_TxQ)
      counts_K = np.bincount(assign_T, minlength=k)[:, None]
      c_KxQ = np.where(counts_K > 0, sums_KxQ / np.maximum(counts_K, 1), c_KxQ)
    c_KxQ = c_KxQ.astype(dtype)
    labels_T = nearest(x_TxQ, c_KxQ)
    inertia = float(((x_TxQ - c_KxQ[labels_T]) ** 2).sum())
    if best is None or inertia < best[0]:
      best = (inertia, c_KxQ, labels_T)
  return best[1], best[2]
