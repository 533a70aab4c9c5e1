"""The early/late-fusion model families: model, loss, init inputs, eval, data, FLOPs.

Shape legend: B batch, L length, V vocabulary, A answers per row, E experts.

Both frontends train on the same interleaved image+text batches
(`lattice.multimodal.data`) with the loss on text targets only (plus, for discrete
image tokens, `frontend.image_loss` times the loss on the image codes). The eval
step adds to the text family's sums what the multimodal experiment reports:
question-answer exact match (an answer counts when every one of its tokens is the
argmax under teacher forcing) and, for MoE, image tokens per expert per layer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lattice import config as config_lib
from lattice import models, sharding
from lattice.data import tokenizer as tokenizer_lib
from lattice.multimodal import codebook, data, early, flops, late
from lattice.multimodal import patches as patches_lib
from lattice.train import step as step_lib

MAX_ANSWERS = 16  # answers per row scored for exact match (rows hold far fewer)
_CHOICES = {'image_tokens': ('patches', 'discrete'),
            'modality_routing': ('learned', 'hard')}


def validate(cfg: config_lib.Config) -> None:
  """ConfigErrors for the multimodal fields (before anything compiles)."""
  f, m = cfg.model.frontend, cfg.model
  for name, choices in _CHOICES.items():
    if getattr(f, name) not in choices:
      raise config_lib.ConfigError(f'model.frontend.{name}: {getattr(f, name)!r} is not '
                                   f'one of {", ".join(choices)}')
  for name in ('image_size', 'patch_size', 'max_images', 'enc_d_model', 'enc_layers',
               'enc_heads', 'codebook_size'):
    if getattr(f, name) <= 0:
      raise config_lib.ConfigError(f'model.frontend.{name}: must be positive, got '
                                   f'{getattr(f, name)}')
  if f.image_size % f.patch_size:
    raise config_lib.ConfigError(f'model.frontend.patch_size: {f.patch_size} does not '
                                 f'divide model.frontend.image_size={f.image_size}')
  if f.enc_d_model % f.enc_heads or (f.enc_d_model // f.enc_heads) % 2:
    raise config_lib.ConfigError(f'model.frontend.enc_heads: {f.enc_heads} heads must '
                                 f'divide enc_d_model={f.enc_d_model} evenly')
  ratios = data.ratios(f)
  if min(ratios) < 0 or sum(ratios) <= 0:
    raise config_lib.ConfigError(f'model.frontend.caption_ratio/interleaved_ratio/'
                                 f'text_ratio: must be >= 0 with a positive sum, got '
                                 f'{ratios}')
  image_block = patches_lib.n_patches(f.image_size, f.patch_size) + 4  # BOS BOI .. EOI EOS
  if image_block > cfg.data.seq_len:
    raise config_lib.ConfigError(f'data.seq_len: {cfg.data.seq_len} cannot hold one image '
                                 f'({image_block} tokens with its markers)')
  if f.image_tokens == 'discrete':
    if f.kind != 'early':
      raise config_lib.ConfigError("model.frontend.image_tokens: 'discrete' needs "
                                   "model.frontend.kind='early'")
    need = codebook.FIRST_CODE_ID + f.codebook_size
    if m.vocab_size and m.vocab_size < need:
      raise config_lib.ConfigError(f'model.vocab_size: {m.vocab_size} cannot hold '
                                   f'{f.codebook_size} image codes (needs >= {need})')
  if f.modality_routing == 'hard' and m.ffn.kind == 'moe':
    k = f.image_experts or m.ffn.n_experts // 2
    if not 0 < k < m.ffn.n_experts or m.ffn.top_k > min(k, m.ffn.n_experts - k):
      raise config_lib.ConfigError(
          f'model.frontend.image_experts: {k} image experts of {m.ffn.n_experts} leave '
          f'a modality fewer experts than model.ffn.top_k={m.ffn.top_k}')


def init_args(cfg: config_lib.Config) -> tuple[Any, ...]:
  validate(cfg)
  f, L = cfg.model.frontend, cfg.data.seq_len
  return (jnp.zeros((1, L), jnp.int32),
          jnp.zeros((1, f.max_images, f.image_size, f.image_size, 3), jnp.float32),
          jnp.full((1, L), -1, jnp.int32), jnp.zeros((1, L), jnp.int32))


def _model_inputs(batch):
  return (batch['inputs'], batch['images'], batch['patch_index'], batch['modality'])


def _targets(batch, seen_BxL, image_loss: float):
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


def loss_fn(model, variables, batch, mutable):
  """Text (and optionally image-code) next-token loss + sown aux losses."""
  (logits_BxLxV, seen_BxL), mutated = model.apply(
      variables, *_model_inputs(batch), return_tokens=True,
      mutable=['intermediates', *mutable])
  targets_BxL, weights_BxL = _targets(batch, seen_BxL, model.cfg.frontend.image_loss)
  ce_sum, weight = step_lib.cross_entropy(logits_BxLxV, targets_BxL, weights_BxL)
  ce = ce_sum / jnp.maximum(weight, 1.0)
  inter = mutated.get('intermediates', {})
  aux = sum((jnp.sum(a) for a in step_lib._collect(inter, 'aux_loss')),  # pylint: disable=protected-access
            jnp.zeros(()))
  metrics = {'loss': ce + aux, 'ce': ce, 'aux_loss': aux, **step_lib.sown_metrics(inter)}
  return ce + aux, (metrics, mutated)


def _answer_sums(logits_BxLxV, batch):
  """Exact-match counts over the row's answers (teacher-forced argmax)."""
  correct_BxL = jnp.argmax(logits_BxLxV, -1) == batch['targets']
  onehot_BxLxA = batch['answer_id'][..., None] == jnp.arange(MAX_ANSWERS)
  present_BxA = jnp.any(onehot_BxLxA, axis=1)
  wrong_BxA = jnp.any(onehot_BxLxA & ~correct_BxL[..., None], axis=1)
  return {'answers': jnp.sum(present_BxA), 'answers_exact': jnp.sum(present_BxA & ~wrong_BxA)}


def make_eval_step(model):
  """eval_step(state, batch) -> sums: the text family's (loss, weight, bytes,
  expert_load) on text targets, plus answers / answers_exact and, for MoE,
  expert_load_image [layers, E]."""

  def eval_step(state, batch):
    logits_BxLxV, mutated = model.apply(state.variables, *_model_inputs(batch),
                                        mutable=['intermediates'])
    targets_BxL, weights_BxL = batch['targets'], batch['weights']
    ce_sum, weight = step_lib.cross_entropy(logits_BxLxV, targets_BxL, weights_BxL)
    n_bytes = jnp.sum(weights_BxL * (targets_BxL < step_lib.BYTE_VOCAB))
    sums = {'loss_sum': ce_sum, 'weight': weight, 'bytes': n_bytes,
            **_answer_sums(logits_BxLxV, batch)}
    inter = mutated.get('intermediates', {})
    for name in ('expert_load', 'expert_load_image'):
      loads = step_lib._collect(inter, name)  # pylint: disable=protected-access
      if loads:
        sums[name] = jnp.concatenate([l.reshape(-1, l.shape[-1]) for l in loads])
    return sums

  return eval_step


def evaluate(setup, state, batches: list[dict]) -> dict[str, Any]:
  """val_loss / val_bpb (/ maxvio_global), qa_accuracy, and for MoE the image share
  of each expert's tokens per layer (`image_share` [layers][E]) and the tokens per
  expert per layer (`expert_load` [layers][E]) over `batches`."""
  totals: dict[str, Any] = {}
  with sharding.use_mesh(setup.mesh):
    for batch in batches:
      sums = jax.device_get(setup.eval_step(state, sharding.global_batch(batch, setup.mesh)))
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + np.asarray(v, np.float64)
  out: dict[str, Any] = step_lib.summarize_eval(totals)
  out['qa_accuracy'] = float(totals['answers_exact'] / max(totals['answers'], 1.0))
  out['qa_answers'] = int(totals['answers'])
  if 'expert_load_image' in totals:
    share = totals['expert_load_image'] / np.maximum(totals['expert_load'], 1.0)
    out['image_share'] = share.tolist()
    out['expert_load'] = totals['expert_load'].tolist()
  return out


def _family(make) -> models.Family:
  return models.Family(
      make_model=make, loss_fn=loss_fn, init_args=init_args, make_eval_step=make_eval_step,
      make_train_iterator=data.make_train_iterator, make_eval_batches=data.make_eval_batches,
      flops_per_token=flops.train_flops_per_token)


def register() -> None:
  models.register_family('frontend', 'early', _family(
      lambda cfg, decode=False: early.EarlyFusion(cfg, decode)))
  models.register_family('frontend', 'late', _family(
      lambda cfg, decode=False: late.LateFusion(cfg, decode)))
