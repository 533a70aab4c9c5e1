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

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice import config as config_lib
from lattice.mtp import losses
from lattice.mtp.parallel import head_block
from lattice.nn import layers, transformer
from lattice.train import step as step_lib

STATE = 'mtp_state'


class MTPModule(nn.Module):
  """One depth: norms, the [2D -> D] projection and a transformer block."""
  cfg: config_lib.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, h_BxLxD: jax.Array, emb_BxLxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    dtype, pdtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    norm = lambda name: layers.RMSNorm(cfg.norm_eps, dtype, pdtype, name=name)
    x_BxLx2D = jnp.concatenate([norm('hidden_norm')(h_BxLxD),
                                norm('embed_norm')(emb_BxLxD)], axis=-1)
    x_BxLxD = layers.dense(cfg.linear, cfg.d_model, ('mlp',), ('embed',), dtype=dtype,
                           param_dtype=pdtype, name='proj')(x_BxLx2D)
    B, L = x_BxLxD.shape[:2]
    return head_block(cfg, self.decode, 'block')(
        x_BxLxD, jnp.broadcast_to(jnp.arange(L), (B, L)))


class SequentialMTP(nn.Module):
  """Plain decoder + D sequential MTP modules; `__call__` returns the main logits."""
  cfg: config_lib.ModelConfig
  decode: bool = False

  def setup(self):
    self.decoder = transformer.Transformer(self.cfg, self.decode)
    self.modules_ = [MTPModule(self.cfg, self.decode, name=f'mtp_{k}')
                     for k in range(self.cfg.mtp.depth)]
    if self.cfg.mtp.lam_switch_step and not self.decode:
      self.step_count = self.variable(STATE, 'step', lambda: jnp.zeros((), jnp.int32))

  def depth_logits(self, h_BxLxD: jax.Array, next_BxLxK: jax.Array) -> list[jax.Array]:
    """Logits of every module; next_BxLxK[..., k] is token i+k+1 (the input of module k+1)."""
    out = []
    for k, module in enumerate(self.modules_):
      h_BxLxD = module(h_BxLxD, self.decoder.embed_tokens(next_BxLxK[..., k]))
      out.append(self.decoder.logits(h_BxLxD))
    return out

  def all_logits(self, tokens_BxL: jax.Array, next_BxLxK: jax.Array) -> list[jax.Array]:
    """[main logits, module 1 logits, ...] for teacher-forced future tokens."""
    if self.cfg.mtp.lam_switch_step and not self.decode:
      self.step_count.value  # pylint: disable=pointless-statement  (creates it at init)
    h_BxLxD = self.decoder.hidden(tokens_BxL)
    return [self.decoder.logits(h_BxLxD), *self.depth_logits(h_BxLxD, next_BxLxK)]

  def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
    if self.is_initializing():  # create the modules' params (and KV caches)
      next_BxLxK = jnp.repeat(tokens_BxL[..., None], self.cfg.mtp.depth, axis=-1)
      return self.all_logits(tokens_BxL, next_BxLxK)[0]
    return self.decoder(tokens_BxL)

  def spec_forward(self, tokens_BxL: jax.Array, choose: Callable):
    """One decoding forward for self-speculative decoding (lattice/decode/speculative).

    `choose(main logits)` returns (next token at each position, ...): module 1 reads
    it; deeper modules read the previous module's greedy draft. Returns (main logits,
    choose's outputs, draft logits [B, L, K, V]).
    """
    h_BxLxD = self.decoder.hidden(tokens_BxL)
    main_BxLxV = self.decoder.logits(h_BxLxD)
    chosen = choose(main_BxLxV)
    nxt_BxL, drafts = chosen[0], []
    for module in self.modules_:
      h_BxLxD = module(h_BxLxD, self.decoder.embed_tokens(nxt_BxL))
      drafts.append(self.decoder.logits(h_BxLxD))
      nxt_BxL = jnp.argmax(drafts[-1], axis=-1).astype(jnp.int32)
    return main_BxLxV, chosen, jnp.stack(drafts, axis=2)


def future_tokens(batch: dict[str, jax.Array], depth: int) -> jax.Array:
  """int32[B, L, depth]: [..., k] is token i+k+1 (targets shifted left by k)."""
  return jnp.stack([losses.shifted_targets(batch, k + 1)[0] for k in range(depth)], -1)


def lam_at(mtp: config_lib.MTPConfig, step: jax.Array) -> jax.Array:
  """λ for a step: `lam` before `lam_switch_step`, `lam_late` from it on."""
  if not mtp.lam_switch_step:
    return jnp.asarray(mtp.lam, jnp.float32)
  return jnp.where(step < mtp.lam_switch_step, mtp.lam, mtp.lam_late).astype(jnp.float32)


def loss_fn(model: SequentialMTP, variables: dict, batch: dict[str, jax.Array],
            mutable: list[str]):
  """CE_main + λ/D sum_k CE_k + sown aux losses; reports each depth's CE."""
  mtp = model.cfg.mtp
  logits, mutated = model.apply(
      variables, batch['inputs'], future_tokens(batch, mtp.depth), method='all_logits',
      mutable=['intermediates', *mutable])
  ces = [losses.head_ce(l, batch, k + 1) for k, l in enumerate(logits)]
  step = variables[STATE]['step'] if mtp.lam_switch_step else jnp.zeros((), jnp.int32)
  lam = lam_at(mtp, step)
  mtp_loss = sum(ces[1:]) / mtp.depth
  aux = losses.sown_aux(mutated)
  loss = ces[0] + lam * mtp_loss + aux
  if mtp.lam_switch_step and STATE in mutable:
    mutated = {**mutated, STATE: {'step': step + 1}}
  metrics = {'loss': loss, 'ce': ces[0], 'mtp_loss': mtp_loss, 'lam': lam,
             'aux_loss': aux, **{f'ce_depth{k}': ce for k, ce in enumerate(ces)},
             **step_lib.sown_metrics(mutated.get('intermediates', {}))}
  return loss, (metrics, mutated)
