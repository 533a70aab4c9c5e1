r"""Data pipeline throughput next to the train step's: tokenization never bounds training.

  python -m benchmarks.data_throughput [--json out.json] [--workers 0,2] [--batches 40]

Measures, in one process on the same machine, tokens/s of the training pipeline
(`lattice.data.pipeline.make_train_iterator`: read, tokenize, pack, batch) on the
embedded stdlib corpus for the byte tokenizer and a SentencePiece BPE tokenizer
trained here (4096 pieces), with 0 (in-process) and N grain worker processes, and
tokens/s of the jitted train step of a d_model=512, 4-layer model (benchmarks.
train_throughput) at the same batch shape. The key figure, `min_ratio`, is the
slowest pipeline's tokens/s over the step's: the issue asks for >= 5 on CPU.
`--json PATH` writes {"rows": [{"tokenizer", "workers", "tokens_per_s"}], "step_tokens_per_s",
"min_ratio", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax

from benchmarks import train_throughput
from lattice import config as config_lib
from lattice.data import pipeline
from lattice.data import tokenizer as tokenizer_lib
from lattice.data import tokenizer_train


def pipeline_tokens_per_s(data_cfg: config_lib.DataConfig, tok, batches: int) -> float:
  """Tokens/s of `batches` training batches after the first (which pays start-up)."""
  it = pipeline.make_train_iterator(data_cfg, tok, seed=0, process_index=0, process_count=1)
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  seconds = time.perf_counter() - t0
  return batches * batch['inputs'].size / seconds


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--seq_len', type=int, default=256)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--batches', type=int, default=40)
  parser.add_argument('--workers', default='0,2')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--json', default=None)
  args = parser.parse_args(argv)
  base = config_lib.build({'data': {'seq_len': args.seq_len, 'batch_size': args.batch}}).data
  spm_path = os.path.join(tempfile.mkdtemp(prefix='lattice-bench-'), 'spm.model')
  spm, _ = tokenizer_train.train(base, 4096, spm_path, 'spm-bpe', max_bytes=20_000_000)
  rows = []
  for name, tok in (('byte', tokenizer_lib.ByteTokenizer()), ('sentencepiece-4096', spm)):
    for workers in (int(w) for w in args.workers.split(',')):
      cfg = config_lib.DataConfig(**{**base.__dict__, 'num_workers': workers})
      rows.append({'tokenizer': name, 'workers': workers,
                   'tokens_per_s': pipeline_tokens_per_s(cfg, tok, args.batches)})
  step = train_throughput.time_train_step(
      train_throughput.model_config(512, args.seq_len, args.batch, 'float32'),
      args.steps, jax.devices()[:1])
  ratio = min(r['tokens_per_s'] for r in rows) / step['tokens_per_s']
  print(f'train step (d_model 512, 4 layers, {args.batch}x{args.seq_len}): '
        f'{step["tokens_per_s"]:,.0f} tokens/s')
  print(f'{"tokenizer":>20} {"workers":>8} {"tokens/s":>12} {"x step":>8}')
  for r in rows:
    print(f'{r["tokenizer"]:>20} {r["workers"]:>8} {r["tokens_per_s"]:>12,.0f} '
          f'{r["tokens_per_s"] / step["tokens_per_s"]:>8.1f}')
  print(f'min_ratio (slowest pipeline / step): {ratio:.1f}')
  out = {'rows': rows, 'step_tokens_per_s': step['tokens_per_s'], 'min_ratio': ratio,
         'seq_len': args.seq_len, 'batch': args.batch, 'backend': jax.default_backend()}
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=1)
  return out


if __name__ == '__main__':
  main()
