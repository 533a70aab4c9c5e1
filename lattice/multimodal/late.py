"""Late fusion: a ViT encoder (trained from scratch) + LLaVA's MLP adapter + the decoder.

Shape legend: B batch, L length, D decoder width, E encoder width, N image slots,
P patches per image, Q values per patch, M = N * P, H heads, Dh head width.

The encoder embeds each image's patches (linear + learned position embedding),
runs `enc_layers` pre-norm bidirectional transformer blocks over them, and LLaVA's
projector (arXiv 2310.03744: Linear(E, D), GELU, Linear(D, D)) maps every patch
feature into the decoder width; the P features of an image fill its P slots in the
token stream, exactly where early fusion puts its projected patches, so the two
frontends see the same sequences. Every projection goes through `layers.dense`, so
`model.linear.kind` (BitNet, QuEST) quantizes the encoder and adapter too.
"""

from __future__ import annotations

import typing

import flax.linen as nn
import jax

from lattice.multimodal import early, patches as patches_lib
from lattice.multimodal import options as options_lib
from lattice.nn import layers

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib


class EncoderBlock(nn.Module):
  cfg: config_lib.ModelConfig

  @nn.compact
  def __call__(self, x_BxPxE: jax.Array) -> jax.Array:
    cfg, f = self.cfg, self.cfg.frontend
    kw = dict(dtype=layers.dtype_of(cfg.dtype), param_dtype=layers.dtype_of(cfg.param_dtype))
    E, H = f.enc_d_model, f.enc_heads
    Dh = E // H
    norm = lambda name: layers.RMSNorm(cfg.norm_eps, name=name, **kw)
    h_BxPxE = norm('attention_norm')(x_BxPxE)
    qkv = [layers.dense(cfg.linear, (H, Dh), ('embed',), ('heads', 'head_dim'), name=n,
                        **kw)(h_BxPxE) for n in ('query', 'key', 'value')]
    a_BxPxHxDh = jax.nn.dot_product_attention(*qkv, is_causal=False)
    x_BxPxE = x_BxPxE + layers.dense(cfg.linear, E, ('heads', 'head_dim'), ('embed',),
                                     name='out', **kw)(a_BxPxHxDh)
    h_BxPxF = jax.nn.gelu(layers.dense(cfg.linear, 4 * E, ('embed',), ('mlp',),
                                       name='fc1', **kw)(norm('mlp_norm')(x_BxPxE)))
    return x_BxPxE + layers.dense(cfg.linear, E, ('mlp',), ('embed',), name='fc2',
                                  **kw)(h_BxPxF)


class ViT(nn.Module):
  """patches [B, P, Q] -> features [B, P, E]."""
  cfg: config_lib.ModelConfig

  @nn.compact
  def __call__(self, p_BxPxQ: jax.Array) -> jax.Array:
    cfg, f = self.cfg, self.cfg.frontend
    kw = dict(dtype=layers.dtype_of(cfg.dtype), param_dtype=layers.dtype_of(cfg.param_dtype))
    x_BxPxE = layers.dense(cfg.linear, f.enc_d_model, (None,), ('embed',),
                           name='patch_embed', **kw)(p_BxPxQ)
    pos_PxE = self.param('position', nn.with_logical_partitioning(
        nn.initializers.normal(0.02), (None, 'embed')),
        (p_BxPxQ.shape[1], f.enc_d_model), kw['param_dtype'])
    x_BxPxE = x_BxPxE + pos_PxE.astype(x_BxPxE.dtype)
    for i in range(f.enc_layers):
      x_BxPxE = EncoderBlock(cfg, name=f'layers_{i}')(x_BxPxE)
    return layers.RMSNorm(cfg.norm_eps, name='final_norm', **kw)(x_BxPxE)


class Adapter(nn.Module):
  """LLaVA-1.5's projector: Linear(E, D) -> GELU -> Linear(D, D)."""
  cfg: config_lib.ModelConfig

  @nn.compact
  def __call__(self, x_BxMxE: jax.Array) -> jax.Array:
    cfg = self.cfg
    kw = dict(dtype=layers.dtype_of(cfg.dtype), param_dtype=layers.dtype_of(cfg.param_dtype))
    h = jax.nn.gelu(layers.dense(cfg.linear, cfg.d_model, (None,), ('embed',),
                                 name='fc1', **kw)(x_BxMxE))
    return layers.dense(cfg.linear, cfg.d_model, (None,), ('embed',), name='fc2', **kw)(h)


class LateFusion(nn.Module):
  """Input stage: `(embed_fn, batch) -> (x [B, L, D], ids seen [B, L])`: ViT
  features through the adapter at the image slots. An input stage of
  `lattice.model.Model`, sharing its scope (parameters `encoder`, `adapter`)."""
  cfg: config_lib.ModelConfig
  decode: bool = False
  options = options_lib.Late  # its fields of model.frontend, checked at config build

  IMAGE_PATH = ('encoder', 'adapter')

  @staticmethod
  def init_inputs(cfg: config_lib.Config) -> dict:
    """Zero images, no patch slots: the extra inputs `init` needs."""
    return early.image_inputs(cfg)

  @staticmethod
  def targets(cfg: config_lib.ModelConfig, batch, seen_BxL):
    return early.image_targets(batch, seen_BxL, cfg.frontend.image_loss)

  @nn.compact
  def __call__(self, embed_fn, batch):
    cfg, tokens_BxL = self.cfg, batch['inputs']
    if 'images' not in batch:
      return embed_fn(tokens_BxL), tokens_BxL
    p_BxNxPxQ = patches_lib.patchify(batch['images'], cfg.frontend.patch_size)
    B, N, P, Q = p_BxNxPxQ.shape
    feats_BNxPxE = ViT(cfg, name='encoder')(p_BxNxPxQ.reshape(B * N, P, Q))
    img_BxMxD = Adapter(cfg, name='adapter')(feats_BNxPxE.reshape(B, N * P, -1))
    return (early.scatter_images(embed_fn(tokens_BxL), img_BxMxD, batch['patch_index']),
            tokens_BxL)
