"""Routing agent requests to specialists: hashed bag-of-words features, k-means
clusters of logged requests, nearest-centre routing (the SLM-agents recipe,
arXiv 2506.02153 section 6: cluster the logged calls into tasks, one small
specialist per cluster).

Shape legend: N requests, F hashed features, K clusters.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from lattice import cluster


def features(requests: list[str], dim: int = 128) -> np.ndarray:
  """[N, dim] hashed (CRC32), L2-normalised bag of words; numbers map to one token."""
  x_NxF = np.zeros((len(requests), dim))
  for i, r in enumerate(requests):
    for w in re.findall(r"[a-z']+|\d+(?:\.\d+)?", r.lower()):
      w = '<num>' if w[0].isdigit() else w
      x_NxF[i, zlib.crc32(w.encode()) % dim] += 1
  return x_NxF / np.maximum(np.linalg.norm(x_NxF, axis=1, keepdims=True), 1e-9)


def fit(requests: list[str], k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(centres [K, F], labels [N]) of the requests' features: best-of-8 k-means++
  (lowest inertia), 50 Lloyd iterations, float64."""
  return cluster.kmeans(features(requests), k, iters=50, seed=seed, init='kmeans++',
                        restarts=8, dtype=np.float64)


def route(requests: list[str], centres_KxF: np.ndarray) -> np.ndarray:
  """The cluster [N] (the specialist) of each request: its nearest centre."""
  return cluster.nearest(features(requests), centres_KxF)


def label_centres(requests: list[str], labels: np.ndarray, k: int) -> np.ndarray:
  """[K, F] centre of each label's request features (a nearest-centroid router for
  clusters given by labels, e.g. the tool family each logged call used). A label
  with no request gets a far-away centre (1e3 in every feature: never nearest to
  a normalised request). Raises ValueError for labels outside [0, k)."""
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() >= k):
    raise ValueError(f'label_centres: labels must lie in [0, {k}), got '
                     f'{labels.min()}..{labels.max()}')
  x_NxF = features(requests)
  c_KxF = np.full((k, x_NxF.shape[1]), 1e3)
  for j in range(k):
    if np.any(labels == j):
      c_KxF[j] = x_NxF[labels == j].mean(0)
  return c_KxF
