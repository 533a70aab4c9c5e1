r"""QuEST: training with 1–8-bit weights and activations, Hadamard rotation and trust
gradients, against naive sign-STE at 1 bit.

Paper: Panferov et al. 2025, "QuEST: Stable Training of LLMs with 1-Bit Weights and
Activations" (arXiv 2502.05003; repo IST-DASLab/QuEST).

Arms: float; QuEST W{8,4,3,2,1}A{same} with and without the Hadamard rotation; and
naive W1A1 (sign with mean-|x| scale, plain straight-through gradient: no rotation,
no trust mask). Same model, data, tokens and LR.

Commands:
  python -m lattice.main --config=experiments/quest.py:smoke --workdir=runs/quest_smoke
  python -m lattice.main --config=experiments/quest.py:quick --workdir=runs/quest
  python -m lattice.main --config=experiments/quest.py:full  --workdir=runs/quest_full

Expected: validation loss ordered by bits; Hadamard at or below no-Hadamard at each
width (the paper's gap at W4A4 is 1%: at our size it may be within noise); QuEST
W1A1 converging and beating naive W1A1.
"""

from __future__ import annotations

import math
from pathlib import Path

import ml_collections

from lattice import experiment

NAME = 'quest'
PAPER = {'title': 'QuEST: Stable Training of LLMs with 1-Bit Weights and Activations',
         'arxiv': '2502.05003'}
CLAIM = ('rotating each row by a block Hadamard transform, normalizing it by its RMS, '
         'clipping at the Gaussian MSE-optimal scale and masking gradients outside a '
         'trust region trains models whose loss degrades gracefully as weight and '
         'activation bits fall (30M model, C4: BF16 3.207, W8A8 3.209, W4A4 3.272 '
         '(3.304 without Hadamard), W3A3 3.372, W2A2 3.574, W1A1 3.945) and makes W1A1 '
         'train stably.')
BITS = (8, 4, 3, 2, 1)
# A lower width may beat the next higher one by at most this relative margin (noise).
ORDER_SLACK = 0.005


def _quest(bits: int, hadamard: bool, trust: float = 0.0) -> dict:
  return {'model.linear.kind': 'quest', 'model.linear.w_bits': bits,
          'model.linear.a_bits': bits, 'model.linear.hadamard': hadamard,
          'model.linear.trust': trust}


def _config(d_model, n_layers, seq_len, batch, steps, lr, bits=BITS):
  c = experiment.lm_config(d_model, n_layers, max(d_model // 32, 2), seq_len, batch,
                           steps, lr, log_points=40)
  c.arms = [dict(name='float', overrides={})]
  for b in bits:
    c.arms.append(dict(name=f'W{b}A{b}', overrides=_quest(b, True)))
    c.arms.append(dict(name=f'W{b}A{b}_no_hadamard', overrides=_quest(b, False)))
  # Naive sign-STE: the 1-bit grid without rotation, gradient passed everywhere.
  c.arms.append(dict(name='W1A1_naive_ste', overrides=_quest(1, False, trust=1e9)))
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _config(d_model=32, n_layers=1, seq_len=32, batch=8, steps=6,
                               lr=3e-3, bits=(1,)),
      'quick': lambda: _config(d_model=64, n_layers=2, seq_len=128, batch=16, steps=300,
                               lr=3e-3),
      'full': lambda: _config(d_model=640, n_layers=6, seq_len=512, batch=64,
                              steps=20_000, lr=1.5e-3),
  })



def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  arms, _ = experiment.run_arms(config, workdir)
  loss = {a.name: a.metrics['val_loss']['mean'] for a in arms}
  bits = [int(a.name[1:].split('A')[0]) for a in arms
          if a.name.startswith('W') and a.name.endswith(tuple('0123456789'))]
  had = [loss[f'W{b}A{b}'] for b in bits]
  order_ok = len(had) > 1 and all(lo >= hi * (1 - ORDER_SLACK)
                                  for hi, lo in zip(had, had[1:]))
  wins = [b for b in bits if loss[f'W{b}A{b}'] < loss[f'W{b}A{b}_no_hadamard']]
  w1, naive = loss['W1A1'], loss['W1A1_naive_ste']
  first_loss = experiment.metric_curve(
      Path(workdir) / 'W1A1' / f'seed_{config.seeds[0]}', 'loss')[1][0]
  fmt = ', '.join(f'W{b}A{b} {loss[f"W{b}A{b}"]:.3f} / {loss[f"W{b}A{b}_no_hadamard"]:.3f}'
                  for b in bits)
  checks = [
      experiment.check('validation loss ordered by bits (QuEST, Hadamard)', order_ok,
                    f'float {loss["float"]:.3f}; ' + ', '.join(
                        f'W{b}A{b} {l:.3f}' for b, l in zip(bits, had))
                    + f' (a lower width may win by < {100 * ORDER_SLACK:.1f}%)'),
      experiment.check('Hadamard better than none at every width', len(wins) == len(bits),
                    f'with / without Hadamard: {fmt}; Hadamard wins at '
                    f'{len(wins)}/{len(bits)} widths'),
      experiment.check('QuEST W1A1 converges (finite, well below its first loss)',
                    math.isfinite(w1) and w1 < first_loss - 1.0,
                    f'W1A1 val loss {w1:.3f} (first train loss {first_loss:.3f})'),
      experiment.check('QuEST W1A1 beats naive sign-STE W1A1', w1 < naive,
                    f'QuEST {w1:.3f} vs naive {naive:.3f}'),
  ]
  seed = config.seeds[0]
  plots = [
      experiment.plot_series(
          f'{workdir}/loss_vs_bits.png',
          {'QuEST (Hadamard)': (bits, had),
           'no Hadamard': (bits, [loss[f'W{b}A{b}_no_hadamard'] for b in bits]),
           'float': (bits, [loss['float']] * len(bits))},
          xlabel='bits (weights = activations)', ylabel='validation loss (nats/token)',
          title='QuEST: loss vs bit width'),
      experiment.plot_series(
          f'{workdir}/w1a1_train_loss.png',
          {n: experiment.metric_curve(Path(workdir) / n / f'seed_{seed}', 'loss')
           for n in ('float', 'W1A1', 'W1A1_no_hadamard', 'W1A1_naive_ste')},
          xlabel='step', ylabel='train loss', title='1-bit weights and activations'),
  ]
  paper_rel = {8: 3.209, 4: 3.272, 3: 3.372, 2: 3.574, 1: 3.945}
  ours = ', '.join(f'W{b}A{b} {100 * (loss[f"W{b}A{b}"] / loss["float"] - 1):+.1f}%'
                   for b in bits)
  return experiment.finish(
      __name__, config, workdir, arms=arms,
      checks=checks,
      headline={'paper': 'loss vs BF16: ' + ', '.join(
                    f'W{b}A{b} {100 * (v / 3.207 - 1):+.1f}%' for b, v in paper_rel.items()),
                'ours': f'loss vs float: {ours}; naive W1A1 '
                        f'{100 * (naive / loss["float"] - 1):+.1f}%'},
      plots=plots)
