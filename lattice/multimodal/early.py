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

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice import config as config_lib
from lattice.multimodal import codebook as codebook_lib
from lattice.multimodal import patches as patches_lib
from lattice.nn import layers, transformer


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


class EarlyFusion(nn.Module):
  """`__call__(tokens, images, patch_index, modality) -> logits [B, L, V]`.

  Text tokens go through the decoder's embedding; image slots get their patch's
  linear projection (or, discrete, the embedding of its code). `modality` reaches
  every FFN, so MoE layers can route or count by modality.
  """
  cfg: config_lib.ModelConfig
  decode: bool = False

  def embed(self, tokens_BxL, images_BxNxHxWxC, patch_index_BxL):
    cfg = self.cfg
    lm = transformer.Transformer(cfg, self.decode, name='lm')
    patches_BxMxQ = flat_patches(cfg, images_BxNxHxWxC)
    if cfg.frontend.image_tokens == 'discrete':
      codes_BxM = codebook_lib.Codebook(cfg.frontend, name='codebook')(patches_BxMxQ)
      ids_BxL = jnp.take_along_axis(codes_BxM, jnp.maximum(patch_index_BxL, 0), axis=1)
      tokens_BxL = jnp.where(patch_index_BxL >= 0, codebook_lib.FIRST_CODE_ID + ids_BxL,
                             tokens_BxL)
      return lm, lm.embed_tokens(tokens_BxL), tokens_BxL
    kw = dict(dtype=layers.dtype_of(cfg.dtype), param_dtype=layers.dtype_of(cfg.param_dtype))
    img_BxMxD = layers.dense(cfg.linear, cfg.d_model, (None,), ('embed',),
                             name='patch_embed', **kw)(patches_BxMxQ)
    return lm, scatter_images(lm.embed_tokens(tokens_BxL), img_BxMxD,
                              patch_index_BxL), tokens_BxL

  @nn.compact
  def __call__(self, tokens_BxL, images_BxNxHxWxC, patch_index_BxL, modality_BxL,
               return_tokens: bool = False):
    """Logits; with `return_tokens`, also the ids the decoder saw (discrete codes at
    image slots), which the loss uses as targets for image tokens."""
    lm, x_BxLxD, seen_BxL = self.embed(tokens_BxL, images_BxNxHxWxC, patch_index_BxL)
    logits_BxLxV = lm.logits(lm.trunk(x_BxLxD, None, modality_BxL))
    return (logits_BxLxV, seen_BxL) if return_tokens else logits_BxLxV
