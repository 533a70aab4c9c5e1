r"""Multi-token prediction with parallel heads: induction and self-speculative decoding.

Paper: Gloeckle et al. 2024, "Better & Faster Large Language Models via Multi-token
Prediction" (arXiv 2404.19737).

Arms: n = 1, 2, 4 parallel heads (model.mtp.kind='parallel'; model.n_layers counts
the trunk plus one head layer, so n = 1 is the plain decoder) on the induction
stories (lattice/data/tasks/induction.py), induction accuracy measured at mid
training and at the end; and n = 4 on the stdlib code corpus, whose extra heads draft
for self-speculative greedy decoding (lattice/decode/speculative.py), timed against
plain greedy decoding of the same model in the same process (batch 1).

Commands:
  python -m lattice.main --config=experiments/mtp_gloeckle.py:smoke --workdir=runs/mtp_gloeckle_smoke
  python -m lattice.main --config=experiments/mtp_gloeckle.py:quick --workdir=runs/mtp_gloeckle
  python -m lattice.main --config=experiments/mtp_gloeckle.py:full  --workdir=runs/mtp_gloeckle_full

Expected: n = 2 induction accuracy above n = 1's at mid training; n >= 2 next-token
loss slightly worse than n = 1 at this size; identical outputs; speculative
accepted tokens per forward > 1 (paper: up to 3x speedup at n = 4, 7B on code).
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np

from lattice import experiment
from lattice import model as model_lib
from lattice.data.tasks import induction
from lattice.decode import speculative
from lattice.train import checkpoint

NAME = 'mtp_gloeckle'
PAPER = {'title': 'Better & Faster Large Language Models via Multi-token Prediction',
         'arxiv': '2404.19737'}
CLAIM = ('for small models, predicting n = 2 tokens at once makes induction (copying '
         'the second token of a repeated random two-token name) form earlier than '
         "next-token training (§4.1, Fig. 7), while the small models' next-token loss "
         'gets worse (§3.1); and the extra heads draft for self-speculative decoding, '
         'up to 3x faster at n = 4 on code with outputs identical to greedy decoding '
         '(§3.2).')
INDUCTION_NS = (1, 2, 4)
CODE_N = 4
CHANCE = 1 / 26  # a name's second letter before the name has been seen


def _arms(ns, code_n):
  arms = [dict(name=f'induction_n{n}', overrides={'model.mtp.n': n}) for n in ns]
  arms.append(dict(name=f'code_n{code_n}', overrides={'model.mtp.n': code_n,
                                                      'data.source': 'stdlib'}))
  return arms


def _config(d_model, n_layers, seq_len, batch, steps, lr, *, ns=INDUCTION_NS,
            code_n=CODE_N, eval_stories=256, prompts=4, prompt_len=32, new_tokens=128):
  c = experiment.lm_config(d_model, n_layers, max(d_model // 16, 2), seq_len, batch, steps,
                           lr, max_len=max(seq_len, prompt_len + new_tokens + code_n),
                           mtp=dict(kind='parallel', n=1))
  c.data.source = 'induction'
  c.arms = _arms(ns, code_n)
  c.eval_stories, c.prompts = eval_stories, prompts
  c.prompt_len, c.new_tokens = prompt_len, new_tokens
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _config(d_model=32, n_layers=2, seq_len=64, batch=8, steps=4,
                               lr=3e-3, ns=(1, 2), code_n=2, eval_stories=16, prompts=1,
                               prompt_len=8, new_tokens=8),
      'quick': lambda: _config(d_model=64, n_layers=3, seq_len=128, batch=16, steps=400,
                               lr=3e-3),
      'full': lambda: _config(d_model=512, n_layers=8, seq_len=512, batch=64,
                              steps=20_000, lr=1e-3, eval_stories=2048, prompts=16,
                              new_tokens=256),
  })


def induction_accuracy(cfg, state, n_stories: int) -> float:
  """Next-token accuracy on the second token of repeated names (main head)."""
  inputs, targets, mask = induction.eval_arrays(n_stories, seed=10_007,
                                                seq_len=cfg.data.seq_len)
  model = model_lib.make_model(cfg.model, False)
  logits = jax.jit(model.apply)(state.variables, inputs)
  hit = np.asarray(np.argmax(logits, -1) == targets, np.float32)
  return float((hit * mask).sum() / max(mask.sum(), 1.0))


def mid_training_state(cfg, out, run_dir: Path, step: int):
  """The train state checkpointed at `step` (lm_config saves at half and end)."""
  ckpt = checkpoint.Checkpointer(run_dir / 'checkpoints', cfg.checkpoint)
  try:
    return ckpt.restore(out.state, step=step)
  finally:
    ckpt.close()


def _measure(config, workdir):
  def measure(cfg, out):
    if cfg.data.source == 'induction':
      run_dir = Path(workdir) / f'induction_n{cfg.model.mtp.n}' / f'seed_{cfg.train.seed}'
      mid = mid_training_state(cfg, out, run_dir, cfg.train.steps // 2)
      return {'induction_acc': induction_accuracy(cfg, out.state, config.eval_stories),
              'induction_acc_mid': induction_accuracy(cfg, mid, config.eval_stories)}
    prompts = experiment.eval_prompts(cfg, config.prompts, config.prompt_len)
    spec = speculative.compare_with_plain(out.state.variables, cfg.model, prompts,
                                          config.new_tokens)
    return {k: float(v) for k, v in spec.items()}
  return measure


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  steps = config.train.steps
  arms, _ = experiment.run_arms(config, workdir, measure=_measure(config, workdir))
  by = {a.name: {k: v['mean'] for k, v in a.metrics.items()} for a in arms}
  ns = [int(a.name.split('_n')[1]) for a in arms if a.name.startswith('induction')]
  acc_end = {n: by[f'induction_n{n}']['induction_acc'] for n in ns}
  acc_mid = {n: by[f'induction_n{n}']['induction_acc_mid'] for n in ns}
  loss = {n: by[f'induction_n{n}']['val_loss'] for n in ns}
  code = by[next(a.name for a in arms if a.name.startswith('code'))]
  fmt = lambda d: ', '.join(f'n={n}: {v:.3f}' for n, v in d.items())
  checks = [
      experiment.check('n=2 induction forms earlier than n=1 (accuracy at mid training)',
                    acc_mid[2] > acc_mid[1] and acc_mid[2] > 2 * CHANCE,
                    f'repeated-name second-token accuracy at step {steps // 2}: '
                    f'{fmt(acc_mid)}; at the end: {fmt(acc_end)}; chance is 1/26 = '
                    f'{CHANCE:.3f}, and induction counts as formed above twice that'),
      experiment.check('small models: MTP next-token loss worse than n=1 (paper §3.1)',
                    all(loss[n] > loss[1] for n in ns if n > 1),
                    f'induction-stories val loss (main head): {fmt(loss)}'),
      experiment.check('self-speculative greedy output identical to greedy decoding',
                    code['identical'] == 1.0,
                    f'{config.prompts} code prompts x {config.new_tokens} tokens, batch 1'),
      experiment.check('self-speculative decoding is faster than greedy (paper: up to 3x)',
                    code['speedup'] > 1.0,
                    f'{code["speedup"]:.2f}x wall clock ({code["spec_tokens_per_s"]:.0f} '
                    f'vs {code["plain_tokens_per_s"]:.0f} tokens/s), '
                    f'{code["accepted_per_forward"]:.2f} tokens per forward'),
  ]
  plots = [experiment.plot_series(
      f'{workdir}/induction.png',
      {f'n={n}': ([steps // 2, steps], [acc_mid[n], acc_end[n]]) for n in ns},
      xlabel='step', ylabel='repeated-name 2nd-token accuracy',
      title='induction over training')]
  return experiment.finish(
      __name__, config, workdir, arms=arms,
      checks=checks,
      headline={'paper': 'n=2 induction earlier for small models; up to 3x faster '
                         'self-speculative decoding at n=4',
                'ours': f'induction acc mid {fmt(acc_mid)}; speculative '
                        f'{code["speedup"]:.2f}x, {code["accepted_per_forward"]:.2f} '
                        f'tokens/forward'},
      plots=plots)
