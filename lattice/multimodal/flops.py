"""Compute accounting for multimodal models: the image path counts too.

Per token (PaLM's 6N + attention rule, `lattice.nn.flops`), averaged over the
sequence: the decoder's matmuls and attention for every token, plus the image
path's for every patch slot, i.e. times the fraction M / L of sequence positions
that are patch slots (M = max_images * patches per image; slots left empty by the
packer are computed too, so they are counted). The image path is early fusion's
patch projection, or late fusion's ViT (its matmuls and its attention over the P
patches of an image) plus the adapter — Shukor et al. 2025 count the encoder's
compute, which is what makes late fusion pay for its encoder at equal FLOPs.
"""

from __future__ import annotations

from typing import Any

from flax import traverse_util

from lattice import config as config_lib
from lattice.multimodal import patches as patches_lib
from lattice.nn import flops as flops_lib


def image_slot_fraction(model_cfg: config_lib.ModelConfig, seq_len: int) -> float:
  f = model_cfg.frontend
  return f.max_images * patches_lib.n_patches(f.image_size, f.patch_size) / seq_len


def image_path_matmul_params(params: Any) -> int:
  """Matrices of the image path's parameters (patch embedding, encoder, adapter)."""
  total = 0
  for path, leaf in traverse_util.flatten_dict(params).items():
    if path[-1] not in flops_lib.VECTOR_PARAMS and leaf.ndim >= 2:
      if path[-1] == 'position':  # learned position table: an add, not a matmul
        continue
      total += leaf.size
  return int(total)


def encoder_attention_flops(model_cfg: config_lib.ModelConfig) -> float:
  """Train FLOPs of the ViT's attention per patch (scores + values over P patches)."""
  if model_cfg.frontend.kind != 'late':
    return 0.0
  f = model_cfg.frontend
  P = patches_lib.n_patches(f.image_size, f.patch_size)
  return 12.0 * f.enc_layers * P * f.enc_d_model


def image_flops_per_token(image_params: Any, model_cfg: config_lib.ModelConfig,
                          seq_len: int) -> float:
  """The image path's train FLOPs per patch slot x the slot fraction, per token."""
  image = 6.0 * image_path_matmul_params(image_params) + encoder_attention_flops(model_cfg)
  return image_slot_fraction(model_cfg, seq_len) * image
