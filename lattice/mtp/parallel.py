"""Parallel multi-token heads (Gloeckle et al. 2024, arXiv 2404.19737).

Shape legend: B batch, L length, D model width, V vocabulary, K draft heads.

A shared trunk of `n_layers - 1` blocks feeds n heads, each one more transformer
`Block`; every head goes through the shared final norm and (tied) unembedding.
Head i (1-based) predicts the token i steps ahead; head 1 is the ordinary next-token
head, so with n = 1 the model is exactly the plain decoder of `n_layers` blocks, and
`__call__` always returns head 1's logits (eval and sampling work unchanged).

Loss: sum_i w_i CE_i (w_i = 1 unless model.mtp.loss_weights). The memory-efficient
variant (model.mtp.memory_efficient) runs the trunk once, then each head's forward
and backward in turn, accumulating the gradient with respect to the trunk output,
and finally one backward through the trunk: only one head's [B, L, V] logits and
their softmax are alive at a time (Gloeckle et al. §2, Fig. 2), so peak memory is
O(V + D) per position instead of O(nV + D). The heads run in a `lax.scan` over their
stacked parameters so that XLA reuses one head's buffers for the next. It returns the same loss and gradients
as the plain loss (tests/mtp_test.py) through a surrogate whose gradient is the
accumulated one.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice.mtp import losses
from lattice.mtp import options as options_lib
from lattice.nn import losses as nn_losses
from lattice.nn import transformer

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib


def head_block(cfg: config_lib.ModelConfig, decode: bool, name: str) -> nn.Module:
  """One transformer block (same Block, FFN kind and linear kind as the trunk)."""
  cls = transformer.Block
  if cfg.remat != 'none':
    cls = nn.remat(cls, policy=transformer.REMAT_POLICIES[cfg.remat])
  return cls(cfg, decode, name=name)


class ParallelHeads(nn.Module):
  """n parallel heads on the trunk output; head 0 is the next-token head.

  An output stage of `lattice.model.Model` (which shares its scope, so the heads'
  parameters are `heads_<i>` beside the trunk's). `logits_fn` is the trunk's shared
  final norm + unembedding.
  """
  cfg: config_lib.ModelConfig
  decode: bool = False
  options = options_lib.Parallel  # this kind's fields of model.mtp (lattice.config)

  @staticmethod
  def trunk_config(cfg: config_lib.ModelConfig) -> config_lib.ModelConfig:
    """`model.n_layers` counts one head block, so the trunk has n_layers - 1."""
    return dataclasses.replace(cfg, n_layers=cfg.n_layers - 1)

  @staticmethod
  def extra_passes(cfg: config_lib.ModelConfig) -> int:
    """Head blocks and unembedding passes beyond the plain decoder's, per token."""
    return cfg.mtp.n - 1

  @staticmethod
  def n_drafts(cfg: config_lib.ModelConfig) -> int:
    return cfg.mtp.n - 1

  def setup(self):
    self.heads = [head_block(self.cfg, self.decode, f'heads_{i}')
                  for i in range(self.cfg.mtp.n)]

  def head_logits(self, h_BxLxD: jax.Array, i: int, logits_fn: Callable,
                  modality_BxL: jax.Array | None = None,
                  positions_BxL: jax.Array | None = None,
                  segment_ids_BxL: jax.Array | None = None) -> jax.Array:
    """Logits of head i (0-based: 0 is the next-token head) on the trunk output.
    Packed rows pass their per-document positions and segment ids (the head's
    block attends within each document, as the trunk's do)."""
    positions_BxL = transformer.default_positions(h_BxLxD, positions_BxL)
    return logits_fn(self.heads[i](h_BxLxD, positions_BxL, modality_BxL,
                                   segment_ids_BxL))

  def __call__(self, h_BxLxD, logits_fn, embed_fn, batch, modality_BxL=None):
    """[head 0 logits, head 1 logits, ...] (named `logits` and `mtp_logits` upstream)."""
    del embed_fn
    docs = (batch.get('positions'), batch.get('segment_ids'))
    return [self.head_logits(h_BxLxD, i, logits_fn, modality_BxL, *docs)
            for i in range(self.cfg.mtp.n)]

  def main(self, h_BxLxD, logits_fn, modality_BxL=None, positions_BxL=None,
           segment_ids_BxL=None):
    return self.head_logits(h_BxLxD, 0, logits_fn, modality_BxL, positions_BxL,
                            segment_ids_BxL)

  def drafts(self, h_BxLxD, next_BxL, logits_fn, embed_fn, modality_BxL=None):
    """Head i+1's logits at each position draft the token i+1 steps past the next."""
    del next_BxL, embed_fn
    return [self.head_logits(h_BxLxD, i, logits_fn, modality_BxL)
            for i in range(1, self.cfg.mtp.n)]

  @staticmethod
  def combine(cfg: config_lib.ModelConfig, ces: list[jax.Array], variables: dict,
              mutated: dict, mutable: list[str]):
    """sum_i w_i CE_i (head i predicts token t+i+1); returns (loss, metrics, mutated)."""
    del variables, mutable
    weights = options_lib.loss_weights(cfg.mtp)
    mtp = sum(w * ce for w, ce in zip(weights, ces))
    return mtp, {'mtp_loss': mtp, **{f'ce_head{i + 1}': ce for i, ce in enumerate(ces)}
                 }, mutated

  @staticmethod
  def train_loss(cfg: config_lib.ModelConfig) -> Callable | None:
    """The head-by-head loss when model.mtp.memory_efficient; None: the shared one."""
    return memory_efficient_loss if cfg.mtp.memory_efficient else None


def _metrics(ces: list[jax.Array], weights, aux: jax.Array, mutated: Any):
  mtp = sum(w * ce for w, ce in zip(weights, ces))
  metrics = {'loss': mtp + aux, 'ce': ces[0], 'mtp_loss': mtp, 'aux_loss': aux,
             **{f'ce_head{i + 1}': ce for i, ce in enumerate(ces)},
             **nn_losses.sown_metrics(mutated.get('intermediates', {}))}
  return mtp + aux, metrics


def _split_heads(tree: dict, n: int) -> tuple[dict, Any]:
  """(everything but the heads, the n heads' subtrees stacked on a leading axis)."""
  shared = {k: v for k, v in tree.items() if not k.startswith('heads_')}
  heads = [tree[f'heads_{i}'] for i in range(n) if f'heads_{i}' in tree]
  return shared, (jax.tree.map(lambda *xs: jnp.stack(xs), *heads) if heads else None)


def _unstack_heads(stacked: Any, n: int) -> dict:
  return {f'heads_{i}': jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(n)}


def memory_efficient_loss(model: nn.Module, variables: dict,
                          batch: dict[str, jax.Array], mutable: list[str]):
  """Same value and gradient as `plain_loss`, one head's logits alive at a time.

  The heads run in a `lax.scan` over their stacked parameters (every head has the
  same structure), each step a forward and backward of one head that adds its
  gradient with respect to the trunk output to the carry; the loop is what lets
  XLA reuse one head's buffers for the next (an unrolled Python loop, even with
  optimization barriers, kept every head's buffers alive on XLA:CPU).
  """
  n = model.cfg.mtp.n
  w_n = jnp.asarray(options_lib.loss_weights(model.cfg.mtp), jnp.float32)
  params = variables['params']
  p0 = jax.lax.stop_gradient(params)
  others = {k: v for k, v in variables.items() if k != 'params'}
  cols = ['intermediates', *mutable]

  def trunk(p):
    h, mut = model.apply({'params': p, **others}, batch, method='trunk_hidden',
                         mutable=cols)
    return (h, nn_losses.sown_aux(mut)), mut

  (h_BxLxD, aux_trunk), trunk_vjp, mut_trunk = jax.vjp(trunk, p0, has_aux=True)
  shared_p, heads_p = _split_heads(p0, n)
  split = {k: _split_heads(v, n) for k, v in others.items()}
  heads_other = {k: v[1] for k, v in split.items() if v[1] is not None}

  def head(p_shared, p_head, h, other_head, i):
    vs = {'params': {**p_shared, 'heads_0': p_head}}
    for k, (shared, _) in split.items():
      vs[k] = {**shared, **({'heads_0': other_head[k]} if k in other_head else {})}
    logits, mut = model.apply(vs, h, 0, batch.get('modality'), batch.get('positions'),
                              batch.get('segment_ids'), method='head_logits',
                              mutable=cols)
    ce = losses.head_ce_dynamic(logits, batch, i)
    aux = nn_losses.sown_aux(mut)
    return w_n[i] * ce + aux, (ce, aux, {k: v.get('heads_0', {}) for k, v in mut.items()})

  def body(carry, xs):
    g_h, g_shared = carry
    p_head, other_head, i = xs
    (_, (ce, aux, mut)), (g_s, g_head, g_hi) = jax.value_and_grad(
        head, argnums=(0, 1, 2), has_aux=True)(shared_p, p_head, h_BxLxD, other_head, i)
    return (g_h + g_hi, jax.tree.map(jnp.add, g_shared, g_s)), (ce, aux, g_head, mut)

  zeros = lambda t: jax.tree.map(jnp.zeros_like, t)
  (g_h, g_shared), (ces, auxes, g_heads, muts) = jax.lax.scan(
      body, (zeros(h_BxLxD), zeros(shared_p)), (heads_p, heads_other, jnp.arange(n)))
  (g_trunk,) = trunk_vjp((g_h, jnp.ones_like(aux_trunk)))
  grads = {**jax.tree.map(jnp.add, {k: g_trunk[k] for k in g_shared}, g_shared),
           **_unstack_heads(g_heads, n)}
  mutated = {}
  for col in cols:
    merged = dict(variables.get(col, {}))
    merged.update({k: v for k, v in mut_trunk.get(col, {}).items()
                   if not k.startswith('heads_')})
    if muts.get(col):
      merged.update(_unstack_heads(muts[col], n))
    if merged:
      mutated[col] = merged
  ce_list = [ces[i] for i in range(n)]
  loss, metrics = _metrics(ce_list, options_lib.loss_weights(model.cfg.mtp),
                           aux_trunk + jnp.sum(auxes), mutated)
  # Value `loss`, gradient `grads`: the dot term is zero but carries the gradient.
  flat_p, flat_g = jax.tree.leaves(params), jax.tree.leaves(
      jax.tree.map(lambda _, g: g, params, grads))
  surrogate = jax.lax.stop_gradient(loss) + sum(
      jnp.vdot(p - jax.lax.stop_gradient(p), g) for p, g in zip(flat_p, flat_g))
  return surrogate, (metrics, mutated)
