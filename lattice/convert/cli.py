"""`lattice convert hf --from DIR --out RUN` and `lattice convert export --run RUN --out DIR`.

Errors a user can cause (unsupported architecture, missing tensor, a run that is
not the plain decoder) end in one line naming it, exit code 2.
"""

from __future__ import annotations

import argparse
import ctypes
import sys


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='lattice convert', description=(
      'Import a Hugging Face checkpoint into a lattice run, or export a run to a '
      'Hugging Face directory.'))
  sub = parser.add_subparsers(dest='direction', required=True)
  hf = sub.add_parser('hf', help='HF checkpoint directory -> lattice run')
  hf.add_argument('--from', dest='src', required=True,
                  help='directory with config.json and *.safetensors')
  hf.add_argument('--out', required=True, help='the lattice run directory to write')
  hf.add_argument('--max-len', type=int, default=None,
                  help='context length (default: the checkpoint\'s, at most 4096)')
  hf.add_argument('--param-dtype', choices=('float32', 'bfloat16'), default=None,
                  help='default: bfloat16 if the checkpoint is, else float32')
  hf.add_argument('--overwrite', action='store_true')
  export = sub.add_parser('export', help='lattice run -> HF (Llama-format) directory')
  export.add_argument('--run', required=True, help='the lattice run directory')
  export.add_argument('--out', required=True, help='the HF directory to write')
  export.add_argument('--step', type=int, default=None, help='checkpoint step')
  return parser


def limit_malloc_retention() -> None:
  """glibc only: keep freed tensor buffers from inflating the resident set.

  By default glibc raises its mmap threshold after each large free (so later large
  buffers come from heaps that are not given back) and gives each thread its own
  arena (so a buffer freed by one of Orbax's writer threads is not reused by the
  next); converting tensor by tensor then leaves several tensors' worth of freed
  memory resident. A fixed 1 MiB threshold and two arenas avoid both (mallopt(3):
  M_MMAP_THRESHOLD = -3, M_ARENA_MAX = -8). Elsewhere this does nothing.
  """
  try:
    libc = ctypes.CDLL('libc.so.6')
    libc.mallopt(-3, 1 << 20)
    libc.mallopt(-8, 2)
  except (OSError, AttributeError):
    pass


def main(argv: list[str]) -> None:
  args = _parser().parse_args(argv)
  limit_malloc_retention()
  from lattice import config as config_lib  # pylint: disable=g-import-not-at-top
  from lattice.convert import ConvertError, export_hf, import_hf  # pylint: disable=g-import-not-at-top
  try:
    if args.direction == 'hf':
      cfg = import_hf(args.src, args.out, max_len=args.max_len,
                      param_dtype=args.param_dtype, overwrite=args.overwrite)
      m = cfg.model
      print(f'[lattice] converted {args.src} -> {args.out}: {m.n_layers} layers, '
            f'd_model {m.d_model}, vocab {m.vocab_size}, ffn {m.ffn.kind}, '
            f'max_len {m.max_len}')
    else:
      export_hf(args.run, args.out, step=args.step)
      print(f'[lattice] exported {args.run} -> {args.out}')
  except (ConvertError, config_lib.ConfigError, FileExistsError, FileNotFoundError) as e:
    print(f'lattice: error: {e}', file=sys.stderr)
    sys.exit(2)
