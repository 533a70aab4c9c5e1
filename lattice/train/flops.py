"""Compute accounting: parameter counts, train FLOPs per token, a measured matmul peak.

FLOPs per token follow PaLM (arXiv 2204.02311, App. B): 6 N for the matmuls of the
N matmul parameters (forward 2N, backward 4N) plus 12 * layers * seq_len * attn_width
for attention scores and values. N counts every matrix a token goes through once,
so the tied embedding counts as the output projection (the lookup is free).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from lattice import config as config_lib


def count_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


# Norm gains and biases: vectors, even when nn.scan stacks them into [layers, D].
VECTOR_PARAMS = ('scale', 'bias')


def _expert_fraction(path: tuple, model_cfg: config_lib.ModelConfig) -> float:
  """Routed-expert weights (ffn/wi_0 etc. with an expert axis) count k/E per token."""
  if model_cfg.ffn.kind == 'moe' and path[-1] in ('wi_0', 'wi_1', 'wo'):
    return model_cfg.ffn.top_k / model_cfg.ffn.n_experts
  return 1.0


def matmul_params(params: Any, model_cfg: config_lib.ModelConfig,
                  active: bool = True) -> int:
  """Parameters in matrices a token goes through (excludes norms and the lookup);
  with `active`, MoE experts count only the k of E a token is routed to."""
  total = 0.0
  for path, leaf in traverse_util.flatten_dict(params).items():
    if 'embedding' in path:
      total += leaf.size if model_cfg.tie_embeddings else 0
    elif path[-1] not in VECTOR_PARAMS and leaf.ndim >= 2:
      total += leaf.size * (_expert_fraction(path, model_cfg) if active else 1.0)
  return int(total)


def active_params(params: Any, model_cfg: config_lib.ModelConfig) -> int:
  """All parameters, with routed experts counted at k/E (DeepSeek's 'activated')."""
  return int(sum(leaf.size * _expert_fraction(path, model_cfg)
                 for path, leaf in traverse_util.flatten_dict(params).items()))


def train_flops_per_token(params: Any, model_cfg: config_lib.ModelConfig,
                          seq_len: int) -> float:
  attn_width = model_cfg.n_heads * model_cfg.head_dim
  return float(6 * matmul_params(params, model_cfg)
               + 12 * model_cfg.n_layers * seq_len * attn_width)


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
