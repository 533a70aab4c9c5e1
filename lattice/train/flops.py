"""Compute accounting for runs: counts and FLOPs per token, and a measured matmul peak.

The counting lives with the model (`lattice.nn.flops` for the decoder,
`lattice.model.flops` for the composed model); this module gathers what the train
loop reports.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from lattice.model.flops import train_flops_per_token  # noqa: F401
from lattice.nn.flops import (  # noqa: F401
    VECTOR_PARAMS, active_params, count_params, logical_axes, matmul_params)


@functools.lru_cache(maxsize=None)  # once per process: every run in it shares the peak
def measure_matmul_peak(n: int = 0, dtype=jnp.float32, repeats: int = 5,
                        chain: int = 0) -> float:
  """FLOP/s of large square `jnp.dot`s on the default backend (best of `repeats`).

  `n` 0 picks 2048 on CPU and 8192 on accelerators, where a 2048 product takes tens
  of microseconds and launch overhead would dominate; `chain` products run inside
  one jitted call (default 1 on CPU, 20 elsewhere) for the same reason.
  """
  cpu = jax.default_backend() == 'cpu'
  n = n or (2048 if cpu else 8192)
  chain = chain or (1 if cpu else 20)
  a = jax.random.normal(jax.random.key(0), (n, n), dtype) / n ** 0.5
  b = jax.random.normal(jax.random.key(1), (n, n), dtype) / n ** 0.5

  @jax.jit
  def f(a, b):
    return jax.lax.fori_loop(0, chain, lambda _, x: jnp.dot(x, b), a)

  f(a, b).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 * chain / best
