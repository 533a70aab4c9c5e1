"""`lattice tokenizer train`: a subword tokenizer for an experiment's training data.

  lattice tokenizer train --config=experiments/baseline_lm.py:quick --vocab-size 4096 \\
      --out runs/tok/spm.model [--kind spm-bpe|spm-unigram|hf-bpe] [--max-bytes N]

Reads the experiment config's `data` section (its source, paths and field), trains
on up to `--max-bytes` of the training split (the validation split is never seen),
writes the tokenizer and prints the `--config.data.tokenizer=...` override that
trains on it.
"""

from __future__ import annotations

import argparse
import sys
import time

from lattice import config as config_lib
from lattice.run import config_file
from lattice.data import tokenizer_train


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='lattice tokenizer train', description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', required=True, help='FILE.py:MODE whose data section is read')
  p.add_argument('--vocab-size', type=int, required=True,
                 help='vocabulary size, specials and byte pieces included')
  p.add_argument('--out', required=True,
                 help='output: a .model file (spm-*) or a tokenizer.json / folder (hf-bpe)')
  p.add_argument('--kind', default='spm-bpe', choices=tokenizer_train.KINDS)
  p.add_argument('--max-bytes', type=int, default=200_000_000,
                 help='read at most this many bytes of training text (default 200 MB)')
  return p


def main(argv: list[str]) -> None:
  """Entry point of `lattice tokenizer`; exits 2 with one line on a user error."""
  if not argv or argv[0] != 'train':
    print('lattice: error: usage: lattice tokenizer train --config=FILE.py:MODE '
          '--vocab-size N --out PATH', file=sys.stderr)
    sys.exit(0 if argv and argv[0] in ('-h', '--help') else 2)
  args = _parser().parse_args(argv[1:])
  try:
    _, config = config_file.load(args.config)
    cfg = config_lib.build(config)
    start = time.perf_counter()
    tok, spec = tokenizer_train.train(cfg.data, args.vocab_size, args.out, args.kind,
                                      args.max_bytes)
  except (config_lib.ConfigError, ValueError) as e:
    print(f'lattice: error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'trained {args.kind} tokenizer: vocab {tok.vocab_size}, '
        f'{time.perf_counter() - start:.1f} s -> {args.out}')
  print(f'use it with: --config.data.tokenizer={spec}')
