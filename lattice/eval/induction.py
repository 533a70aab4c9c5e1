"""Induction accuracy of a trained LM over its training, from its checkpoints.

Gloeckle et al. 2024 (arXiv 2404.19737, §4.1, Fig. 7) measure when induction forms:
on stories whose characters have random two-token names
(`lattice.data.tasks.induction`), the accuracy of the main head on the second token
of names that already appeared in the story. Before induction forms the model can
only guess (1/26 with bytes); after, it copies. Here:

  accuracy(cfg, variables, n)   the main head's accuracy on those targets in n
                                held-out stories (one per row, the run's tokenizer)
  scorer(cfg, n)                the same as a function of the variables, compiled
                                once (for many checkpoints)
  curve(cfg, state, run_dir, steps)   accuracy at each checkpointed step
  area(steps, values, total)    the area under that curve, normalised to [0, 1]
                                (trapezoids from (0, chance) to the last point)
  first_step_at(steps, values, threshold)   the first step reaching threshold

Both summaries are machine-independent: a larger area, or an earlier threshold
step, means induction formed earlier.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.data import tokenizer as tokenizer_lib
from lattice.data.tasks import induction
from lattice.train import checkpoint

EVAL_SEED = 10_007  # held-out stories: a seed no training or validation stream uses
CHANCE = 1 / 26     # a byte name's second letter before the name has been seen


def scorer(cfg: config_lib.Config, n_stories: int, seed: int = EVAL_SEED
           ) -> Callable[[dict], float]:
  """`accuracy` as a function of the variables, with the stories built and the
  model's apply compiled once (`curve` scores every checkpoint with one scorer;
  a fresh `jax.jit` per checkpoint compiled the model again each time).

  Raises ConfigError as `accuracy` does.
  """
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  inputs_NxL, targets_NxL, mask_NxL = induction.eval_arrays(
      n_stories, seed=seed, seq_len=cfg.data.seq_len, tok=tok)
  if not mask_NxL.sum():
    raise config_lib.ConfigError('data.seq_len: too short for any repeated name in '
                                 'the induction stories')
  apply = jax.jit(model_lib.make_model(cfg.model, False).apply)

  def score(variables: dict) -> float:
    logits_NxLxV = apply(variables, inputs_NxL)
    hit_NxL = np.asarray(np.argmax(logits_NxLxV, -1) == targets_NxL, np.float32)
    return float((hit_NxL * mask_NxL).sum() / mask_NxL.sum())
  return score


def accuracy(cfg: config_lib.Config, variables: dict, n_stories: int,
             seed: int = EVAL_SEED) -> float:
  """Main-head next-token accuracy on repeated names' second tokens.

  Args:
    cfg: the run's typed config (model, data.seq_len, data.tokenizer).
    variables: the model variables (`state.variables`).
    n_stories: held-out stories, one per row of data.seq_len tokens.

  Returns:
    The fraction of masked targets (`induction.eval_arrays`) predicted by argmax.

  Raises:
    ConfigError: naming data.tokenizer (see `induction.eval_arrays`), or when the
      stories hold no repeated name within data.seq_len.
  """
  return scorer(cfg, n_stories, seed)(variables)


def curve(cfg: config_lib.Config, state: Any, run_dir: str | Path, n_stories: int
          ) -> tuple[list[int], list[float]]:
  """(steps, accuracies) at every checkpoint kept in `run_dir/checkpoints`.

  `state` is any train state of the run's shapes (e.g. the final one) to restore
  into. The model compiles once for all checkpoints (`scorer`). Raises ConfigError
  naming checkpoint.keep when no checkpoint is kept.
  """
  ckpt = checkpoint.Checkpointer(Path(run_dir) / 'checkpoints', cfg.checkpoint)
  try:
    steps = sorted(ckpt.all_steps())
    if not steps:
      raise config_lib.ConfigError(f'checkpoint.keep: no checkpoint kept in {run_dir}')
    score = scorer(cfg, n_stories)
    values = [score(ckpt.restore(state, step=s).variables) for s in steps]
  finally:
    ckpt.close()
  return steps, values


def area(steps: Sequence[int], values: Sequence[float], total: int,
         start: float = CHANCE) -> float:
  """Area under the accuracy curve over [0, total] steps, divided by total.

  The curve starts at (0, `start`) and is linear between points (trapezoids); past
  the last point it holds the last value. Raises ValueError for total <= 0 or
  unsorted/mismatched points.
  """
  if total <= 0 or len(steps) != len(values) or list(steps) != sorted(steps):
    raise ValueError(f'area: needs total > 0 and sorted steps with one value each, got '
                     f'total={total}, {len(steps)} steps, {len(values)} values')
  xs = [0, *[min(s, total) for s in steps], total]
  ys = [start, *values, values[-1] if values else start]
  return float(sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in
                   zip(xs, xs[1:], ys, ys[1:])) / total)


def first_step_at(steps: Sequence[int], values: Sequence[float], threshold: float
                  ) -> float:
  """The first step whose accuracy reaches `threshold`, or inf if none does."""
  return next((float(s) for s, v in zip(steps, values) if v >= threshold), math.inf)
