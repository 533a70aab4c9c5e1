"""The `lattice` console script: `lattice run|report|bench|serve ...`.

  lattice run --config=experiments/baseline_lm.py:quick --workdir=runs/baseline
  lattice sweep experiments/baseline_lm.py:smoke --workdir=runs/sweep \
      --grid 'model.linear.kind=float,bitnet' --grid 'model.ffn.kind=dense,moe' --seeds 3
  lattice report runs/ [--out REPRODUCTIONS.md]
  lattice bench train_throughput [--json out.json]
  lattice serve --workdir=runs/x [--model=ARM/seed_K] [--slots 8] [--warmup] [--port 8000]
  lattice convert hf --from HF_DIR --out runs/imported [--max-len 4096]
  lattice convert export --run runs/x --out HF_DIR
"""

from __future__ import annotations

import runpy
import sys

USAGE = __doc__


def main(argv=None) -> None:
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv or argv[0] in ('-h', '--help'):
    print(USAGE)
    sys.exit(0 if argv else 2)
  command, rest = argv[0], argv[1:]
  if command == 'run':
    from lattice import main as main_lib
    main_lib.cli(['lattice run', *rest])
  elif command == 'sweep':
    from lattice import sweep
    sweep.main(rest)
  elif command == 'report':
    from lattice import report
    report.main(rest)
  elif command == 'bench':
    if not rest:
      print('lattice: error: bench needs a benchmark name, e.g. train_throughput',
            file=sys.stderr)
      sys.exit(2)
    sys.argv = [f'benchmarks.{rest[0]}', *rest[1:]]
    try:
      runpy.run_module(f'benchmarks.{rest[0]}', run_name='__main__')
    except ImportError as e:
      print(f'lattice: error: no benchmark {rest[0]!r} ({e})', file=sys.stderr)
      sys.exit(2)
  elif command == 'serve':
    from lattice import config as config_lib
    from lattice import serve
    try:
      serve.main(rest)
    except config_lib.ConfigError as e:
      print(f'lattice: error: {e}', file=sys.stderr)
      sys.exit(2)
  elif command == 'convert':
    from lattice.convert import cli as convert_cli
    convert_cli.main(rest)
  else:
    print(f'lattice: error: unknown command {command!r}; choose run, sweep, '
          'report, bench, serve or convert '
          '(see lattice --help)', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  main()
