"""Teacher-forced draft acceptance of a multi-token model on held-out text.

Shape legend: B batch, L positions, V vocabulary.

A model with multi-token heads (parallel heads, Gloeckle et al. 2024, arXiv
2404.19737; or sequential MTP modules, DeepSeek-V3, arXiv 2412.19437 §5.4.3) can
draft the token after next for self-speculative greedy decoding; a greedy verifier
accepts the draft when it equals the main head's own choice at the next position.
Measured on the model's own decoding loops this rate is inflated by degenerate
repeats (a run of spaces is easy to draft), so here it is measured teacher-forced on
real held-out text: every position i sees the true prefix x_<=i (and a sequential
module the true token x_{i+1}), and

  acceptance      = mean_i [ argmax draft_i == argmax main_{i+1} ]
  draft_accuracy  = mean_i [ argmax draft_i == x_{i+2} ]
  const_acceptance = the acceptance of the best constant drafter: the share of the
                    main head's most frequent greedy choice over the same positions
                    (an oracle baseline: a drafter that always proposes one token,
                    e.g. a space, chosen with hindsight)

over the positions whose token i+2 is a weighted target in the same document
(`lattice.mtp.losses.shifted_targets`). All three are machine-independent.
"""

from __future__ import annotations

from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.mtp import losses as mtp_losses


def _counts(model, variables, batch):
  out = model.apply(variables, batch, method='outputs')
  if not out['mtp_logits']:
    raise config_lib.ConfigError('model.mtp.kind: draft acceptance needs a model with '
                                 'draft heads (parallel n >= 2, or sequential)')
  main_BxL = jnp.argmax(out['logits'], -1)
  draft_BxL = jnp.argmax(out['mtp_logits'][0], -1)
  target_BxL, weight_BxL = mtp_losses.shifted_targets(batch, 2)
  shift = lambda x: jnp.pad(x[:, 1:], ((0, 0), (0, 1)))
  valid_BxL = weight_BxL > 0
  next_main_BxL = shift(main_BxL)
  n_vocab = out['logits'].shape[-1]
  choice_hist_V = jnp.zeros((n_vocab,), jnp.int32).at[next_main_BxL.reshape(-1)].add(
      valid_BxL.reshape(-1).astype(jnp.int32))
  return {'positions': jnp.sum(valid_BxL),
          'accepted': jnp.sum(valid_BxL & (draft_BxL == next_main_BxL)),
          'draft_correct': jnp.sum(valid_BxL & (draft_BxL == target_BxL)),
          'choice_hist': choice_hist_V}


def teacher_forced(model_cfg: config_lib.ModelConfig, variables: dict,
                   batches: Iterable[dict]) -> dict[str, float]:
  """Teacher-forced acceptance of the first draft head over held-out batches.

  Args:
    model_cfg: the trained model's config (mtp kind parallel with n >= 2, or
      sequential).
    variables: its variables (`state.variables`).
    batches: eval batches (`inputs`, `targets`, `weights` int32/float32[B, L], and
      `segment_ids` when packed), e.g. `lattice.data.pipeline.make_eval_batches`.

  Returns:
    {'acceptance', 'draft_accuracy', 'const_acceptance' (fractions in [0, 1]),
     'positions' (how many positions were scored)}.

  Raises:
    ConfigError: the model has no draft head, or no position could be scored.
  """
  model = model_lib.make_model(model_cfg, False)
  counts = jax.jit(lambda v, b: _counts(model, v, b))
  tot = {'positions': 0, 'accepted': 0, 'draft_correct': 0}
  hist = None
  for batch in batches:
    keep = ('inputs', 'targets', 'weights', 'segment_ids', 'positions')
    c = jax.device_get(counts(variables, {k: v for k, v in batch.items() if k in keep}))
    for k in tot:
      tot[k] += int(c[k])
    hist = c['choice_hist'] if hist is None else hist + c['choice_hist']
  if not tot['positions']:
    raise config_lib.ConfigError('data.eval: no position with a token two ahead to '
                                 'score draft acceptance on')
  n = tot['positions']
  return {'acceptance': tot['accepted'] / n, 'draft_accuracy': tot['draft_correct'] / n,
          'const_acceptance': float(np.max(hist)) / n, 'positions': float(n)}
