r"""Auxiliary-loss-free load balancing for mixture-of-experts.

Paper: Wang et al. 2024, "Auxiliary-Loss-Free Load Balancing Strategy for
Mixture-of-Experts" (arXiv 2408.15664).

Arms: the same sigmoid-routed MoE with an auxiliary Switch-style balance loss
(`aux_loss`), with loss-free balancing (`loss_free`, u = 1e-3), and, in medium and
full, with no balancing at all (`no_balancing`, a control no check reads; quick
drops it to afford 1600 steps). Paired by seed: the same init seed and data order in
every arm.

Pre-registered checks (code: `_checks`; lattice.run.checks, 95% paired t interval
over the seeds):
  1. loss-free MaxVio_global below half the aux loss's: CI of
     maxvio(loss_free) - 0.5 * maxvio(aux_loss) below 0 (the paper: ~18x lower),
     each arm's maxvio per seed being MaxVio_global (max_i load_i / mean load - 1
     over the whole eval set, mean over MoE layers; arXiv 2408.15664 sec. 4.1)
     averaged over the evaluations in the last quarter of training
     (lattice.moe.summary.maxvio_late; quick: steps 1200, 1500, 1600);
  2. loss-free validation loss not worse than the aux loss's by more than
     LOSS_MARGIN (1% relative; the paper reports equal or better, PPL 9.50 vs 9.56
     at 1B): CI upper bound of val_loss(loss_free) / val_loss(aux_loss) - 1 < 1%.
The issue (#20) this replaces: a single-seed ratio passed at 1.0099 against 1.01.

Commands:
  python -m lattice.main --config=experiments/moe_loss_free_balance.py:smoke  --workdir=runs/lfb_smoke
  python -m lattice.main --config=experiments/moe_loss_free_balance.py:quick  --workdir=runs/lfb
  python -m lattice.main --config=experiments/moe_loss_free_balance.py:medium --workdir=gs://BUCKET/lfb_medium
  python -m lattice.main --config=experiments/moe_loss_free_balance.py:full   --workdir=gs://BUCKET/lfb_full
  lattice plan --config=experiments/moe_loss_free_balance.py:medium --chips h100x1

Expected: MaxVio_global of loss-free well under half that of the aux loss, validation
loss within 1%. Design review for the loss check (issue #20), from the earlier 3-seed
quick run (commit e4633ee-dirty, 1500 steps, aux weight 1e-2, 16 eval batches, load
unknown): val loss per-seed ratios loss_free / aux_loss - 1 of +1.8%, +0.9%, +0.3%
(mean +1.0%; a 3-seed t interval spans about +-1.9%), yet on the training stream
the two arms were equal: last-50-step train loss 1.629 (loss-free) vs 1.638 (aux,
which includes its ~0.01-0.02 balance-loss term), and the unbalanced control's val
loss (1.923) sat beside loss-free's (1.926). The 0.28-nat gap between train and val
loss says the 16 eval batches (32,768 tokens, the first few held-out stdlib files)
are a narrow, shifted sample, and the per-seed val differences (sd ~0.75%
relative) were as large as the 1% margin. With that noise a non-inferiority test at
1% fails even when the arms are equal (5 seeds: half-width 2.78 x 0.75% / sqrt 5 =
0.93%). The paper's own difference is -0.28% in loss (PPL 9.50 vs 9.56: ln(9.56 /
9.50) / ln 9.50), so the 1% margin is already ~3.5x the paper's effect and is kept.
Measured on this code for this review (seed 0 only, 800 steps, the previous quick;
shared machine at load ~17, so no times): last-50-step train loss 1.901 (aux, of
which ~0.020 is its balance term, so CE ~1.881) vs 1.903 (loss-free); val loss
on 16 / 128 eval batches 2.116 / 2.038 (aux) vs 2.173 / 2.078 (loss-free), ratio
+2.7% / +2.0%, and on the training stream +1.1% (CE), so at 800 steps the gap is not
only the eval set's; MaxVio_global on 128 batches 0.375 (aux) vs 0.240 (loss-free).
So at 800 steps the bias had not caught up (0.24 is 0.64x the aux loss's: check 1 would
fail, where the 1500-step run had 0.135 vs 0.352 with a seed sd of 0.002), and the
loss gap shrinks with training (16 batches: +2.7% at 800 steps, +1.0% mean at 1500).
With u = 1e-3 the bias moves at most 0.001 a step, so the first few hundred steps
route with a lagging bias; the paper's run is tens of thousands of steps long, so
that phase is a small part of it, and here it must be too.
What this design changes to give the comparison a fair chance:
  - 1600 steps (was 800): the bias's catch-up phase a smaller share of training;
  - 128 eval batches (262,144 tokens, 8x the held-out text) for both val loss and
    MaxVio_global (the paper measures MaxVio_global over its validation set); the
    16-batch set read 0.08-0.10 nats higher than the 128-batch one;
  - 3 paired seeds (the budget's limit at 1600 steps): MaxVio's seed sd (0.002) is
    tiny, so check 1 needs no more; check 2 at 3 seeds (t_{2, 0.975} = 4.30) passes
    only if the true gap is small and steady across seeds (e.g. a mean +0.2% with a
    per-seed sd of 0.3% gives an upper bound of ~0.94%);
  - kept from the paper: u = 1e-3 (PAPERS.md: 1e-4 too slow, 1e-2 oscillates);
    Switch's aux weight 1e-2 (PAPERS.md); the 1% margin (above).
If the loss check still fails, the quick run's numbers say how far the gap closed
from 800 to 1600 steps; the paper's equal-loss result is for runs where the bias's
catch-up is a negligible share of training (medium: 1.5B tokens, ~23K steps).

Measured quick run of this design (commit 13bc790, the idle 2-core machine, load
average 3.50 at start (the previous run's tail) and 1.55 at end; 12 min 07 s wall
for the whole command, 722 s summed arm time): the loss check now passes, val loss
1.8553 (loss-free) vs 1.8590 (aux), -0.19%, CI [-1.38%, +0.99%] (per seed -0.74%,
+0.09%, +0.07%); the MaxVio check fails: MaxVio_global 0.159 (loss-free; per seed
0.226 / 0.144 / 0.107) vs 0.270 (aux; 0.156 / 0.349 / 0.304), loss-free - 0.5 x aux
+0.024, CI [-0.24, +0.29]. Loss-free is below half the aux loss's in seeds 1 and 2
(0.41x, 0.35x) but not in seed 0, where the aux arm happened to balance well
(0.156) and loss-free's bias had not settled (0.226): at 1600 steps the bias's
catch-up is still visible, and the aux arm's MaxVio varies 2x across seeds, so 3
seeds cannot bound the ratio. Verdict NOT reproduced (1/2 checks). The paper's 18x
gap comes from runs where the catch-up is a negligible share; medium is where that
holds.

Quick budget: measured 722 s summed arm time (above), under the 1,200 s bound.

Why the MaxVio check now averages evaluations (2026-11-30, before the one-commit
rerun; no run of this design yet). MaxVio_global already pools the 128 eval
batches (262K tokens, ~65K routed tokens an expert and layer, a sampling sd of
~0.5% of an expert's load), so the 2x seed-to-seed spread above (aux 0.156 vs
0.349) is not evaluation noise: it is the router's state at the one evaluated step.
Both arms balance by feedback (the bias moves +-u every step; the aux loss only on
average), so the final step's balance is one draw from a fluctuating process. The
check therefore reads MaxVio_global averaged over the evaluations of the last
quarter of training (quick: eval_every 300, evaluations at 1200, 1500, 1600; the
first three quarters hold the bias's catch-up and are left out). Each term is the
paper's MaxVio_global, so the units and the ideal value (0) are the paper's; the
final evaluation's MaxVio_global is still reported in the notes with its CI. The
extra evaluations cost 5 x 128 eval batches an arm and seed (forward only, ~3 s
each by the step time above: ~15 s). How much the averaging narrows the spread is
not measured yet: with the pilot's mean on the failing side (loss-free - 0.5 x aux
+0.024), no seed count makes the old reading pass, so the seed count below is set
by the budget and the loss check, not by a power estimate of check 1.

Pre-registered seed count (2026-11-30, docs/REPRODUCE_PLAN.md, chosen before the
one-commit rerun from the power table of scripts/seed_power.py): quick runs 4 paired
seeds (0-3). The loss check needs 3 (50% power) / 4 (80%); 4 seeds x 2 arms at
~120 s + ~15 s of evaluations project to ~1,080 s of summed arm time (5 seeds:
~1,350 s, over the 1,200 s bound).

medium and full, from `lattice plan` (40% MFU assumed), not run:
  medium (h100x1): d 384, 6 layers, 64 routed + 2 shared experts of 192, top-6;
    FineWeb-Edu, Llama-2 tokenizer, seq 1024 x 64, 1.5B tokens (0.15 epoch); 104M
    total / 26.6M activated parameters, 56 tokens per activated parameter,
    2.8e17 FLOPs and 0.20 H100-hours a run; 3 arms x 3 seeds: 1.78 H100-hours.
  full (h100x8; `_full` says what differs from the paper): the paper's 1B model,
    100B tokens of C4 (0.64 epoch); 1.04B total / 0.22B activated, 1.3e20 FLOPs
    and 94 H100-hours a run; 3 arms x 1 seed: 281 H100-hours. Paper (Table 2,
    1B): aux loss PPL 9.56, MaxVio_global 0.72; loss-free 9.50, 0.04.

One-commit rerun (2026-12-01, clean d4585f7, `bash scripts/reproduce_all.sh`, the
otherwise idle 2-core CPU, load average 1.98 at start and 2.04 at end): summed arm
time 510 s (the #20 bound is 1,200 s), 513 s of wall time; 1/2 checks passed, NOT
reproduced (failed: loss-free validation loss not worse than the aux loss's by more
than 1%). The committed results/moe_loss_free_balance/ is this run.

Next rerun, part A (2026-12-02, clean cfa7268, `bash scripts/reproduce_all.sh
baseline_lm bitnet_b158 composition deepseek_moe mixture_of_agents model_collapse
moe_loss_free_balance`, the otherwise idle 2-core CPU, load average 1.96 at start and
1.85 at end): summed arm time 567 s (within the #20 bound of 1,200 s), 572 s of wall
time; 1/2 checks passed, NOT reproduced (failed: loss-free validation loss not worse
than the aux loss's by more than 1%). The committed results/moe_loss_free_balance/ is
this run (docs/REPRODUCE_PLAN.md, "The next rerun, part A").
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from lattice import experiment
from lattice.moe import summary
from lattice.run import checks, scale

NAME = 'moe_loss_free_balance'
PAPER = {'title': 'Auxiliary-Loss-Free Load Balancing Strategy for Mixture-of-Experts',
         'arxiv': '2408.15664'}
CLAIM = ('adding a per-expert bias to the routing scores only for top-k selection, and '
         'moving it by b_i += u * sign(mean load - load_i) after each step (u = 1e-3), '
         'keeps experts far better balanced than an auxiliary balance loss, at equal '
         'or better validation loss (Table 2, 1B model: MaxVio_global 0.04 vs 0.72, '
         'PPL 9.50 vs 9.56).')
# Relative val-loss non-inferiority margin: "equal or better" read with the
# seed-to-seed noise of one run at these sizes (1-1.4%, issue #20).
LOSS_MARGIN = 0.01
# "Far better balanced": loss-free MaxVio_global below this fraction of the aux loss's.
VIO_FRACTION = 0.5
CHECKS = (checks.not_worse('loss_free', 'aux_loss', LOSS_MARGIN, relative=True,
                           label='loss-free validation loss not worse than the aux '
                                 f'loss\'s by more than {100 * LOSS_MARGIN:g}%'),)


def arms(aux_weight: float, control: bool = True) -> list[dict]:
  """aux_loss (Switch/GShard loss of weight `aux_weight`), loss_free (u = 1e-3,
  arXiv 2408.15664 sec. 3) and, with `control`, no_balancing."""
  out = [dict(name='aux_loss', overrides={'model.ffn.aux_loss': aux_weight}),
         dict(name='loss_free', overrides={'model.ffn.bias_rate': 1e-3})]
  return out + ([dict(name='no_balancing', overrides={})] if control else [])


def _quick(d_model, n_layers, expert_d_ff, seq_len, batch, steps, lr, seeds,
           eval_batches=16, eval_every=0):
  c = experiment.lm_config(d_model, n_layers, max(d_model // 32, 2), seq_len, batch,
                           steps, lr, ffn=dict(kind='moe', n_experts=8, top_k=2,
                                               router='sigmoid', expert_d_ff=expert_d_ff))
  c.arms = arms(1e-2, control=False)  # Switch's weight (arXiv 2101.03961)
  c.seeds = list(seeds)
  c.data.eval_batches = eval_batches
  c.train.eval_every = eval_every
  return c


def _moe(expert_d_ff: int) -> dict:
  # DeepSeekMoE-style layer as in the paper (sec. 4.1: sigmoid gate; appendix A:
  # 64 routed experts, 6 active, 2 shared).
  return dict(kind='moe', router='sigmoid', n_experts=64, top_k=6, n_shared=2,
              expert_d_ff=expert_d_ff)


def _medium():
  c = scale.scale_config(d_model=384, n_layers=6, n_heads=6, seq_len=1024, batch=64,
                         tokens=1_500_000_000, lr=1e-3, corpus='fineweb-edu',
                         tokenizer='llama2', ffn=_moe(192))
  c.arms = arms(1e-3)
  c.seeds = [0, 1, 2]
  return c


def _full():
  """The paper's 1B model (arXiv 2408.15664, sec. 4.1 and appendix A).

  9 layers, hidden 1024, 8 heads, MoE in every layer: 64 routed experts (6 active)
  plus 2 shared, sigmoid gate; 100B training tokens; aux-loss baseline weight 1e-3.
  These values are as recalled from the paper (it could not be opened from the
  machine that wrote this mode): check them against its appendix before a paid run.
  Differences, said plainly: DeepSeek's multilingual corpus is not public: C4 here;
  its 32K BPE tokenizer: Llama-2's 32K here; the appendix gives total and activated
  sizes, so the expert width 512 is chosen to land at ~1.0B total (`lattice plan`);
  batch 1024 x 2048 and the cosine schedule are lattice's choices. One seed.
  """
  c = scale.scale_config(d_model=1024, n_layers=9, n_heads=8, seq_len=2048, batch=1024,
                         tokens=100_000_000_000, lr=1e-3, warmup=2000, corpus='c4',
                         tokenizer='llama2', tie_embeddings=False, ffn=_moe(512))
  c.train.microbatches = 16   # 8 sequences a microbatch per chip on h100x8
  c.arms = arms(1e-3)
  c.seeds = [0]
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _quick(d_model=32, n_layers=1, expert_d_ff=32, seq_len=32,
                              batch=8, steps=10, lr=3e-3, seeds=(0,), eval_every=3),
      # 1600 steps (at 800 the bias had not caught up: MaxVio_global 0.24 vs the aux
      # loss's 0.375) and 128 eval batches (262K tokens, 8x the default's held-out
      # text); evaluations every 300 steps, so the MaxVio check averages the ones at
      # 1200, 1500 and 1600; 4 seeds, pre-registered 2026-11-30 (docstring).
      'quick': lambda: _quick(d_model=96, n_layers=2, expert_d_ff=96, seq_len=128,
                              batch=16, steps=1600, lr=3e-3, seeds=(0, 1, 2, 3),
                              eval_batches=128, eval_every=300),
      'medium': _medium,
      'full': _full,
  })


def late_maxvio(arm, steps: int) -> dict[int, float]:
  """{seed: MaxVio_global averaged over the arm's evaluations in the last quarter of
  training} (lattice.moe.summary.maxvio_late). Raises ValueError as it does."""
  return {seed: summary.maxvio_late(rows, steps)[0]
          for seed, rows in zip(arm.seeds, arm.extra['history'])}


def _checks(arms_: list, steps: int) -> list:
  by = {a.name: a for a in arms_}
  vio_lf, vio_aux = late_maxvio(by['loss_free'], steps), late_maxvio(by['aux_loss'], steps)
  vio = checks.judge_values(
      checks.better('loss_free', f'{VIO_FRACTION:g} x aux_loss', 'maxvio_late',
                    label=f'loss-free MaxVio_global (mean of the last quarter\'s '
                          f'evaluations) below {VIO_FRACTION:g}x the aux loss\'s'),
      vio_lf, {s: VIO_FRACTION * v for s, v in vio_aux.items()})
  return [vio] + checks.judge_all(CHECKS, arms_)


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  arms_, _ = experiment.run_arms(config, workdir)
  by = {a.name: a.metrics for a in arms_}
  steps = config.train.steps
  vio = {a.name: sum(late_maxvio(a, steps).values()) / len(a.seeds) for a in arms_}
  loss = {k: by[k]['val_loss']['mean'] for k in by}
  seed = config.seeds[0]
  plots = [experiment.plot_series(
      f'{workdir}/maxvio.png',
      {a.name: experiment.metric_curve(Path(workdir) / a.name / f'seed_{seed}',
                                       'maxvio_batch') for a in arms_},
      xlabel='step', ylabel='MaxVio (batch, mean over layers)',
      title='load balance during training')]
  control = (f'; no balancing: MaxVio_global {vio["no_balancing"]:.3f}, val loss '
             f'{loss["no_balancing"]:.3f}' if 'no_balancing' in by else '')
  return experiment.finish(
      __name__, config, workdir, arms=arms_, checks=_checks(arms_, steps),
      headline={'paper': 'MaxVio_global 0.04 vs 0.72 (aux); PPL 9.50 vs 9.56',
                'ours': f'MaxVio_global (last quarter\'s evaluations) '
                        f'{vio["loss_free"]:.3f} vs {vio["aux_loss"]:.3f}; '
                        f'val loss {loss["loss_free"]:.3f} vs {loss["aux_loss"]:.3f} '
                        f'(mean over {len(config.seeds)} seeds){control}'},
      plots=plots,
      notes='Reported as measured, not pre-registered: MaxVio_global at the final '
            'evaluation only (Table 2\'s reading), '
            + checks.ci_line('loss_free', 'aux_loss', arms_, 'maxvio_global') + '.')
