"""Interleaved timing shared by the benchmarks: `round_robin`."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax


def round_robin(fns: dict[str, Callable[[], object]], repeats: int
                ) -> dict[str, dict[str, float]]:
  """Seconds per call of each fn: {name: {'min', 'median'}} over `repeats` rounds,
  each round calling every fn once in turn (so a noisy machine slows all of them
  alike), after one untimed call each (compile, warm-up). Results are blocked on
  with `jax.block_until_ready`."""
  for fn in fns.values():
    jax.block_until_ready(fn())
  times = {k: [] for k in fns}
  for _ in range(repeats):
    for k, fn in fns.items():
      t = time.perf_counter()
      jax.block_until_ready(fn())
      times[k].append(time.perf_counter() - t)
  return {k: {'min': min(v), 'median': statistics.median(v)} for k, v in times.items()}
