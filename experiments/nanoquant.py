r"""NanoQuant: sub-1-bit post-training compression of a trained LM.

Paper: "NanoQuant: Sub-1-bit post-training quantization of LLMs" (arXiv 2602.06694;
repo SamsungLabs/NanoQuant).

Arms: the trained float model (one training seed); compressed to 1.0, 0.8 and 0.55
bits per weight (scales counted), each from the ADMM and from the sign-of-SVD
initialization, then block-wise tuned and KL-distilled. Both initializations
factor the same activation-weighted matrix diag(d) W and keep the scales they find
(refined by the same exact least squares; lattice.quant.nanoquant_init), so the
arms differ only in how the signs are found. ADMM is the reference implementation's
(SamsungLabs/NanoQuant `factorize_admm_nanoquant` with its main.py defaults): random
Gaussian start, consensus variables projected onto "rank-1 magnitude times sign"
matrices (SVID), penalty rho rising linearly 0 -> 1 over 400 iterations plus a 3e-2
ridge, seeded by the calibration seed; lattice scores its iterates in the stored
format every 10 iterations, keeps the best, and falls back to the SVD point if
that is better (it never was on this model). Not reproduced from the reference:
its output-side (loss-gradient) weighting and 0.4 shrinkage of the weights, and
its per-projection tuning order with lr 1e-5 over 8 epochs. Each compressed arm is repeated
over 3 calibration seeds (different calibration sequences), the unit the checks pair
on: arm `{bits}bit_{init}` holds, per calibration seed, the tuned validation loss and
`init_error`, the mean over projections of the activation-weighted relative
reconstruction error right after initialization.

Pre-registered checks (code: `_checks`; lattice.run.checks, 95% paired t interval
over the calibration seeds):
  1. at each budget, ADMM's init_error below SVD's (CI of the difference below 0);
  2. at each budget, ADMM's tuned val loss below SVD's (CI below 0);
  3. loss rises as bits fall (ADMM, tuned): at each adjacent pair of budgets, the
     larger not worse than the smaller by more than MONO_SLACK (0.5% relative);
  4. achieved bits per weight within each budget (exact counts).

Commands:
  python -m lattice.main --config=experiments/nanoquant.py:smoke --workdir=runs/nanoquant_smoke
  python -m lattice.main --config=experiments/nanoquant.py:quick --workdir=runs/nanoquant
  # medium and full compress an imported Qwen3-0.6B instead of training a model:
  huggingface-cli download Qwen/Qwen3-0.6B --local-dir hf/qwen3-0.6b
  lattice convert hf --from hf/qwen3-0.6b --out runs/qwen3-0.6b
  python -m lattice.main --config=experiments/nanoquant.py:medium --workdir=runs/nanoquant_medium
  python -m lattice.main --config=experiments/nanoquant.py:full   --workdir=runs/nanoquant_full
  lattice plan --config=experiments/nanoquant.py:full --chips h100x1

medium and full (`_imported`), not run: the float arm is the imported model
(`compress.from_run`), evaluated, not trained; calibration sequences come from
WikiText-2's train split and validation loss (perplexity = exp) from its test
split, as the paper reports perplexity per bits per weight on WikiText-2. The
model is the smallest of the paper's Qwen3 sweep (0.6B-14B). From `lattice plan`:
596M parameters (Qwen3-0.6B, tied embeddings); it prices training only, so its
token and FLOP lines are a 1-step placeholder, and the compression time (18
compressions: 3 budgets x 2 inits x 3 calibration seeds) is neither priced nor
measured. medium: 32 calibration sequences of 1024, 64/256/128 float/block/distill
steps; full: the paper's 128 sequences of 2048 with 4x those steps. The >= 20
tokens-per-parameter rule of medium modes does not apply (nothing is trained).

Expected: validation loss rising as bits fall; ADMM init below SVD init; projection
bytes ~32x below float32 at 1 bit. Trial of this ADMM on the quick float model
(val 2.179; run piecewise on the shared machine, so losses only, no timings):
initial weighted error ADMM / SVD 0.568 / 0.829, 0.662 / 0.846, 0.777 / 0.880 at
1 / 0.8 / 0.55 bits, ADMM lower in 14 of 14 projections at each budget; untuned
val loss ADMM 2.399 / 2.466 / 2.719 vs SVD 7.55 / 7.12 / 7.21; tuned (quick's
steps) ADMM 2.226 / 2.274 / 2.341 vs SVD 2.466 / 2.442 / 2.425 with calibration
seed 0, and ADMM 2.224 / 2.268 / 2.322, SVD 2.393 at 0.55, with seed 1. The SVD
arm is not monotone in bits: its extra components enter with equal weight. Earlier single-seed run (before this design: ADMM
from diag(d) W with its scales dropped, SVD from W; 0.5M-param LM, float 2.163):
tuned SVD 2.268 / 2.285 / 2.309, ADMM 2.463 / 2.508 / 2.507 at 1.0 / 0.8 / 0.55 bits.
Measured with the previous ADMM (40 iterations from the SVD, a fixed rho,
row-scaled-sign projections; quick, clean clone of cc5fec7, the idle 2-core
machine, load average 2.32 at the start and 2.43 at the end): 14 min 51 s wall, 888 s summed arm time. NOT
reproduced (3/9). Tuned val loss ADMM / SVD: 2.425 / 2.476 at 1 bit, 2.452 / 2.455
at 0.75, 2.541 / 2.428 at 0.5 (float 2.179). ADMM starts lower in tuned loss only
at 1 bit (-0.050, CI [-0.091, -0.010]); at 0.75 it ties (-0.002, CI [-0.042,
+0.037]) and at 0.5 it is worse (+0.114). Its initial activation-weighted
reconstruction error is higher than SVD's at every budget (+0.047 / +0.062 /
+0.062, CIs far from 0) and in 39 of 42 projections (the exceptions: both FFN
output projections at 1 bit and layer 1's at 0.75), so this ADMM does not reach even the
SVD point of the very objective it minimises: the factorization, not the
comparison, is what to examine next (its iteration count and penalty, and whether
the scales it fits survive into the tuned model). Loss ordering: 0.75 vs 0.5 bits
passes; 1 vs 0.75 fails on the interval (-1.09%, CI [-4.11%, +1.92%]). Bits per
weight on budget; projections 32x / 42.7x / 64x below float32.

Measured with this ADMM (the reference's; quick, clean clone of 967d07c, the idle
2-core machine, load average 0.77 at the start and 2.33 at the end): 16 min 2 s
wall, 958 s summed arm time. REPRODUCED (9/9). Initial weighted error ADMM - SVD
-0.260 / -0.182 / -0.102 at 1 / 0.8 / 0.55 bits (CIs within +-0.004); tuned val
loss ADMM / SVD 2.233 / 2.476, 2.279 / 2.455, 2.342 / 2.428 (float 2.179; ADMM -
SVD -0.242, CI [-0.293, -0.192]; -0.176, CI [-0.241, -0.110]; -0.086, CI [-0.125,
-0.047]); loss rises as bits fall, 1 vs 0.8 bits -2.01% (CI [-2.26%, -1.75%]) and
0.8 vs 0.55 bits -2.68% (CI [-3.45%, -1.92%]); bits per weight 1.000 / 0.750 /
0.500. The SVD arm is not monotone in bits (2.476 / 2.455 / 2.428), as in the
trial above.

Pre-registered seed count (2026-11-30, chosen before the one-commit rerun from the
power table of scripts/seed_power.py; docs/REPRODUCE_PLAN.md): 3 calibration seeds
(the float model, shared by every arm, trains once). From the committed result
(967d07c, load 0.77-2.33): every paired check needs 3 seeds even for 80% power; 4
would take ~1,260 s.

One-commit rerun (2026-12-01, clean d4585f7, `bash scripts/reproduce_all.sh`, the
otherwise idle 2-core CPU, load average 2.36 at start and 2.27 at end): summed arm
time 638 s (the #20 bound is 1,200 s), 642 s of wall time; 9/9 checks passed,
reproduced. The committed results/nanoquant/ is this run.

Next rerun, part B (2026-12-02, clean cfa7268, `bash scripts/reproduce_all.sh
mtp_deepseek mtp_gloeckle nanoquant native_multimodal quest slm_agents
verified_synthetic`, the otherwise idle 2-core CPU, load average 1.99 at start and
2.25 at end): summed arm time 755 s (within the #20 bound of 1,200 s; the d4585f7
rerun: 638 s), 760 s of wall time; 9/9 checks passed, reproduced. The committed
results/nanoquant/ is this run (docs/REPRODUCE_PLAN.md, "The next rerun, part B").
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from lattice import config as config_lib
from lattice import experiment
from lattice.run import checks, scale
from lattice.data import pipeline, tokenizer as tokenizer_lib
from lattice.nn import transformer
from lattice.quant import nanoquant
from lattice.train import loop, rundir
from lattice.train import step as step_lib

NAME = 'nanoquant'
PAPER = {'title': 'NanoQuant: Sub-1-bit post-training quantization of large language models',
         'arxiv': '2602.06694'}
CLAIM = ('writing every projection as s_post * (sign(U) sign(V)^T) * s_pre, '
         'initialized by ADMM on the activation-weighted matrix and tuned block by '
         "block against the float model's outputs (then distilled), compresses an LLM "
         'below 1 bit per weight with perplexity that degrades smoothly as the budget '
         'falls (Llama-2-70B ~24x smaller), and the ADMM initialization beats a plain '
         'sign-of-SVD initialization.')
INITS = ('admm', 'svd')
# "Loss rises as bits fall" tolerates the higher budget losing by this relative
# margin: seed-to-seed noise here is ~1% (issue #20); the old zero-tolerance check
# failed on 2.508 vs 2.507.
MONO_SLACK = 0.005
# Where medium and full find the imported model (see Commands); override with
# --config.compress.from_run=DIR.
IMPORTED_RUN = 'runs/qwen3-0.6b'


def _compress(budgets, calib, float_steps, block_steps, distill_steps,
              calib_seeds=(0, 1, 2), from_run='') -> dict:
  return dict(budgets=budgets, calib_sequences=calib, float_steps=float_steps,
              block_steps=block_steps, distill_steps=distill_steps, lr=1e-3,
              calib_seeds=calib_seeds, from_run=from_run)


def _config(d_model, n_layers, seq_len, batch, steps, lr, **compress):
  c = experiment.lm_config(d_model, n_layers, max(d_model // 32, 2), seq_len, batch,
                           steps, lr)
  c.arms = [dict(name='float', overrides={})]
  c.compress = _compress(**compress)
  return c


def _imported(seq_len: int, calib: int, **compress) -> ml_collections.ConfigDict:
  """A mode that compresses an imported model (`compress.from_run`, the output of
  `lattice convert hf`) with WikiText-2 calibration and evaluation, as the paper.

  Nothing trains: `train.steps` is 1 only because the config needs it, and
  `compress.from_run`'s model replaces `model` at run time. The `model` section
  is Qwen3-0.6B's (its Hugging Face config.json: hidden 1024, 28 layers, 16 heads,
  8 KV heads of 128, FFN 3072, QK-norm, tied embeddings, vocab 151,936, RoPE base
  1e6), so `lattice plan` sizes it offline.
  """
  c = scale.scale_config(d_model=1024, n_layers=28, n_heads=16, seq_len=seq_len,
                         batch=8, tokens=8 * seq_len, lr=1e-5, corpus='wikitext2',
                         tokenizer='qwen3', scan=False, remat='none',
                         ffn=dict(d_ff=3072))
  c.model.vocab_size = 151_936   # the checkpoint's embedding rows (> the tokenizer's)
  c.model.attention.update(dict(n_kv_heads=8, head_dim=128, qk_norm=True,
                                rope_theta=1_000_000.0))
  c.data.eval_batches = 40   # 40 x 8 x 2048 tokens: all of WikiText-2's test split
  c.arms = [dict(name='float', overrides={})]
  c.compress = _compress(calib=calib, **compress)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return experiment.pick_mode(arg, {
      'smoke': lambda: _config(d_model=64, n_layers=1, seq_len=32, batch=8, steps=10,
                               lr=3e-3, budgets=(1.0, 0.55), calib=8, float_steps=2,
                               block_steps=4, distill_steps=2, calib_seeds=(0,)),
      'quick': lambda: _config(d_model=128, n_layers=2, seq_len=128, batch=16,
                               steps=600, lr=3e-3, budgets=(1.0, 0.8, 0.55), calib=32,
                               float_steps=30, block_steps=120, distill_steps=60),
      # Qwen3-0.6B (`lattice convert hf`), 32 calibration sequences of 1024 and a
      # quarter of full's tuning, 3 calibration seeds.
      'medium': lambda: _imported(seq_len=1024, calib=32, budgets=(1.0, 0.8, 0.55),
                                  float_steps=64, block_steps=256, distill_steps=128,
                                  from_run=IMPORTED_RUN),
      # The paper's setting on the smallest model of its Qwen3 sweep (repo
      # SamsungLabs/NanoQuant, README "Pareto accuracy": Qwen3 0.6B-14B; main.py
      # defaults: 128 WikiText-2 calibration sequences of 2048, bits 1.0).
      'full': lambda: _imported(seq_len=2048, calib=128, budgets=(1.0, 0.8, 0.55),
                                float_steps=256, block_steps=1024, distill_steps=512,
                                from_run=IMPORTED_RUN),
  })


def imported_model(config: ml_collections.ConfigDict, run: str):
  """(Config, params): the mode's data, optimizer and train sections with the
  model and params of `run` (a `lattice convert hf` output). Raises ConfigError
  naming `compress.from_run` when `run` is not a lattice run."""
  cfg = experiment.arm_config(config, {}, seed=0)
  try:
    cfg = rundir.with_model_of(cfg, run)
  except config_lib.ConfigError as e:
    raise config_lib.ConfigError(f'compress.from_run: {e}') from None
  setup = loop.build(cfg, devices=jax.devices()[:1])
  return setup.cfg, jax.device_get(rundir.load_params(run, setup.abstract_state.params))


def _float_arm(config, workdir):
  """The float model to compress and its arm: trained here (CPU modes) or imported."""
  run = config.compress.get('from_run', '')
  if not run:
    trained = {}

    def keep(cfg, out):  # the float model to compress (run_arms keeps only metrics)
      trained.update(cfg=cfg, params=jax.device_get(out.state.params))
      return {}

    arms, _ = experiment.run_arms(config, workdir, measure=keep)
    return trained['cfg'], trained['params'], arms
  t0 = time.perf_counter()
  cfg, params = imported_model(config, run)
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  batches = pipeline.make_eval_batches(cfg.data, tok, cfg.data.eval_batches)
  n = int(sum(np.size(x) for x in jax.tree.leaves(params)))
  return cfg, params, [experiment.Arm(
      name='float', overrides={'compress.from_run': run},
      metrics=experiment.aggregate([{'val_loss': val_loss(cfg.model, params, batches)}]),
      params=n, active_params=n, wall_s=time.perf_counter() - t0, seeds=[0])]


def val_loss(model_cfg, params, batches) -> float:
  apply = jax.jit(transformer.Transformer(model_cfg).apply)
  total = weight = 0.0
  for b in batches:
    ce, w = step_lib.cross_entropy(apply({'params': params}, b['inputs']), b['targets'],
                                   b['weights'])
    total, weight = total + float(ce), weight + float(w)
  return total / weight


def calibration(cfg, tok, n: int, seed: int) -> np.ndarray:
  """[n, seq_len] calibration token ids drawn from the training split; `seed`
  picks a different shuffle of it (calibration seed 0, 1, ...)."""
  it = pipeline.make_train_iterator(cfg.data, tok, seed=cfg.data.shuffle_seed + 1 + seed)
  rows = []
  while sum(len(r) for r in rows) < n:
    rows.append(np.asarray(next(it)['inputs']))
  return np.concatenate(rows)[:n]


def _checks(arms, budgets) -> list:
  by = {a.name: a for a in arms}
  out = [checks.judge(checks.better(
      f'{b:g}bit_admm', f'{b:g}bit_svd', 'init_error',
      label=f'ADMM init below SVD init in weighted reconstruction error at {b:g} bits'),
      by) for b in budgets]
  out += [checks.judge(checks.better(
      f'{b:g}bit_admm', f'{b:g}bit_svd',
      label=f'ADMM start below SVD start in tuned val loss at {b:g} bits'), by)
          for b in budgets]
  out += [checks.judge(checks.not_worse(
      f'{hi:g}bit_admm', f'{lo:g}bit_admm', MONO_SLACK, relative=True,
      label=f'loss rises as bits fall: {hi:g} not worse than {lo:g} bits (ADMM, '
            f'slack {100 * MONO_SLACK:g}%)'), by) for hi, lo in zip(budgets, budgets[1:])]
  achieved = {b: by[f'{b:g}bit_admm'].metrics['bits_per_weight']['mean'] for b in budgets}
  out.append(experiment.check(
      'achieved bits per weight within the budget',
      all(achieved[b] <= b + 1e-9 for b in budgets),
      ', '.join(f'{b:g} -> {achieved[b]:.3f}' for b in budgets)))
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  cfg, params, arms = _float_arm(config, workdir)
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  cc = config.compress
  budgets, calib_seeds = list(cc.budgets), list(cc.calib_seeds)
  batches = pipeline.make_eval_batches(cfg.data, tok, cfg.data.eval_batches)
  float_loss = arms[0].metrics['val_loss']['mean']
  per_seed: dict[str, list[dict]] = {}
  errors: dict[str, list[dict]] = {}  # per projection, per calibration seed
  wall: dict[str, float] = {}
  n_params: dict[str, int] = {}
  for cs in calib_seeds:
    calib = calibration(cfg, tok, cc.calib_sequences, cs)
    for bits in budgets:
      for init in INITS:
        name = f'{bits:g}bit_{init}'
        t0 = time.perf_counter()
        ncfg = nanoquant.CompressConfig(
            bits=bits, init=init, seed=cs, lr=cc.lr, float_steps=cc.float_steps,
            block_steps=cc.block_steps, distill_steps=cc.distill_steps)
        qcfg, qparams, rep = nanoquant.compress(cfg.model, params, calib, ncfg)
        row = {'val_loss': val_loss(qcfg, qparams, batches),
               'init_error': float(np.mean(list(rep['init_error'].values()))),
               'bits_per_weight': rep['bits_per_weight'],
               'proj_bytes': rep['compressed_proj_bytes'],
               'float32_proj_bytes': rep['float32_proj_bytes']}
        per_seed.setdefault(name, []).append(row)
        errors.setdefault(name, []).append(rep['init_error'])
        wall[name] = wall.get(name, 0.0) + time.perf_counter() - t0
        n_params[name] = int(sum(np.size(x) for x in jax.tree.leaves(qparams)))
        print(f'[nanoquant] calib seed {cs} {name}: {row["bits_per_weight"]:.3f} bits/'
              f'weight, init error {row["init_error"]:.4f}, val loss '
              f'{row["val_loss"]:.4f} (float {float_loss:.4f})')
  for name, rows in per_seed.items():
    arms.append(experiment.Arm(
        name=name, overrides={'compress.bits': rows[0]['bits_per_weight'],
                              'compress.init': name.split('_')[1]},
        metrics=experiment.aggregate(rows), params=n_params[name],
        active_params=n_params[name], train_flops=arms[0].train_flops,
        tokens=arms[0].tokens, wall_s=wall[name], seeds=calib_seeds))
  by = {a.name: a for a in arms}
  mean = lambda name, key: by[name].metrics[key]['mean']  # noqa: E731
  plots = [experiment.plot_series(
      f'{workdir}/loss_vs_bits.png',
      {**{f'{init.upper()}, tuned': ([mean(f'{b:g}bit_{init}', 'bits_per_weight')
                                      for b in budgets],
                                     [mean(f'{b:g}bit_{init}', 'val_loss') for b in budgets])
          for init in INITS},
       'float': ([mean(f'{b:g}bit_admm', 'bits_per_weight') for b in budgets],
                 [float_loss] * len(budgets))},
      xlabel='bits per weight (scales counted)', ylabel='validation loss (nats/token)',
      title='NanoQuant compression of a trained LM')]
  projections = list(errors[f'{budgets[0]:g}bit_admm'][0])
  err_rows = '\n'.join(
      f'| {p} | ' + ' | '.join(
          f'{np.mean([e[p] for e in errors[f"{b:g}bit_admm"]]):.4f} / '
          f'{np.mean([e[p] for e in errors[f"{b:g}bit_svd"]]):.4f}' for b in budgets)
      + ' |' for p in projections)
  f32 = mean(f'{budgets[0]:g}bit_admm', 'float32_proj_bytes')
  sizes = '\n'.join(
      f'| {b:g} | {mean(f"{b:g}bit_admm", "bits_per_weight"):.3f} | '
      f'{mean(f"{b:g}bit_admm", "proj_bytes"):.0f} | '
      f'{f32 / mean(f"{b:g}bit_admm", "proj_bytes"):.1f}x |' for b in budgets)
  return experiment.finish(
      __name__, config, workdir, arms=arms, checks=_checks(arms, budgets),
      headline={'paper': 'Llama-2-70B ~24x smaller at sub-1-bit; ADMM init > SVD init',
                'ours': ', '.join(f'{b:g} bits: ADMM {mean(f"{b:g}bit_admm", "val_loss"):.3f}'
                                  f' / SVD {mean(f"{b:g}bit_svd", "val_loss"):.3f}'
                                  for b in budgets)
                        + f' (tuned, mean over {len(calib_seeds)} calibration seeds; '
                          f'float {float_loss:.3f})'},
      plots=plots,
      notes='Activation-weighted relative reconstruction error at initialization, per '
            'projection (ADMM / SVD, mean over calibration seeds):\n\n| projection | '
            + ' | '.join(f'{b:g} bits' for b in budgets) + ' |\n|---|'
            + '---|' * len(budgets) + '\n' + err_rows + '\n\nCompressed projection '
            f'size (float32 projections: {f32:.0f} bytes; embeddings, norms and head '
            'stay float):\n\n| budget | achieved bits/weight | bytes | vs float32 |\n'
            '|---|---|---|---|\n' + sizes)
