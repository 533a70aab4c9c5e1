"""Sequential multi-token prediction modules (DeepSeek-V3, arXiv 2412.19437, §2.2).

Shape legend: B batch, L length, D model width, V vocabulary, K = depth (modules).

The main model is the plain decoder. Module k (1..D) at position i combines the
previous depth's hidden state and the embedding of token i+k:

  h'_k = M_k [RMSNorm(h_{k-1}); RMSNorm(Emb(t_{i+k}))]     M_k: a [2D -> D] projection
  h_k  = TRM_k(h'_k)                                        one transformer Block

and predicts token i+k+1 through the shared final norm and output head (the
embedding and head are shared with the main model; h_0 is the main trunk's output).
Loss: L_main + λ / D * sum_k CE_k, with λ = 0.3 early in training and 0.1 later in
DeepSeek-V3 (model.mtp.lam, lam_late from lam_switch_step on). The step that picks
λ is counted in a non-gradient collection (`mtp_state`, kept in the train state's
`extra`), since the loss function does not see the train step.
"""

from __future__ import annotations

import typing
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice.mtp import losses
from lattice.mtp import options as options_lib
from lattice.mtp.parallel import head_block
from lattice.nn import layers, transformer

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib

STATE = 'mtp_state'


class MTPModule(nn.Module):
  """One depth: norms, the [2D -> D] projection and a transformer block."""
  cfg: config_lib.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, h_BxLxD: jax.Array, emb_BxLxD: jax.Array,
               modality_BxL: jax.Array | None = None,
               positions_BxL: jax.Array | None = None,
               segment_ids_BxL: jax.Array | None = None) -> jax.Array:
    """Packed rows pass per-document positions and segment ids, so the block attends
    within each document, as the trunk's do."""
    cfg = self.cfg
    dtype, pdtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    norm = lambda name: layers.RMSNorm(cfg.norm_eps, dtype, pdtype, name=name)
    x_BxLx2D = jnp.concatenate([norm('hidden_norm')(h_BxLxD),
                                norm('embed_norm')(emb_BxLxD)], axis=-1)
    x_BxLxD = layers.dense(cfg.linear, cfg.d_model, ('mlp',), ('embed',), dtype=dtype,
                           param_dtype=pdtype, name='proj')(x_BxLx2D)
    positions_BxL = transformer.default_positions(x_BxLxD, positions_BxL)
    return head_block(cfg, self.decode, 'block')(x_BxLxD, positions_BxL, modality_BxL,
                                                 segment_ids_BxL)


class SequentialHeads(nn.Module):
  """D sequential MTP modules after the main head (an output stage of
  `lattice.model.Model`, sharing its scope: parameters `mtp_<k>`, and the λ step
  counter `mtp_state/step`)."""
  cfg: config_lib.ModelConfig
  decode: bool = False
  options = options_lib.Sequential  # this kind's fields of model.mtp (lattice.config)

  @staticmethod
  def trunk_config(cfg: config_lib.ModelConfig) -> config_lib.ModelConfig:
    return cfg

  @staticmethod
  def extra_passes(cfg: config_lib.ModelConfig) -> int:
    """Module blocks and unembedding passes beyond the plain decoder's, per token."""
    return cfg.mtp.depth

  @staticmethod
  def n_drafts(cfg: config_lib.ModelConfig) -> int:
    return cfg.mtp.depth

  def setup(self):
    self.modules_ = [MTPModule(self.cfg, self.decode, name=f'mtp_{k}')
                     for k in range(self.cfg.mtp.depth)]
    if self.cfg.mtp.lam_switch_step and not self.decode:
      self.step_count = self.variable(STATE, 'step', lambda: jnp.zeros((), jnp.int32))

  def depth_logits(self, h_BxLxD, next_BxLxK, logits_fn, embed_fn, modality_BxL=None,
                   positions_BxL=None, segment_ids_BxL=None):
    """Logits of every module; next_BxLxK[..., k] is token i+k+1 (the input of module k+1)."""
    out = []
    for k, module in enumerate(self.modules_):
      h_BxLxD = module(h_BxLxD, embed_fn(next_BxLxK[..., k]), modality_BxL,
                       positions_BxL, segment_ids_BxL)
      out.append(logits_fn(h_BxLxD))
    return out

  def __call__(self, h_BxLxD, logits_fn, embed_fn, batch, modality_BxL=None):
    """[main logits, module 1 logits, ...] for teacher-forced future tokens (from
    the batch's targets; the inputs repeated when there are none, at init)."""
    if self.cfg.mtp.lam_switch_step and not self.decode:
      self.step_count.value  # pylint: disable=pointless-statement  (creates it at init)
    depth = self.cfg.mtp.depth
    if 'targets' in batch:
      next_BxLxK = future_tokens(batch, depth)
    else:
      next_BxLxK = jnp.repeat(batch['inputs'][..., None], depth, axis=-1)
    return [logits_fn(h_BxLxD),
            *self.depth_logits(h_BxLxD, next_BxLxK, logits_fn, embed_fn, modality_BxL,
                               batch.get('positions'), batch.get('segment_ids'))]

  def main(self, h_BxLxD, logits_fn, modality_BxL=None, positions_BxL=None,
           segment_ids_BxL=None):
    del modality_BxL, positions_BxL, segment_ids_BxL
    return logits_fn(h_BxLxD)

  def drafts(self, h_BxLxD, next_BxL, logits_fn, embed_fn, modality_BxL=None):
    """Module 1 reads the chosen next token; deeper modules read the previous
    module's greedy draft."""
    drafts = []
    for module in self.modules_:
      h_BxLxD = module(h_BxLxD, embed_fn(next_BxL), modality_BxL)
      drafts.append(logits_fn(h_BxLxD))
      next_BxL = jnp.argmax(drafts[-1], axis=-1).astype(jnp.int32)
    return drafts

  @staticmethod
  def combine(cfg: config_lib.ModelConfig, ces: list[jax.Array], variables: dict,
              mutated: dict, mutable: list[str]):
    """CE_main + λ/D sum_k CE_k; counts the λ step. Returns (loss, metrics, mutated)."""
    mtp = cfg.mtp
    step = variables[STATE]['step'] if mtp.lam_switch_step else jnp.zeros((), jnp.int32)
    lam = lam_at(mtp, step)
    mtp_loss = sum(ces[1:]) / mtp.depth
    if mtp.lam_switch_step and STATE in mutable:
      mutated = {**mutated, STATE: {'step': step + 1}}
    return ces[0] + lam * mtp_loss, {
        'mtp_loss': mtp_loss, 'lam': lam,
        **{f'ce_depth{k}': ce for k, ce in enumerate(ces)}}, mutated

  @staticmethod
  def train_loss(cfg: config_lib.ModelConfig) -> Callable | None:
    del cfg
    return None


def future_tokens(batch: dict[str, jax.Array], depth: int) -> jax.Array:
  """int32[B, L, depth]: [..., k] is token i+k+1 (targets shifted left by k)."""
  return jnp.stack([losses.shifted_targets(batch, k + 1)[0] for k in range(depth)], -1)


def lam_at(mtp: config_lib.MTPConfig, step: jax.Array) -> jax.Array:
  """λ for a step: `lam` before `lam_switch_step`, `lam_late` from it on."""
  if not mtp.lam_switch_step:
    return jnp.asarray(mtp.lam, jnp.float32)
  return jnp.where(step < mtp.lam_switch_step, mtp.lam, mtp.lam_late).astype(jnp.float32)
