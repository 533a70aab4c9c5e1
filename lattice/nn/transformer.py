"""The Llama-style decoder: pre-norm blocks of GQA attention and a (gated) FFN.

Shape legend: B batch, L length, D model width, V vocabulary.

One `Transformer`, composed from typed sub-configs: the projection kind comes from
`cfg.linear` (through `layers.dense`), the FFN class from `cfg.ffn.kind` (through
the table `ffns.FFNS`). Layers are optionally scanned (`nn.scan`, params stacked on a
'layers' axis) and rematerialised with a named checkpoint policy.
"""

from __future__ import annotations

import typing

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice.errors import ConfigError
from lattice.nn import attention, layers
from lattice.nn.ffns import FFNS  # noqa: F401  (the table; re-exported)

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib

ACT = ('act_batch', 'act_len', 'act_embed')

REMAT_POLICIES = {
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Block(nn.Module):
  cfg: config_lib.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array,
               modality_BxL: jax.Array | None = None,
               segment_ids_BxL: jax.Array | None = None) -> jax.Array:
    cfg = self.cfg
    norm = lambda name: layers.RMSNorm(cfg.norm_eps, layers.dtype_of(cfg.dtype),
                                       layers.dtype_of(cfg.param_dtype), name=name)
    x_BxLxD = layers.constrain(x_BxLxD, ACT)
    h_BxLxD = x_BxLxD + attention.Attention(cfg, self.decode, name='attention')(
        norm('attention_norm')(x_BxLxD), positions_BxL, segment_ids_BxL)
    h_BxLxD = layers.constrain(h_BxLxD, ACT)
    ffn = FFNS[cfg.ffn.kind](cfg=cfg, name='ffn')
    # Modality ids (multimodal frontends only) let an MoE route by modality.
    extra = () if modality_BxL is None else (modality_BxL,)
    out_BxLxD = h_BxLxD + ffn(norm('ffn_norm')(h_BxLxD), *extra)
    return layers.constrain(out_BxLxD, ACT)


class ScanBlock(Block):
  """Block with the (carry, per-layer output) signature nn.scan expects."""

  def __call__(self, x_BxLxD, positions_BxL, modality_BxL=None,  # pytype: disable=signature-mismatch
               segment_ids_BxL=None):
    return super().__call__(x_BxLxD, positions_BxL, modality_BxL, segment_ids_BxL), None


def _block_class(cfg: config_lib.ModelConfig):
  cls = ScanBlock if cfg.scan_layers else Block
  if cfg.remat == 'none':
    return cls
  # prevent_cse is only needed outside scan (scan already blocks CSE across layers).
  return nn.remat(cls, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)


class Transformer(nn.Module):
  """Decoder-only LM. `__call__(tokens) -> logits`; `hidden` and `logits` are exposed
  separately so multi-token heads and multimodal frontends can reuse the trunk."""
  cfg: config_lib.ModelConfig
  decode: bool = False

  def setup(self):
    cfg = self.cfg
    if cfg.vocab_size <= 0:
      raise ConfigError(
          'model.vocab_size: must be resolved (> 0) before building the model')
    dtype, pdtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    self.embed = layers.Embed(cfg.vocab_size, cfg.d_model, dtype, pdtype)
    block = _block_class(cfg)
    if cfg.scan_layers:
      self.blocks = nn.scan(
          block, variable_axes={True: 0},  # every collection stacks per layer
          split_rngs={'params': True, 'dropout': True}, in_axes=nn.broadcast,
          length=cfg.n_layers, metadata_params={nn.PARTITION_NAME: 'layers'},
      )(cfg, self.decode, name='layers')
    else:
      self.blocks = [block(cfg, self.decode, name=f'layers_{i}')
                     for i in range(cfg.n_layers)]
    self.final_norm = layers.RMSNorm(cfg.norm_eps, dtype, pdtype)
    if not cfg.tie_embeddings:
      # The output head stays float whatever model.linear says (BitNet, QuEST).
      self.unembed = layers.Linear((cfg.vocab_size,), ('embed',), ('vocab',),
                                   dtype=dtype, param_dtype=pdtype)

  def embed_tokens(self, tokens_BxL: jax.Array) -> jax.Array:
    return layers.constrain(self.embed(tokens_BxL), ACT)

  def trunk(self, x_BxLxD: jax.Array, positions_BxL: jax.Array | None = None,
            modality_BxL: jax.Array | None = None,
            segment_ids_BxL: jax.Array | None = None) -> jax.Array:
    """Runs the blocks on embeddings; returns the pre-final-norm hidden states.
    `modality_BxL` (0 text, 1 image; multimodal frontends) reaches every FFN;
    `segment_ids_BxL` (packed rows) keeps attention inside each document, and
    `positions_BxL` (default 0..L-1) then restart per document."""
    positions_BxL = default_positions(x_BxLxD, positions_BxL)
    if self.cfg.scan_layers:
      x_BxLxD, _ = self.blocks(x_BxLxD, positions_BxL, modality_BxL, segment_ids_BxL)
    else:
      for block in self.blocks:
        x_BxLxD = block(x_BxLxD, positions_BxL, modality_BxL, segment_ids_BxL)
    return x_BxLxD

  def hidden(self, tokens_BxL: jax.Array, positions_BxL: jax.Array | None = None):
    return self.trunk(self.embed_tokens(tokens_BxL), positions_BxL)

  def logits(self, h_BxLxD: jax.Array) -> jax.Array:
    h_BxLxD = self.final_norm(h_BxLxD)
    if self.cfg.tie_embeddings:
      out_BxLxV = self.embed.attend(h_BxLxD)
    else:
      out_BxLxV = self.unembed(h_BxLxD)
    return layers.constrain(out_BxLxV.astype(jnp.float32), ('act_batch', 'act_len', 'act_vocab'))

  def __call__(self, tokens_BxL: jax.Array, positions_BxL: jax.Array | None = None):
    return self.logits(self.hidden(tokens_BxL, positions_BxL))


def default_positions(x_BxL: jax.Array, positions_BxL: jax.Array | None) -> jax.Array:
  """`positions_BxL`, or 0..L-1 in every row when None (one document per row)."""
  if positions_BxL is not None:
    return positions_BxL
  B, L = x_BxL.shape[:2]
  return jnp.broadcast_to(jnp.arange(L), (B, L))


def init_cache(model: Transformer, batch_size: int) -> dict:
  """A zeroed KV cache for `model` (which must have decode=True)."""
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((batch_size, 1), jnp.int32)))
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['cache'])
