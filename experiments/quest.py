r"""QuEST: training with 1–8-bit weights and activations, Hadamard rotation and trust
gradients, against naive sign-STE at 1 bit.

Paper: Panferov et al. 2025, "QuEST: Stable Training of LLMs with 1-Bit Weights and
Activations" (arXiv 2502.05003; repo IST-DASLab/QuEST).

Arms: float; QuEST W{8,4,3,2,1}A{same} with the Hadamard rotation; W4A4 without it
(the paper's ablation is at W4A4 only); and naive W1A1 (sign with mean-|x| scale,
plain straight-through gradient: no rotation, no trust mask). Same model, data,
tokens, LR and seeds (paired: the same init seed and data order in every arm).
quick trains a 45K-parameter model (d 32, 2 layers) for 400 x 16 x 128 tokens,
about 18 tokens per parameter (>= 15, so bit-width effects are not hidden by an
undertrained float model, issue #20).

Pre-registered checks (code: `_checks`; lattice.run.checks, 95% paired t interval
over the seeds):
  1. loss ordered by bits: for each adjacent pair of widths, the wider not worse
     than the narrower by more than ORDER_SLACK (0.5% relative val loss);
  2. Hadamard helps at W4A4: CI of W4A4 - W4A4_no_hadamard below 0 (in quick these
     two arms run 24 seeds, the others 5; a check pairs the seeds both arms ran);
  3. QuEST W1A1 converges: every seed finite and at least 1 nat below its first
     training loss;
  4. QuEST W1A1 better than naive sign-STE W1A1: CI below 0.

Commands:
  python -m lattice.main --config=experiments/quest.py:smoke  --workdir=runs/quest_smoke
  python -m lattice.main --config=experiments/quest.py:quick  --workdir=runs/quest
  python -m lattice.main --config=experiments/quest.py:medium --workdir=gs://BUCKET/quest_medium
  python -m lattice.main --config=experiments/quest.py:full   --workdir=gs://BUCKET/quest_full
  lattice plan --config=experiments/quest.py:medium --chips h100x1

medium and full, from `lattice plan` (40% MFU assumed), not run:
  medium (h100x1): d 384, 4 layers, C4, Llama-2 tokenizer, seq 512 x 256, 0.71B
    tokens (100 per non-embedding parameter; 0.005 epoch); 31.7M parameters (7.1M
    outside the untied embeddings), 22 tokens per parameter, 8.9e16 FLOPs and 0.063
    H100-hours a run; 8 arms x 3 seeds: 1.50 H100-hours.
  full (h100x1; `_full`): the paper's 30M on 3B C4 tokens (0.02 epoch); 71.4M
    parameters with the untied embeddings, 9.9e17 FLOPs and 0.69 H100-hours a run;
    8 arms x 3 seeds: 16.7 H100-hours. Paper (30M, C4, final loss): BF16 3.207,
    W8A8 3.209, W4A4 3.272 (3.304 without Hadamard), W3A3 3.372, W2A2 3.574, W1A1
    3.945.

Expected: validation loss ordered by bits; Hadamard below no-Hadamard at W4A4 (the
paper's gap is 1%: at our size it may be within noise); QuEST W1A1 converging and
beating naive W1A1.

Measured (quick with 3 seeds, clean clone of cc5fec7, the idle 2-core machine, load
average 1.93 at the start and 1.86 at the end): 7 min 56 s wall, 471 s summed arm
time. Loss vs float: W8A8 -0.0%, W4A4 +0.4%, W3A3 +1.2%, W2A2 +2.7%, W1A1 +6.5%,
naive W1A1 +8.8% (the paper's ordering, compressed at 45K parameters). Checks 1
(all four adjacent pairs) and 3 passed; check 2 (Hadamard at W4A4: -0.0081, CI
[-0.0218, +0.0057]; s0 -0.0091, s1 -0.0131, s2 -0.0021) and check 4 (QuEST vs naive
W1A1: -0.058, CI [-0.132, +0.016]; s0 -0.092, s1 -0.038, s2 -0.044) failed with every
seed on the paper's side: with 2 degrees of freedom the t interval is +-4.3
standard errors. NOT reproduced (5/7). Quick therefore runs 5 seeds (seeds 3 and 4
added).

Measured with 5 seeds (quick, clean clone of 58009e6, the idle 2-core machine, load
average 1.97 at the start and 1.61 at the end): 12 min 5 s wall, 718 s summed arm
time. NOT reproduced (6/7). Loss vs float: W8A8 -0.0%, W4A4 +0.4%, W3A3 +1.1%, W2A2
+2.6%, W1A1 +6.2%, naive W1A1 +8.5%. QuEST W1A1 now beats naive W1A1: -0.061, CI
[-0.089, -0.033]. The Hadamard check still fails, by a hair: W4A4 - no-Hadamard
-0.0076, CI [-0.0160, +0.0008] (seed 3 +0.0008, the others -0.002 to -0.015). The
paper's no-Hadamard gap at W4A4 is 1% of the loss (3.272 vs 3.304 at 30M); ours is
0.3% at 45K parameters, one seed's noise. Medium (3 seeds at 31.7M parameters) is
the scale of the paper's ablation.

Quick therefore runs the two arms of check 2 over 10 seeds (0-9; the others keep
0-4: an arm may list its own seeds, lattice.run.arms.arm_seeds), chosen after the
5-seed run above fell short on the interval's width, not its sign (so seeds 0-4
of this check are not new evidence; seeds 5-9 are). Sized from that run: the
paired differences' spread (sd 0.0066) over 10 seeds gives a t half-width of
~0.0047, and 10 more arm-seed runs of ~18 s add ~180 s (~900 s summed arm time).

Measured with 10 seeds on check 2's arms (quick, clean clone of 967d07c, the idle
2-core machine, load average 2.43 at the start and 1.90 at the end): 16 min 34 s
wall, 985 s summed arm time (from the runs' record.json: the command then failed in
its last line, `checks.ci_line` refusing arms with different seed sets; fixed
after, so this run left no result.json and the figures here are read from the
records with `checks.judge_values`). NOT reproduced (6/7): the Hadamard check
still fails, W4A4 - no-Hadamard -0.0047, CI [-0.0114, +0.0020] over 10 seeds; the
new seeds 5-9 gave -0.0008 / -0.0078 / +0.0175 / -0.0078 / -0.0102 (seed 7 against
the paper). The other checks pass as before: loss ordered by bits (W8A8 -0.39%,
W4A4 -0.72%, W3A3 -1.41%, W2A2 -3.40% vs the next narrower, all CIs below 0), W1A1
converges, QuEST W1A1 - naive -0.061, CI [-0.089, -0.033]. Loss vs float (seeds
0-4): W8A8 -0.0%, W4A4 +0.4%, W3A3 +1.1%, W2A2 +2.6%, W1A1 +6.2%, naive W1A1
+8.5%; W4A4 without Hadamard +0.7%. At 45K parameters the Hadamard gain (~0.2-0.3%
of the loss) is inside the seed spread; the paper's 1% is at 30M (medium).

Pre-registered seed count (2026-11-30, chosen before the one-commit rerun from the
power table of scripts/seed_power.py; docs/REPRODUCE_PLAN.md): 5 seeds (0-4), and 10
(0-9) for W4A4 and W4A4_no_hadamard (the Hadamard check), as the quick mode already
had. From the committed 5-seed result (58009e6, load 1.97-1.61): the Hadamard check
needs 6 seeds (50% power) / 9 (80%), W1A1 vs naive STE 3 / 4, the ordering checks 3.
Projected ~900 s (718 s + 5 seeds of the W4A4 pair, 36.8 s each).

One-commit rerun (2026-12-01, clean d4585f7, `bash scripts/reproduce_all.sh`, the
otherwise idle 2-core CPU, load average 3.06 at start and 1.99 at end): summed arm
time 710 s (the #20 bound is 1,200 s), 716 s of wall time; 6/7 checks passed, NOT
reproduced (failed: Hadamard better than none at W4A4). The committed results/quest/
is this run.

Pre-registered seed count for the next rerun (2026-12-01, before it runs;
docs/REPRODUCE_PLAN.md, "The plan for the next rerun"): W4A4 and W4A4_no_hadamard
(check 2) 24 seeds (0-23); the others stay at 5 (0-4). This is the registered rule
(the n80 of the most demanding check the design can pass, capped where the
projected summed arm time passes ~1,120 s) applied to the d4585f7 rerun's measured
times, which replace the older, slower pilot; no design changed. From that rerun:
the Hadamard check (W4A4 - no Hadamard -0.0047, sd 0.0093 over 10 seeds) needs 18
seeds (50% power) / 33 (80%); a seed of its pair costs 28.8 s (16.5 + 12.3), so 33
seeds project to ~1,370 s and the cap is 24: 710 s + 14 x 28.8 s = ~1,110 s, ~66%
power (~72% given the ten measured seeds; both take the rerun's mean as the truth,
so they are optimistic). Said plainly: this check's pair has now grown twice after
a miss (5 -> 10 before the registration, 10 -> 24 by the rule), and the paper's
effect is at 30M parameters, not 45K. Seeds 0-9 repeat the rerun's exactly:
training is deterministic on this CPU (part A and the rerun agreed to the printed
digits), so the new evidence is seeds 10-23.

Next rerun, part B (2026-12-02, clean cfa7268, `bash scripts/reproduce_all.sh
mtp_deepseek mtp_gloeckle nanoquant native_multimodal quest slm_agents
verified_synthetic`, the otherwise idle 2-core CPU, load average 2.52 at start and
1.76 at end): summed arm time 1337 s (OVER the #20 bound of 1,200 s; the d4585f7
rerun: 710 s), 1351 s of wall time; 6/7 checks passed, NOT reproduced (failed:
Hadamard better than none at W4A4). The committed results/quest/ is this run
(docs/REPRODUCE_PLAN.md, "The next rerun, part B").

Pre-registered seed count for the next rerun, revised for the 1,200 s bound
(2026-12-03, before it runs; docs/REPRODUCE_PLAN.md, "Time-bound changes for the next
rerun"): the W4A4 pair back to 10 seeds (0-9), the others 5. The 24-seed design ran
1,337 s at cfa7268 (AMD EPYC family 26), over the bound, and on the Xeon kind one
W4A4 seed trains in 21.6-23.3 s against cfa7268's 19.1 s (measured 2026-12-03, idle,
with and without `lattice.hostmem.tune_malloc`, which is 0.94x here: no help at this
size), so 24 seeds would be ~1,630 s there. 10 seeds project to ~850-900 s (EPYC)
and ~1,030 s (Xeon). Seeds 0-9 are the d4585f7 rerun's (-0.0047, CI [-0.0114,
+0.0020]), deterministic on one CPU kind, so check 2 is expected to fail again (it
also failed at 24 seeds: -0.0022, CI [-0.0062, +0.0017]); the change is for the
bound, not for a verdict.
"""

from __future__ import annotations

import math
from pathlib import Path

import ml_collections
import numpy as np

from lattice import experiment
from lattice.run import checks, scale

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
# medium's training tokens: 100 per non-embedding parameter (4 x 12 x 384^2 = 7.1M).
MEDIUM_TOKENS = 710_000_000


def _quest(bits: int, hadamard: bool, trust: float = 0.0) -> dict:
  return {'model.linear.kind': 'quest', 'model.linear.w_bits': bits,
          'model.linear.a_bits': bits, 'model.linear.hadamard': hadamard,
          'model.linear.trust': trust}


def arms(bits=BITS, hadamard_seeds=None) -> list[dict]:
  """float; QuEST W{b}A{b} with Hadamard for each b; W4A4 without it; naive W1A1.

  `hadamard_seeds`: the seeds of the two arms check 2 compares (W4A4 and
  W4A4_no_hadamard), when they run more than the others (None: the config's)."""
  out = [dict(name='float', overrides={})]
  for b in bits:
    out.append(dict(name=f'W{b}A{b}', overrides=_quest(b, True)))
  out.append(dict(name='W4A4_no_hadamard', overrides=_quest(4, False)))
  if hadamard_seeds is not None:
    for a in out:
      if a['name'] in ('W4A4', 'W4A4_no_hadamard'):
        a['seeds'] = list(hadamard_seeds)
  # Naive sign-STE: the 1-bit grid without rotation, gradient passed everywhere.
  out.append(dict(name='W1A1_naive_ste', overrides=_quest(1, False, trust=1e9)))
  return out


def _quick(d_model, n_layers, seq_len, batch, steps, lr, bits=BITS, seeds=(0, 1, 2),
           hadamard_seeds=None):
  c = experiment.lm_config(d_model, n_layers, max(d_model // 32, 2), seq_len, batch,
                           steps, lr, log_points=40)
  c.arms = arms(bits, hadamard_seeds)
  c.seeds = list(seeds)
  return c


def _medium():
  # One H100, <= 2 h for 8 arms x 3 seeds (`lattice plan`): QuEST's recipe (C4,
  # Llama-2 tokenizer, untied embeddings, seq 512, 10% warmup, cosine) on a model
  # below its ladder, at its 100 tokens per non-embedding parameter.
  c = scale.scale_config(d_model=384, n_layers=4, n_heads=3, seq_len=512, batch=256,
                         tokens=MEDIUM_TOKENS, lr=1.2e-3, corpus='c4',
                         tokenizer='llama2', tie_embeddings=False)
  c.optimizer.warmup_steps = c.train.steps // 10
  c.arms = arms()
  c.seeds = [0, 1, 2]
  return c


def _full():
  """QuEST's smallest model, "30M" (arXiv 2502.05003, sec. 5; repo IST-DASLab/QuEST,
  train.sh): 6 layers, hidden 640, 5 heads, SwiGLU FFN 1792 (2/3 of 4d rounded up
  to 256), untied embeddings, C4 with the Llama-2 tokenizer, seq 512, batch 64 x 8
  accumulation = 512 sequences, 3B tokens (100 per non-embedding parameter), peak
  LR 1.2e-3, 10% warmup, cosine, AdamW (0.9, 0.95), weight decay 0.1, clip 1.0.
  Differences: lattice's cosine floor is 0.1x the peak. 3 seeds (the paper reports
  one run per point; 3 make the checks judgeable, and a run is ~1 H100-hour).
  """
  c = scale.scale_config(d_model=640, n_layers=6, n_heads=5, seq_len=512, batch=512,
                         tokens=3_000_000_000, lr=1.2e-3, corpus='c4',
                         tokenizer='llama2', tie_embeddings=False)
  c.model.ffn = dict(d_ff=1792)
  c.optimizer.warmup_steps = c.train.steps // 10
  c.arms = arms()
  c.seeds = [0, 1, 2]
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _quick(d_model=32, n_layers=1, seq_len=32, batch=8, steps=6,
                              lr=3e-3, bits=(4, 1), seeds=(0,)),
      'quick': lambda: _quick(d_model=32, n_layers=2, seq_len=128, batch=16, steps=400,
                              lr=3e-3, seeds=(0, 1, 2, 3, 4),
                              hadamard_seeds=range(10)),
      'medium': _medium,
      'full': _full,
  })


def _checks(arms, bits: list[int], workdir: str) -> list:
  by = {a.name: a for a in arms}
  out = [checks.judge(checks.not_worse(
      f'W{hi}A{hi}', f'W{lo}A{lo}', ORDER_SLACK, relative=True,
      label=f'loss ordered by bits: W{hi}A{hi} not worse than W{lo}A{lo} '
            f'(slack {100 * ORDER_SLACK:g}%)'), by) for hi, lo in zip(bits, bits[1:])]
  out.append(checks.judge(checks.better(
      'W4A4', 'W4A4_no_hadamard', label='Hadamard better than none at W4A4'), by))
  w1 = checks.seed_values(by['W1A1'], 'val_loss')
  first = {s: experiment.metric_curve(Path(workdir) / 'W1A1' / f'seed_{s}', 'loss')[1][0]
           for s in w1}
  out.append(experiment.check(
      'QuEST W1A1 converges (every seed finite, >= 1 nat below its first loss)',
      all(math.isfinite(w1[s]) and w1[s] < first[s] - 1.0 for s in w1),
      ', '.join(f'seed {s}: val loss {w1[s]:.3f} (first train loss {first[s]:.3f})'
                for s in w1)))
  out.append(checks.judge(checks.better(
      'W1A1', 'W1A1_naive_ste', label='QuEST W1A1 better than naive sign-STE W1A1'), by))
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  arms, _ = experiment.run_arms(config, workdir)
  # Means over the seeds every arm ran (config.seeds), so the headline and plot
  # compare like with like when check 2's arms run more.
  common = [int(s) for s in config.seeds]
  loss = {a.name: float(np.mean([checks.seed_values(a, 'val_loss')[s] for s in common]))
          for a in arms}
  bits = [int(a.name[1:].split('A')[0]) for a in arms
          if a.name.startswith('W') and a.name.endswith(tuple('0123456789'))]
  had = [loss[f'W{b}A{b}'] for b in bits]
  naive = loss['W1A1_naive_ste']
  results = _checks(arms, bits, workdir)
  tokens_per_param = arms[0].tokens / arms[0].params
  seed = config.seeds[0]
  plots = [
      experiment.plot_series(
          f'{workdir}/loss_vs_bits.png',
          {'QuEST (Hadamard)': (bits, had),
           'no Hadamard': ([4], [loss['W4A4_no_hadamard']]),
           'float': (bits, [loss['float']] * len(bits))},
          xlabel='bits (weights = activations)', ylabel='validation loss (nats/token)',
          title='QuEST: loss vs bit width'),
      experiment.plot_series(
          f'{workdir}/w1a1_train_loss.png',
          {n: experiment.metric_curve(Path(workdir) / n / f'seed_{seed}', 'loss')
           for n in ('float', 'W1A1', 'W1A1_naive_ste')},
          xlabel='step', ylabel='train loss', title='1-bit weights and activations'),
  ]
  paper_rel = {8: 3.209, 4: 3.272, 3: 3.372, 2: 3.574, 1: 3.945}
  ours = ', '.join(f'W{b}A{b} {100 * (loss[f"W{b}A{b}"] / loss["float"] - 1):+.1f}%'
                   for b in bits)
  return experiment.finish(
      __name__, config, workdir, arms=arms,
      checks=results,
      headline={'paper': 'loss vs BF16: ' + ', '.join(
                    f'W{b}A{b} {100 * (v / 3.207 - 1):+.1f}%' for b, v in paper_rel.items()),
                'ours': f'loss vs float: {ours}; naive W1A1 '
                        f'{100 * (naive / loss["float"] - 1):+.1f}%'},
      plots=plots,
      notes=f'float trained on {tokens_per_param:.1f} tokens per parameter '
            f'({arms[0].tokens:,} tokens, {arms[0].params:,} parameters). Reported as '
            'measured: ' + checks.ci_line('W4A4', 'float', arms, relative=True) + '.')
