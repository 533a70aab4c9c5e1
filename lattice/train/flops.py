"""Compute accounting for runs: counts and FLOPs per token, and the peaks MFU is
measured against: the chips' published peak (`lattice.chips`) and a timed matmul.

The counting lives with the model (`lattice.nn.flops` for the decoder,
`lattice.model.flops` for the composed model); this module gathers what the train
loop reports.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from lattice import chips

from lattice.model.flops import train_flops_per_token  # noqa: F401
from lattice.nn.flops import (  # noqa: F401
    VECTOR_PARAMS, active_params, count_params, logical_axes, matmul_params)

__all__ = ['VECTOR_PARAMS', 'active_params', 'count_params', 'logical_axes', 'matmul_params',
           'measure_matmul_peak', 'measured_peak', 'spec_peak', 'train_flops_per_token']


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


def spec_peak(devices) -> float:
  """Published dense bf16 FLOP/s of `devices` together (`lattice.chips`: the chip
  of the first device's `device_kind` times the device count); 0.0 when the chip
  has no published peak (a CPU, an unlisted GPU)."""
  devices = list(devices)
  chip = chips.for_device_kind(devices[0].device_kind) if devices else None
  return chip.bf16_flops * len(devices) if chip else 0.0


def measured_peak(devices) -> float:
  """FLOP/s of the timed matmul (`measure_matmul_peak`, one device) scaled to
  `devices`: times the device count on accelerators; on CPU once, since simulated
  CPU devices share the same cores."""
  devices = list(devices)
  per_device = measure_matmul_peak()
  if devices and devices[0].platform == 'cpu':
    return per_device
  return per_device * max(len(devices), 1)
