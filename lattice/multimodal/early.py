"""Early fusion: image patches projected straight into the decoder (no image encoder).

Shape legend: B batch, L length, D model width, N image slots, H/W/C image,
P patches per image, Q values per patch, M = N * P patch slots, V vocabulary.

Shukor et al. 2025 (arXiv 2504.07951): a native early-fusion model embeds each
patch with one linear layer into the decoder width and trains the decoder on the
interleaved sequence, loss on text. With `frontend.image_tokens='discrete'` the
patches are instead replaced by their nearest k-means code (Chameleon, arXiv
2405.09818), whose ids extend the text vocabulary (see `lattice.multimodal.codebook`).
"""

from __future__ import annotations

import typing

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice.multimodal import codebook as codebook_lib
from lattice.multimodal import options as options_lib
from lattice.multimodal import patches as patches_lib
from lattice.data import tokenizer as tokenizer_lib
from lattice.nn import layers

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib


def scatter_images(x_BxLxD: jax.Array, img_BxMxD: jax.Array,
                   patch_index_BxL: jax.Array) -> jax.Array:
  """Puts patch slot `patch_index` of `img` at every image position (index >= 0)."""
  idx_BxL = jnp.maximum(patch_index_BxL, 0)
  gathered_BxLxD = jnp.take_along_axis(img_BxMxD, idx_BxL[..., None], axis=1)
  return jnp.where(patch_index_BxL[..., None] >= 0, gathered_BxLxD.astype(x_BxLxD.dtype),
                   x_BxLxD)


def flat_patches(cfg: config_lib.ModelConfig, images_BxNxHxWxC: jax.Array) -> jax.Array:
  """[B, N, H, W, C] -> [B, M, Q] (every image's patches in order)."""
  p_BxNxPxQ = patches_lib.patchify(images_BxNxHxWxC, cfg.frontend.patch_size)
  B, N, P, Q = p_BxNxPxQ.shape
  return p_BxNxPxQ.reshape(B, N * P, Q)


def image_inputs(cfg: config_lib.Config) -> dict[str, jax.Array]:
  """Zero images and no patch slots for a one-row batch (`init`). The frontend
  fields were checked when the config was built (lattice.multimodal.options)."""
  f, L = cfg.model.frontend, cfg.data.seq_len
  return {'images': jnp.zeros((1, f.max_images, f.image_size, f.image_size, 3), jnp.float32),
          'patch_index': jnp.full((1, L), -1, jnp.int32),
          'modality': jnp.zeros((1, L), jnp.int32)}


def image_targets(batch, seen_BxL, image_loss: float):
  """Targets and weights; with discrete image tokens, image-slot targets become the
  codes the model saw one position later, weighted `image_loss`."""
  targets_BxL, weights_BxL = batch['targets'], batch['weights']
  if not image_loss:
    return targets_BxL, weights_BxL
  # The target at t is the input at t+1 (the packer never cuts an image, so an
  # image target always has its input in the row).
  next_seen_BxL = jnp.concatenate([seen_BxL[:, 1:], seen_BxL[:, -1:]], axis=1)
  is_image_BxL = targets_BxL == tokenizer_lib.IMG_ID
  return (jnp.where(is_image_BxL, next_seen_BxL, targets_BxL),
          weights_BxL + image_loss * is_image_BxL)


class EarlyFusion(nn.Module):
  """Input stage: `(embed_fn, batch) -> (x [B, L, D], ids seen [B, L])`.

  Text tokens go through the decoder's embedding (`embed_fn`); image slots get
  their patch's linear projection (or, discrete, the embedding of its code). A
  batch without images (text decoding) is embedded as text. An input stage of
  `lattice.model.Model`, sharing its scope (parameters `patch_embed` or the
  `codebook` collection beside the trunk's).
  """
  cfg: config_lib.ModelConfig
  decode: bool = False
  options = options_lib.Early  # its fields of model.frontend, checked at config build

  # Top-level names of the image path's variables (FLOP accounting).
  IMAGE_PATH = ('patch_embed', 'codebook')

  @staticmethod
  def init_inputs(cfg: config_lib.Config) -> dict:
    """Zero images, no patch slots: the extra inputs `init` needs."""
    return image_inputs(cfg)

  @staticmethod
  def targets(cfg: config_lib.ModelConfig, batch, seen_BxL):
    return image_targets(batch, seen_BxL, cfg.frontend.image_loss)

  @nn.compact
  def __call__(self, embed_fn, batch):
    cfg, tokens_BxL = self.cfg, batch['inputs']
    if 'images' not in batch:
      return embed_fn(tokens_BxL), tokens_BxL
    patch_index_BxL = batch['patch_index']
    patches_BxMxQ = flat_patches(cfg, batch['images'])
    if cfg.frontend.image_tokens == 'discrete':
      codes_BxM = codebook_lib.Codebook(cfg.frontend, name='codebook')(patches_BxMxQ)
      ids_BxL = jnp.take_along_axis(codes_BxM, jnp.maximum(patch_index_BxL, 0), axis=1)
      tokens_BxL = jnp.where(patch_index_BxL >= 0, codebook_lib.FIRST_CODE_ID + ids_BxL,
                             tokens_BxL)
      return embed_fn(tokens_BxL), tokens_BxL
    kw = dict(dtype=layers.dtype_of(cfg.dtype), param_dtype=layers.dtype_of(cfg.param_dtype))
    img_BxMxD = layers.dense(cfg.linear, cfg.d_model, (None,), ('embed',),
                             name='patch_embed', **kw)(patches_BxMxQ)
    return scatter_images(embed_fn(tokens_BxL), img_BxMxD, patch_index_BxL), tokens_BxL
