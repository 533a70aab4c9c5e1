"""The one loss, the eval step and the eval summary of the composed model.

Shape legend: B batch, L length, V vocabulary, A answers per row.

The loss reads the model's named outputs: the main head's cross entropy on the
input stage's targets (text; with discrete image tokens also the image codes), the
extra heads' cross entropies on the tokens further ahead, combined by the output
stage (`mtp.HEADS[kind].combine`), plus every sown `aux_loss`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lattice import mtp, multimodal
from lattice.moe import summary as moe_summary
from lattice.mtp import losses as mtp_losses
from lattice.nn import losses

LN2 = float(np.log(2.0))
MAX_ANSWERS = 16  # answers per row scored for exact match (rows hold far fewer)

# Techniques that report eval statistics: the sown names the eval step sums over the
# eval set (stacked per layer), and the function that turns the sums into metrics.
EVAL_SUMS = (*moe_summary.EVAL_SUMS,)
SUMMARIES = (moe_summary.summarize,)


def loss_fn(model: nn.Module, variables: dict, batch: dict[str, jax.Array],
            mutable: list[str]):
  """The training loss of `model` (a `lattice.model.Model`) on `batch`.

  Returns (loss, (metrics, mutated)); `mutated` holds the `mutable` collections.
  """
  cfg = model.cfg
  heads = mtp.HEADS[cfg.mtp.kind]
  custom = heads.train_loss(cfg)
  if custom is not None:
    return custom(model, variables, batch, mutable)
  out, mutated = model.apply(variables, batch, method='outputs',
                             mutable=['intermediates', *mutable])
  targets_BxL, weights_BxL = multimodal.FRONTENDS[cfg.frontend.kind].targets(
      cfg, batch, out['tokens'])
  ces = [losses.mean_ce(out['logits'], targets_BxL, weights_BxL)]
  ces += [mtp_losses.head_ce(l, batch, k) for k, l in enumerate(out['mtp_logits'], 2)]
  loss, head_metrics, mutated = heads.combine(cfg, ces, variables, mutated, mutable)
  aux = losses.sown_aux(mutated)
  metrics = {'loss': loss + aux, 'ce': ces[0], 'aux_loss': aux, **head_metrics,
             **losses.sown_metrics(mutated.get('intermediates', {}))}
  return loss + aux, (metrics, mutated)


def answer_sums(logits_BxLxV: jax.Array, batch: dict[str, jax.Array]) -> dict:
  """Exact-match counts over the row's answers (teacher-forced argmax): an answer
  counts when every one of its tokens is the argmax."""
  correct_BxL = jnp.argmax(logits_BxLxV, -1) == batch['targets']
  onehot_BxLxA = batch['answer_id'][..., None] == jnp.arange(MAX_ANSWERS)
  present_BxA = jnp.any(onehot_BxLxA, axis=1)
  wrong_BxA = jnp.any(onehot_BxLxA & ~correct_BxL[..., None], axis=1)
  return {'answers': jnp.sum(present_BxA),
          'answers_exact': jnp.sum(present_BxA & ~wrong_BxA)}


def make_eval_step(model: nn.Module):
  """eval_step(state, batch) -> sums: loss (nats), weight, byte targets; answer
  counts when the batch marks answers; every sown name in `EVAL_SUMS` stacked to
  [layers, ...]."""

  def eval_step(state, batch):
    logits_BxLxV, mutated = model.apply(state.variables, batch, mutable=['intermediates'])
    ce_sum, weight = losses.cross_entropy(logits_BxLxV, batch['targets'], batch['weights'])
    if 'target_bytes' in batch:  # the tokenizer's UTF-8 length of each target
      n_bytes = jnp.sum(batch['weights'] * batch['target_bytes'])
    else:  # batches built by hand or by a batch source: byte-tokenizer ids
      n_bytes = jnp.sum(batch['weights'] * (batch['targets'] < losses.BYTE_VOCAB))
    sums = {'loss_sum': ce_sum, 'weight': weight, 'bytes': n_bytes}
    if 'answer_id' in batch:
      sums.update(answer_sums(logits_BxLxV, batch))
    inter = mutated.get('intermediates', {})
    for name in EVAL_SUMS:
      loads = losses.collect(inter, name)
      if loads:
        sums[name] = jnp.concatenate([l.reshape(-1, l.shape[-1]) for l in loads])
    return sums

  return eval_step


def summarize_eval(sums: dict[str, Any], detail: bool = False) -> dict[str, Any]:
  """Mean loss (nats/token), perplexity per token and bits per byte (all target nats
  over the UTF-8 bytes of the targets' text: bpb = ln PPL x tokens / (bytes x ln 2),
  comparable across tokenizers), and every
  technique's summary (`SUMMARIES`, e.g. MoE's maxvio_global).

  With `detail`: also qa_accuracy / qa_answers when the batches mark answers, and
  the techniques' per-layer lists (e.g. `expert_load`, `image_share`).
  """
  loss = sums['loss_sum'] / max(sums['weight'], 1.0)
  bpb = sums['loss_sum'] / LN2 / max(sums['bytes'], 1.0)
  out: dict[str, Any] = {'val_loss': float(loss), 'val_ppl': float(np.exp(min(loss, 700.0))),
                         'val_bpb': float(bpb)}
  for summarize in SUMMARIES:
    out.update(summarize(sums, detail))
  if detail and 'answers' in sums:
    out['qa_accuracy'] = float(sums['answers_exact'] / max(sums['answers'], 1.0))
    out['qa_answers'] = int(sums['answers'])
  return out
