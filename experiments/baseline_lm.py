r"""Baseline: a Llama-style LM that must beat a byte 4-gram Kneser-Ney model.

Paper: the lattice baseline (no paper); the architecture follows "LLaMA: Open and
Efficient Foundation Language Models" (arXiv 2302.13971): RMSNorm, RoPE, SwiGLU,
grouped-query attention.

Commands:
  python -m lattice.main --config=experiments/baseline_lm.py:smoke  --workdir=runs/baseline_smoke
  python -m lattice.main --config=experiments/baseline_lm.py:quick  --workdir=runs/baseline
  python -m lattice.main --config=experiments/baseline_lm.py:medium --workdir=runs/baseline_medium
  python -m lattice.main --config=experiments/baseline_lm.py:full   --workdir=runs/baseline_full

Pre-registered checks (code: `run`), against a byte-level interpolated Kneser-Ney
4-gram (`lattice.eval.ngram`) fitted on exactly the training bytes the model saw
(the same batches, seed and order; capped at `ngram_batches` in medium/full):
  1. validation bits per byte below the 4-gram's on the same validation batches, by
     more than 0.05 bits/byte (the seed-to-seed spread #20 measured at these sizes,
     0.02-0.034 nats = 0.03-0.05 bits; the 4-gram is deterministic, so one model
     seed is judged against a fixed number with that margin instead of 3 seeds);
  2. the model's samples use real words more often than the 4-gram's: the known-word
     rate (`lattice.eval.words`: share of whole identifier-like words of >= 6
     characters that occur in the training text) of the model's samples minus the
     4-gram's samples, from the same prompts with the same temperature, top-k and
     byte length, has a 95% bootstrap CI above 0.
The earlier parse-rate check is gone: at ~2.7 bits/byte random bytes drawn at the
corpus's byte frequencies parsed as often as the model's samples (10.7% vs 10.5%).

Quick: 128-wide, 4 layers (0.90M params), 4,400 steps of 32 x 128 bytes (18.0M
bytes, 20.0 tokens/param, 0.57 epoch of the corpus; warmup 200 steps, cosine decay
over all steps, evaluations every 1,100); samples of 96 new bytes after a 32-byte
prompt, inside the 128-byte window the model trains on (the redesign of 2026-12-03,
at the end of this docstring; 5,400 steps and 224-byte samples before it). One seed, on purpose: the 4-gram is
deterministic, the margin covers the seed spread, and a run costs ~1,011 s, so 3
seeds do not fit the 1,200 s budget (#20); 3 seeds of a third as many steps would
end far above the 4-gram (the measured run below was at 2.86 bits/byte after 1,100
steps).

Why this design (from the measured 2,200-step run below, not tuned by search):
  - Its validation bits/byte fell 3.03 -> 2.86 -> 2.55 -> 2.38 at steps 550 / 1,100
    / 1,650 / 2,200: still falling fast when the budget ended, so the budget's
    remaining ~300 s go to steps (2,200 -> 2,700, same model and schedule). The
    4-gram gains less from the extra bytes: 2.47 on 2.46M bytes, 2.408 on 9.0M.
  - Not seq_len: that run's per-position loss on 256-byte validation windows
    (measured here from its checkpoint) is 2.42 bits/byte at positions 16-32, 2.36
    at 32-64, 2.34 at 64-96 and 2.39 at 96-128, so at this size the model barely
    uses context past ~32 bytes and longer windows would buy little.
  - The sample measure: 512 samples of 224 new bytes instead of 64 of 128 (~14x
    the words), because the old CI was 0.22 wide around a +0.054 difference; at
    the same difference the new CI should be ~0.06 wide (an estimate: the
    per-sample rates are assumed independent).
Measured quick of this design (2,700 steps, 11.1M bytes; idle 2-core CPU, clone of
13bc790, load average 1.55 at start and 1.71 at end; 14 min 42 s wall, 845.6 s of
arm time): the estimate (~2.33) did not hold. Val bits/byte 3.30 / 2.65 / 2.47 /
2.415 at steps 675 / 1,350 / 2,025 / 2,700, against the 4-gram's 2.412 (needs <
2.362): fails, and sits ~0.04 above the previous design's 2.378 at 2,200 steps. The
two runs differ in CPU numerics (13bc790's einsum attention and 2-D projection
backward) as well as steps, so the difference is of the size of seed noise
(0.02-0.034 nats, #20) and not an effect of the extra steps. The longer samples
hurt the sample check: known-word rate 0.233 against the 4-gram's 0.472, model -
4-gram -0.239, CI [-0.266, -0.210] over 511 and 492 samples: fails in the wrong
direction. The model's greedy and T = 0.7 samples drift into runs of spaces and
fused word fragments after ~100 bytes, where the 4-gram keeps emitting short real
words. (Checked: cached decoding of this checkpoint equals the full forward's
argmax for 150 greedy tokens on 4 prompts, so the drift is the model's, not the
decoder's.) NOT reproduced (0/2). At 0.9M parameters and ~12 bytes per parameter,
this model ties a byte 4-gram on bits/byte; the claim needs the medium scale.

Measured quick of the previous design (2,200 steps, 9.0M bytes, 10.0 tokens/param;
idle 2-core CPU, clone of 2b95543, load average 1.0-1.9; 14 min 55 s wall, 882.8 s
of arm time): the 4-gram fitted on its 9.01M training bytes scores 2.408 bits/byte
on its 65,536 validation bytes, the model 2.378 (needs < 2.358): fails; 4-gram
samples (T = 0.7, top-k 20) have a known-word rate of 0.41 against 0.65 for
held-out real code (64 windows each); known-word rate 0.537 vs 0.483, model -
4-gram +0.054, CI [-0.052, +0.168]: fails. NOT reproduced (0/2). The old 1.8M-param
quick saw 1.3 tokens/param and ended at 2.73 bits/byte. At medium (51M params, 20
tokens/param on FineWeb-Edu) the model is expected far below any byte 4-gram.

Medium and full (a real corpus streamed from the hub; nothing here ran at that
scale; numbers from `lattice plan --chips h100x1`, not run):
  medium: 512-wide, 8 layers, GPT-2 tokenizer, FineWeb-Edu sample-10BT, 1,024
    context, 64-sequence batches: 51.5M params, 1.03B tokens, 20.0 tokens/param,
    0.10 epoch, 370 PFLOPs, 0.26 H100-hours at 40% MFU.
  full: GPT-3 Small (Brown et al. 2020, arXiv 2005.14165, Table 2.1: 125M params,
    12 layers, d_model 768, 12 heads, 2,048 context, 0.5M-token batches, lr 6e-4)
    in the LLaMA architecture, trained Chinchilla-optimally at 20 tokens/param
    (Hoffmann et al. 2022, arXiv 2203.15556) on FineWeb-Edu with the GPT-2
    tokenizer (16 microbatches): 123.6M params, 2.47B tokens, 20.0 tokens/param,
    0.25 epoch, 2.39 EFLOPs, 1.68 H100-hours at 40% MFU. LLaMA's smallest published
    model (7B on 1T tokens, its Table 2) is far beyond one accelerator, so the
    paper-sized baseline is the standard 125M-class small LM instead.

Pre-registered seed count (2026-11-30, chosen before the one-commit rerun from the
power table of scripts/seed_power.py; docs/REPRODUCE_PLAN.md): 1 seed. Neither check
is a paired t over seeds (the model against a fixed 4-gram with a margin; a
bootstrap over samples), and one seed costs ~846 s of arm time (13bc790, load
1.55-1.71), so 3 seeds (~2,540 s) do not fit the 1,200 s bound; they would need a
run of <= ~370 s (under half the steps; a third of them ends far above the 4-gram,
above).

One-commit rerun (2026-12-01, clean d4585f7, `bash scripts/reproduce_all.sh`, the
otherwise idle 2-core CPU, load average 1.08 at start and 1.70 at end): summed arm
time 520 s (the #20 bound is 1,200 s), 542 s of wall time; 0/2 checks passed, NOT
reproduced (failed: val bits/byte below a byte 4-gram Kneser-Ney model by > 0.05;
samples use known words more often than the 4-gram's samples). The committed
results/baseline_lm/ is this run.

Pre-registered steps for the next rerun (2026-12-01, before it runs;
docs/REPRODUCE_PLAN.md, "The plan for the next rerun"): 5,400 steps (warmup 200,
evaluations every 1,350), still 1 seed (seed 0), no check, margin or metric changed.
The rerun trained 2,700 steps in 520 s of arm time (0.193 s a step, evaluations
included), not the ~846-1,080 s assumed above, so the steps are sized to that time:
5,400 project to ~1,040 s, 13% below the 1,200 s bound. The seed-count rule does not
apply (no paired-t check). Chosen before the trial below; not changed after it.

Exploratory trial of this design (not a result; seed 1, which the registered run
does not use; `--config.seeds=[1]`, commit e8e876c, pinned to one CPU core shared
with other work, load average 1.23 at start, 1.69 at end, ~4 at peaks; 2,966 s of
arm time there, so its time says nothing about the idle 2-core run): val bits/byte
2.660 / 2.563 / 2.142 / 2.029 at steps 1,350 / 2,700 / 4,050 / 5,400, against the
4-gram fitted on the same 22.1M training bytes at 2.167 (needs < 2.117): passes by
0.138. The 4-gram falls with the bytes it sees, and not smoothly (measured here on
the same 65,536 validation bytes): seed 1's first 5.5M / 11.1M / 16.6M / 22.1M
bytes give 2.427 / 2.359 / 2.152 / 2.167, and seed 0's (the registered order) 11.1M
/ 22.1M give 2.412 / 2.174, so the registered run needs < ~2.124. Both the model and
the 4-gram drop between 11M and 17M bytes. That fits the small validation set's
documents having close relatives in that part of the stream (not checked). Known-word rate (the same
measurement at the kept checkpoints, against the same 22.1M-byte 4-gram): model
0.320 at step 4,050, 0.397 at 5,400, against the 4-gram's 0.469 / 0.461. Model -
4-gram at 5,400 is -0.064, 95% CI [-0.093, -0.036] over 512 and 493 samples: fails.
The 2,700-step rerun had -0.239, at 0.235 / 0.233 at steps 2,025 / 2,700 (seed 0).
The samples still open with long runs of spaces. So the bits/byte check is likely
to pass at 5,400 steps, and the sample check is likely to fail. It is not hopeless:
the model's rate rose 0.08 in the last 1,350 steps. But the trial's CI is 0.036
short of 0, and the budget allows no more steps.

Next rerun, part A (2026-12-02, clean cfa7268, `bash scripts/reproduce_all.sh
baseline_lm bitnet_b158 composition deepseek_moe mixture_of_agents model_collapse
moe_loss_free_balance`, the otherwise idle 2-core CPU, load average 0.69 at start and
1.67 at end): summed arm time 1510 s (**over** the #20 bound of 1,200 s), 1553 s of wall
time; 1/2 checks passed, NOT reproduced (failed: samples use known words more often than
the 4-gram's samples). The committed results/baseline_lm/ is this run
(docs/REPRODUCE_PLAN.md, "The next rerun, part A").

Redesign (registered 2026-12-03, before the next rerun; docs/REPRODUCE_PLAN.md,
"baseline_lm: the redesign"). Two flaws of the design above, neither a change of
metric, margin or seed (seed 0, both checks as registered):
  - The samples left the window the model trains on. The model trains on 128-byte
    windows (RoPE positions 0-127), but each sample was a 32-byte prompt plus 224
    new bytes, so the last 128 of them were written at positions 128-255, which the
    model never saw (its KV cache, `model.max_len`, is 2 x seq_len). The samples
    above "drift into runs of spaces and fused word fragments after ~100 bytes",
    i.e. from about position 128. The 4-gram has no positions, so the comparison
    was not like for like. Now 1,024 samples of 96 new bytes (32 + 96 = 128), and
    `run` refuses, before training, a config whose samples would leave the window.
  - The 1,200 s bound: 5,400 steps took 1,510 s of arm time at cfa7268 (0.28 s a
    step, AMD EPYC family 26), over the bound. `lattice.hostmem.tune_malloc` (since
    cfa7268) made this model's step 1.23x faster on the Xeon kind (0.267 -> 0.218 s),
    which would still leave ~1,230 s on the EPYC. Now 4,400 steps (18.0M bytes, 20.0
    bytes a parameter: the Chinchilla rule of the scale modes), warmup 200,
    evaluations every 1,100: ~960 s at 0.218 s a step, ~1,000 s at 0.28 / 1.23.
    The 4-gram is refitted on those 18.0M bytes.

Exploratory trial of the redesign (not a result; seed 1, which the registered run does
not use; `--config.seeds=[1]`, clean clone of 543efb8, alone on the idle 2-core Xeon,
load average 0.15 at start and 1.53 at end): 1,011 s of arm time, 17 min 28 s for the
command. Val bits/byte 2.921 / 2.497 / 2.046 / 2.060 at steps 1,100 / 2,200 / 3,300 /
4,400 against the 4-gram's 2.159 on the same 18.0M bytes (needs < 2.109): passes by
0.049. Known-word rate 0.671 against 0.473, +0.198, 95% CI [+0.168, +0.228] over 992
and 825 samples: passes (seed 1's 5,400-step trial with 224-byte samples: -0.064).
The window, measured on this checkpoint with 512 samples of 224 new bytes read in two
parts: bytes 0-96 model 0.684 vs 4-gram 0.455 (CI [+0.188, +0.269]), bytes 96-224 model
0.185 vs 0.472 (CI [-0.321, -0.250]); the 4-gram's rate does not depend on position,
the model's collapses past its training window. Reproduced on this seed; the
bits/byte check is the one at risk: the model is 0.099 below the 4-gram, so it
clears the 0.05 margin by 0.049 (seed 1 at 5,400 steps cleared it by 0.088). The
bound is the other risk: ~1,000 s on the EPYC assumes tune_malloc's 1.23x (measured
on the Xeon) carries over; without it 4,400 x 0.28 s is ~1,230 s.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from lattice import config as config_lib, experiment, sharding
from lattice.data import pipeline, tokenizer as tokenizer_lib
from lattice.decode import sampling
from lattice.eval import ngram, words
from lattice.run import scale

NAME = 'baseline_lm'
PAPER = {'title': 'LLaMA: Open and Efficient Foundation Language Models',
         'arxiv': '2302.13971'}
CLAIM = ('the shared model, data pipeline and train loop learn more than short-range '
         'byte statistics: validation bits per byte below a byte 4-gram Kneser-Ney '
         'model fitted on the same training bytes, and samples that use real words more '
         'often than that 4-gram\'s samples.')
NGRAM_ORDER = 4
MARGIN_BPB = 0.05
# 1,024 samples of 96 new bytes: prompt 32 + 96 = quick's seq_len, so every sampled
# byte sits at a position the model trained on (RoPE positions past the training
# window are out of distribution; the redesign of 2026-12-03 in the docstring). The
# 98K sampled bytes are ~0.86x the 512 x 224 before it, whose known-word CI was ~0.06
# wide.
SAMPLING = dict(samples=1024, prompt_len=32, new_tokens=96, temperature=0.7, top_k=20)


def _config(d_model, n_layers, n_heads, seq_len, batch, steps, lr, warmup, eval_every):
  c = experiment.lm_config(d_model, n_layers, n_heads, seq_len, batch, steps, lr,
                           warmup=warmup, eval_every=eval_every, max_len=2 * seq_len,
                           log_points=20, checkpoints=4)
  c.eval = dict(SAMPLING)
  c.ngram_batches = steps
  return c


def _scale(**kw):
  c = scale.scale_config(corpus='fineweb-edu', tokenizer='gpt2', **kw)
  c.eval = dict(SAMPLING, new_tokens=64)
  # The n-gram is fitted in Python: on the first 64 training batches (~2-9M tokens).
  c.ngram_batches = 64
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = experiment.pick_mode(arg, {
      'smoke': lambda: _config(d_model=32, n_layers=1, n_heads=2, seq_len=32, batch=8,
                               steps=12, lr=3e-3, warmup=2, eval_every=0),
      'quick': lambda: _config(d_model=128, n_layers=4, n_heads=4, seq_len=128,
                               batch=32, steps=4400, lr=3e-3, warmup=200,
                               eval_every=1100),
      'medium': lambda: _scale(d_model=512, n_layers=8, n_heads=8, seq_len=1024,
                               batch=64, tokens=1_030_000_000, lr=1e-3),
      # GPT-3 Small's shape and schedule (arXiv 2005.14165 Table 2.1), 20 tokens/param.
      'full': lambda: _scale(d_model=768, n_layers=12, n_heads=12, seq_len=2048,
                             batch=256, tokens=2_470_000_000, lr=6e-4),
  })
  if c.mode == 'full':  # 256 x 2048 tokens a step: 16 microbatches fit one H100
    c.train.microbatches = 16
  if c.mode == 'smoke':
    c.eval = dict(SAMPLING, samples=4, prompt_len=8, new_tokens=24)
  return c


def _check_window(ev, seq_len: int) -> None:
  """Raises ConfigError when a sample (prompt + new bytes) would not fit in the
  `seq_len` window the model trains on (RoPE positions past it are unseen)."""
  if ev['prompt_len'] + ev['new_tokens'] > seq_len:
    raise config_lib.ConfigError(
        f'eval: prompt_len + new_tokens ({ev["prompt_len"]} + {ev["new_tokens"]}) '
        f'exceed data.seq_len ({seq_len}); samples must stay inside the window the '
        'model trains on')


def _texts(batches, tok) -> list[bytes]:
  """Each row's weighted target bytes (what the loss and bits/byte are taken on)."""
  return [tok.decode_bytes(r[w > 0]) for b in batches
          for r, w in zip(b['targets'], b['weights'])]


def fit_ngram(cfg, tok, n_batches: int) -> tuple[ngram.ByteKneserNey, list[bytes]]:
  """The 4-gram fitted on the first `n_batches` training batches of `cfg`'s run
  (the same seed, so the same bytes in the same order as the model saw)."""
  it = pipeline.make_train_iterator(cfg.data, tok, seed=cfg.train.seed)
  train = _texts((next(it) for _ in range(n_batches)), tok)
  return ngram.ByteKneserNey(NGRAM_ORDER).fit(train), train


def sample_both(cfg, out, ev, model_ngram, key) -> tuple[list[str], list[str]]:
  """The model's and the n-gram's continuations of the same validation prompts,
  with the same temperature and top-k; the n-gram writes as many bytes as the
  model did for each prompt."""
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  batches = pipeline.make_eval_batches(cfg.data, tok, -(-ev['samples'] // cfg.data.batch_size) + 1)
  prompts = np.concatenate([b['targets'] for b in batches])[:ev['samples'], :ev['prompt_len']]
  # Gathered to the host: sampling a handful of rows needs no mesh.
  new = sampling.generate(
      sharding.to_host(out.state.variables), prompts, key, model_cfg=cfg.model,
      max_new_tokens=ev['new_tokens'], eos_id=tok.eos_id, pad_id=tok.pad_id,
      sampling=sampling.SamplingConfig(ev['temperature'], ev['top_k']))
  model = [tok.decode_bytes(r) for r in np.asarray(new)]
  rng = np.random.default_rng(cfg.train.seed)
  gram = [model_ngram.sample(tok.decode_bytes(p), len(m), rng,
                             temperature=ev['temperature'], top_k=ev['top_k'])
          for p, m in zip(prompts, model)]
  text = lambda bs: [b.decode('utf-8', 'replace') for b in bs]
  return text(model), text(gram)


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  ev = dict(config.eval)
  _check_window(ev, config.data.seq_len)  # before training; after any --config override
  got = {}

  def measure(cfg, out):
    tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
    gram, train = fit_ngram(cfg, tok, config.ngram_batches)
    val = _texts(pipeline.make_eval_batches(cfg.data, tok, cfg.data.eval_batches), tok)
    model_s, gram_s = sample_both(cfg, out, ev, gram, jax.random.key(cfg.train.seed))
    vocab = words.vocabulary(t.decode('utf-8', 'replace') for t in train)
    rates = {k: words.known_rates(s, vocab) for k, s in (('model', model_s),
                                                         ('ngram', gram_s))}
    got[cfg.train.seed] = dict(samples=model_s, ngram_samples=gram_s, rates=rates,
                               train_bytes=sum(map(len, train)))
    mean = lambda r: float(np.mean(r[~np.isnan(r)])) if (~np.isnan(r)).any() else np.nan
    return {'ngram_bpb': gram.bits_per_byte(val), 'known_words': mean(rates['model']),
            'ngram_known_words': mean(rates['ngram'])}

  arms, _ = experiment.run_arms(config, workdir, measure=measure)
  m = {k: v['mean'] for k, v in arms[0].metrics.items()}
  seed = arms[0].seeds[0] if arms[0].seeds else 0
  g = got[seed]
  bpb, gbpb = m['val_bpb'], m['ngram_bpb']
  try:
    ci = words.difference_ci(g['rates']['model'], g['rates']['ngram'])
    ci_ok, ci_text = ci['lo'] > 0, (
        f'{ci["diff"]:+.3f}, 95% bootstrap CI [{ci["lo"]:+.3f}, {ci["hi"]:+.3f}] over '
        f'{ci["n_a"]} model and {ci["n_b"]} 4-gram samples with long words')
  except ValueError as e:  # too few samples with a whole long word (smoke)
    ci_ok, ci_text = False, f'no CI: {e}'
  checks = [
      experiment.check(
          f'val bits/byte below a byte {NGRAM_ORDER}-gram Kneser-Ney model by > '
          f'{MARGIN_BPB}', bpb < gbpb - MARGIN_BPB,
          f'val_bpb={bpb:.3f} vs {NGRAM_ORDER}-gram {gbpb:.3f} bits/byte on the same '
          f'validation batches (fitted on the {g["train_bytes"]:,} training bytes the '
          f'model saw first); needs < {gbpb - MARGIN_BPB:.3f}'),
      experiment.check(
          'samples use known words more often than the 4-gram\'s samples', ci_ok,
          f'known-word rate model {m["known_words"]:.3f} vs 4-gram '
          f'{m["ngram_known_words"]:.3f} (T={ev["temperature"]}, top-k {ev["top_k"]}); '
          f'model - 4-gram {ci_text}; needs the CI above 0'),
  ]
  # nats per token ~ nats per byte only for byte tokens: the reference line is drawn
  # in bits/byte x ln 2 there.
  plots = [experiment.plot_training(
      f'{workdir}/loss.png', {a.name: f'{workdir}/{a.name}/seed_{seed}' for a in arms},
      references={f'{NGRAM_ORDER}-gram KN (bytes)': gbpb * np.log(2)},
      title=f'baseline LM on {config.data.source}')]
  show = lambda xs: '\n---\n'.join(xs[:3])
  return experiment.finish(
      __name__, config, workdir, arms=arms, checks=checks,
      headline={'paper': f'below a byte {NGRAM_ORDER}-gram ({gbpb:.3f} bits/byte); '
                         'more real words than its samples',
                'ours': f'{bpb:.3f} bits/byte; known words {m["known_words"]:.2f} vs '
                        f'{m["ngram_known_words"]:.2f}'},
      plots=plots,
      notes=f'Model samples (seed {seed}):\n\n```\n{show(g["samples"])}\n```\n\n'
            f'4-gram samples, same prompts:\n\n```\n{show(g["ngram_samples"])}\n```')
