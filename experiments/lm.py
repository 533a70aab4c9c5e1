r"""A language model on your own data: train, evaluate, compare with a unigram model.

Paper: none (a generic experiment); the architecture follows "LLaMA: Open and
Efficient Foundation Language Models" (arXiv 2302.13971): RMSNorm, RoPE, SwiGLU,
grouped-query attention.

Commands (the embedded stdlib corpus unless `data.*` names yours):
  lattice run --config=experiments/lm.py:smoke --workdir=runs/lm_smoke
  lattice run --config=experiments/lm.py:quick --workdir=runs/mine \
      --config.data.source=jsonl --config.data.paths=data.jsonl --config.data.field=text
  lattice run --config=experiments/lm.py:full --workdir=runs/mine_full \
      --config.data.source=text --config.data.paths='corpus/*.txt' \
      --config.data.tokenizer=sentencepiece:runs/tok/spm.model
  lattice run --config=experiments/lm.py:medium --workdir=runs/lm_medium
  lattice run --config=experiments/lm.py:full --workdir=runs/lm_full

`medium` and `full` train on FineWeb-Edu (sample-10BT, streamed from the hub) with
the GPT-2 tokenizer, bf16, scanned layers and remat, on one accelerator (point
`data.*` at your own corpus to train on it instead; `model.vocab_size` must then
match your tokenizer). Since `lm` has no paper, they are two compute-optimal
points at 20 tokens per parameter (Hoffmann et al. 2022, "Training Compute-Optimal
Large Language Models", arXiv 2203.15556): medium a 30M-parameter model on 0.6B
tokens, full the Chinchilla-style 1B-token point (a 51M-parameter model). From
`lattice plan --chips h100x1` at 40% MFU, not run:
  medium: 29.9M params, 0.60B tokens, 20.0 tokens/param, 0.06 epoch, 0.09 H100-hours
  full:   51.5M params, 1.03B tokens, 20.0 tokens/param, 0.10 epoch, 0.26 H100-hours

It reports validation loss (nats/token), perplexity and bits per byte, and checks
one thing it can measure on any corpus: that the model's validation bits per byte
are below those of a unigram model (token frequencies, add-one smoothed) fitted on
the training split and scored on the same validation batches. Nothing about the
text's content is checked. Expected: smoke (12 steps) may not beat the unigram;
quick (~8 min on a 2-core CPU) does on the stdlib corpus, as baseline_lm's quick
run measured 2.75 bits/byte against a 4.45 unigram entropy.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from lattice import experiment
from lattice.data import pipeline, tokenizer as tokenizer_lib
from lattice.run import scale

NAME = 'lm'
PAPER = {'title': 'LLaMA: Open and Efficient Foundation Language Models',
         'arxiv': '2302.13971'}
CLAIM = ('the model learns more of your corpus than its token frequencies: validation '
         'bits per byte below those of a unigram model fitted on the training split.')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = experiment.pick_mode(arg, {
      'smoke': lambda: experiment.lm_config(32, 1, 2, 32, 8, 12, 3e-3, warmup=2),
      'quick': lambda: experiment.lm_config(192, 4, 4, 128, 16, 1200, 3e-3, warmup=60,
                                            eval_every=300, log_points=100),
      'medium': lambda: scale.scale_config(
          d_model=384, n_layers=6, n_heads=6, seq_len=1024, batch=64,
          tokens=600_000_000, lr=1.5e-3, corpus='fineweb-edu', tokenizer='gpt2'),
      'full': lambda: scale.scale_config(
          d_model=512, n_layers=8, n_heads=8, seq_len=1024, batch=64,
          tokens=1_030_000_000, lr=1e-3, corpus='fineweb-edu', tokenizer='gpt2'),
  })
  # Training batches the unigram model is counted on.
  c.unigram_batches = {'smoke': 8, 'quick': 256}.get(c.mode, 64)
  return c


def unigram_baseline(data_cfg, tok, *, n_train_batches: int, seed: int
                     ) -> dict[str, float]:
  """Loss of a unigram model on `data_cfg`'s validation batches.

  Token counts (targets with weight > 0) over the first `n_train_batches` training
  batches, add-one (Laplace) smoothed over the tokenizer's V ids, give p(t); scored
  on `data_cfg.eval_batches` validation batches with the eval step's weights and
  byte counts (`lattice.model.loss.summarize_eval`), so the numbers compare with
  val_loss and val_bpb. Returns {'nats_per_token', 'bpb'}.
  """
  lengths = tokenizer_lib.byte_lengths(tok)
  counts = np.ones(len(lengths))
  it = pipeline.make_train_iterator(data_cfg, tok, seed=seed)
  for _ in range(n_train_batches):
    b = next(it)
    counts += np.bincount(b['targets'][b['weights'] > 0], minlength=len(lengths))[
        :len(lengths)]
  logp = np.log(counts / counts.sum())
  nats = tokens = n_bytes = 0.0
  for b in pipeline.make_eval_batches(data_cfg, tok, data_cfg.eval_batches):
    w, t = b['weights'], np.minimum(b['targets'], len(lengths) - 1)
    nats -= float((w * logp[t]).sum())
    tokens += float(w.sum())
    n_bytes += float((w * b['target_bytes']).sum())
  return {'nats_per_token': nats / max(tokens, 1.0),
          'bpb': nats / math.log(2) / max(n_bytes, 1.0)}


def run(config: ml_collections.ConfigDict, workdir: str) -> experiment.Result:
  arms, _ = experiment.run_arms(config, workdir)
  cfg = experiment.arm_config(config, {}, config.seeds[0])
  tok = tokenizer_lib.make_tokenizer(cfg.data.tokenizer)
  uni = unigram_baseline(cfg.data, tok, n_train_batches=config.unigram_batches,
                         seed=cfg.train.seed)
  m = arms[0].metrics
  bpb, loss, ppl = (m[k]['mean'] for k in ('val_bpb', 'val_loss', 'val_ppl'))
  checks = [experiment.check(
      'val bits/byte below a unigram model fitted on the training split',
      bpb < uni['bpb'],
      f'val_bpb={bpb:.3f} vs unigram {uni["bpb"]:.3f} bits/byte on the same '
      f'validation batches ({config.unigram_batches} training batches counted)')]
  plots = [experiment.plot_training(
      f'{workdir}/loss.png',
      {a.name: f'{workdir}/{a.name}/seed_{a.seeds[0] if a.seeds else 0}' for a in arms},
      references={'unigram model': uni['nats_per_token']},
      title=f'{NAME} on {cfg.data.source} data')]
  return experiment.finish(
      __name__, config, workdir, arms=arms, checks=checks,
      headline={'paper': f'below the unigram model ({uni["bpb"]:.3f} bits/byte)',
                'ours': f'{bpb:.3f} bits/byte; val loss {loss:.3f} nats/token, '
                        f'perplexity {ppl:.2f}'},
      plots=plots)
