"""Parameter counts and decoder train FLOPs per token (PaLM's rule).

FLOPs per token follow PaLM (arXiv 2204.02311, App. B): 6 N for the matmuls of the
N matmul parameters (forward 2N, backward 4N) plus 12 * layers * seq_len * attn_width
for attention scores and values. N counts every matrix a token goes through once,
so the tied embedding counts as the output projection (the lookup is free).
Techniques that add compute outside the decoder's blocks (extra heads, an image
path) add their share in `lattice.model.flops`.
"""

from __future__ import annotations

from typing import Any

import jax
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
