"""Train FLOPs per token of multi-token models.

The decoder count (lattice/train/flops.py) sees every weight matrix once and the
attention of `model.n_layers` blocks. Multi-token models do more per token:
- parallel heads: `n_layers` already holds the trunk plus one head block; each of
  the other n - 1 heads adds a block's attention and a pass through the shared
  unembedding (its weights are counted once, its use n times);
- sequential modules: each of the `depth` modules adds a block's attention and a
  pass through the shared output head.
"""

from __future__ import annotations

from typing import Any

from lattice import config as config_lib
from lattice.train import flops as flops_lib


def extra_passes(model_cfg: config_lib.ModelConfig) -> int:
  """Blocks and unembedding passes beyond the plain decoder's, per token."""
  if model_cfg.mtp.kind == 'parallel':
    return model_cfg.mtp.n - 1
  if model_cfg.mtp.kind == 'sequential':
    return model_cfg.mtp.depth
  return 0


def train_flops_per_token(params: Any, model_cfg: config_lib.ModelConfig,
                          seq_len: int) -> float:
  base = flops_lib.train_flops_per_token(params, model_cfg, seq_len)
  attn_width = model_cfg.n_heads * model_cfg.head_dim
  unembed = 6 * model_cfg.vocab_size * model_cfg.d_model
  return base + extra_passes(model_cfg) * (unembed + 12 * seq_len * attn_width)
