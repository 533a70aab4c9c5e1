"""Train FLOPs per token of the composed model.

The decoder's count (`lattice.nn.flops`, PaLM's 6N + attention) sees every weight
matrix once and the attention of the trunk's blocks. Two stages add compute:
- output heads: each extra pass (a parallel head beyond the first, a sequential
  module) adds a block's attention and a pass through the shared unembedding (its
  weights are counted once, its use once per pass) — `HEADS[kind].extra_passes`;
- an image frontend: its parameters' matmuls and (late fusion) its encoder's
  attention for every patch slot, times the share of positions that are patch
  slots (`lattice.multimodal.flops`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from lattice import config as config_lib
from lattice import mtp, multimodal
from lattice.multimodal import flops as image_flops
from lattice.nn import flops as flops_lib


def train_flops_per_token(params: Any, model_cfg: config_lib.ModelConfig,
                          seq_len: int, axes: Any = None) -> float:
  """Train FLOPs per token of `model_cfg`'s model with parameters `params`: boxed,
  or unboxed with their logical `axes` (`nn.flops.logical_axes`, `Setup.param_axes`),
  which find the per-expert weights; ValueError if neither."""
  image_path = multimodal.FRONTENDS[model_cfg.frontend.kind].IMAGE_PATH
  decoder = {k: v for k, v in params.items() if k not in image_path}
  decoder_axes = None if axes is None else {
      k: v for k, v in axes.items() if k not in image_path}
  total = flops_lib.train_flops_per_token(decoder, model_cfg, seq_len, decoder_axes)
  extra = mtp.HEADS[model_cfg.mtp.kind].extra_passes(model_cfg)
  if extra:
    attn_width = model_cfg.n_heads * model_cfg.head_dim
    unembed = 6 * model_cfg.vocab_size * model_cfg.d_model
    total += extra * (unembed + 12 * seq_len * attn_width)
  if image_path:
    image = nn.unbox({k: v for k, v in params.items() if k in image_path})
    total += image_flops.image_flops_per_token(image, model_cfg, seq_len)
  return total
