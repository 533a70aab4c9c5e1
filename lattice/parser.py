r"""The one parser of the `lattice` command line (and of `python -m lattice.main`).

  lattice run --config=experiments/baseline_lm.py:quick --workdir=runs/baseline \
      [--config.model.d_model=256 ...]
  lattice config experiments/baseline_lm.py:quick [--config.KEY=VALUE ...]
  lattice sweep experiments/baseline_lm.py:smoke --workdir=runs/sweep \
      --grid 'model.linear.kind=float,bitnet' --grid 'model.ffn.kind=dense,moe' --seeds 3
  lattice report runs/ [--out runs/REPRODUCTIONS.md]
  lattice bench train_throughput [--json out.json]
  lattice serve --workdir=runs/x [--model=ARM/seed_K] [--slots 8] [--warmup] [--port 8000]
  lattice sample --workdir=runs/baseline --prompt 'def main(' [--max-tokens 64]
      [--temperature 0.8] [--top-p 1] [--top-k 0] [--seed 0] [--n 1] [--model=ARM/seed_K]
  lattice convert hf --from HF_DIR --out runs/imported [--max-len 4096]
  lattice convert export --run runs/x --out HF_DIR
  lattice tokenizer train --config=FILE.py:MODE --vocab-size 4096 --out runs/tok/spm.model
  lattice plan --config=FILE.py:MODE --chips v5e-64 [--config.KEY=VALUE ...]
  lattice lm-eval --model_args workdir=RUN --tasks TASKS   (lm_eval's own flags)
  lattice eval --workdir=runs/x [--step S] [--eval-batches N]

`python -m lattice.main ARGS` is `lattice run ARGS`. A user error ends in one line,
`lattice: error: ...`, exit 2; a fault of the run (a checkpoint write, a non-finite
loss) in one line, exit 1.
"""

from __future__ import annotations

import argparse
import pathlib
import pkgutil
import re
import sys
from typing import Sequence

USAGE = __doc__
# Commands that parse their own flags (serve, convert, ...): passed through untouched.
PASSTHROUGH = {
    'serve': 'serve a trained run over an OpenAI-compatible API',
    'sample': 'print text sampled from a trained run (prompt + completion)',
    'convert': 'import a Hugging Face checkpoint as a run, or export one',
    'tokenizer': 'train a subword tokenizer on an experiment\'s training data',
    'plan': 'parameters, tokens, FLOPs, chip-hours and memory of a mode, untrained',
    'lm-eval': 'lm-evaluation-harness over a trained run (lattice model registered)',
    'eval': "val_loss, val_ppl and val_bpb of a trained run on its eval sets",
}
COMMANDS = ('run', 'config', 'sweep', 'report', 'bench', *PASSTHROUGH)
_OVERRIDE = re.compile(r'^--?(no)?config\.([^=]+)(?:=(.*))?$', re.S)


def fail(message: str, code: int = 2) -> None:
  """Prints `lattice: error: message` on stderr and exits with `code`."""
  print(f'lattice: error: {message}', file=sys.stderr)
  sys.exit(code)


class _Parser(argparse.ArgumentParser):
  """argparse whose errors are one `lattice: error:` line, exit 2."""

  def error(self, message: str) -> None:  # pylint: disable=signature-differs
    fail(f'{self.prog.removeprefix("lattice ")}: {message}')


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
  """(other arguments, [(path, text)] of each --config.PATH=TEXT); a bare
  --config.PATH is true and --noconfig.PATH false."""
  rest, overrides = [], []
  for arg in argv:
    m = _OVERRIDE.match(arg)
    if m:
      no, path, text = m.groups()
      overrides.append((path, 'false' if no else text))
    else:
      rest.append(arg)
  return rest, overrides


def _add_config(p: argparse.ArgumentParser, flag: bool) -> None:
  help_ = ('experiment file and mode, e.g. experiments/baseline_lm.py:quick; '
           'override any key with --config.KEY=VALUE (list them: lattice config '
           'FILE.py:MODE)')
  if flag:
    p.add_argument('--config', metavar='FILE.py:MODE', help=help_)
  else:
    p.add_argument('config', metavar='FILE.py:MODE', help=help_)


def parser() -> argparse.ArgumentParser:
  """The one parser: a subcommand each for run, config, sweep, report, bench, serve."""
  top = _Parser(prog='lattice', description=USAGE.split('\n\n')[0],
                epilog=USAGE.split('\n\n', 1)[1],
                formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = top.add_subparsers(dest='command', metavar='COMMAND', parser_class=_Parser)

  run = sub.add_parser('run', help='train and evaluate an experiment, write its '
                       'result', description='Run an experiment: FILE.py:MODE into '
                       'WORKDIR (a rerun resumes). Config keys: --config.KEY=VALUE.')
  _add_config(run, flag=True)
  run.add_argument('--workdir', help='where checkpoints, metrics and result.json go '
                   '(a rerun resumes from it)')
  run.add_argument('--coordinator_address', help='host:port of process 0 for a '
                   'multi-process run (jax.distributed); else $JAX_COORDINATOR_ADDRESS, '
                   'else auto-detected on Cloud TPU slices, SLURM and Open MPI')
  run.add_argument('--num_processes', type=int, help='jax.distributed processes; '
                   'else $JAX_NUM_PROCESSES')
  run.add_argument('--process_id', type=int, help='this process index; else '
                   '$JAX_PROCESS_ID')
  run.add_argument('--distributed', action=argparse.BooleanOptionalAction,
                   default=None, help='force or forbid jax.distributed (default: only '
                   'when a coordinator or a multi-process cluster is found)')

  config = sub.add_parser('config', help='print every config key of FILE.py:MODE '
                          'with its value and meaning', description='Print every key of an '
                          "experiment's config (after --config.KEY=VALUE overrides) "
                          'with its value, one per line.')
  _add_config(config, flag=False)

  sweep = sub.add_parser('sweep', help='every combination of some config values, '
                         'over seeds, in one ablation table',
                         description='Train every combination of the grids x seeds '
                         '(resumable), then write WORKDIR/ablation.md and sweep.json.')
  _add_config(sweep, flag=False)
  sweep.add_argument('--workdir', required=True, type=pathlib.Path)
  sweep.add_argument('--grid', action='append', default=[], metavar='KEY=V1,V2',
                     help='a config key and its values; repeat for more factors')
  sweep.add_argument('--seeds', type=int, default=1, help='seeds 0..N-1 per arm')
  sweep.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                     help='a base-config override applied to every arm')
  sweep.add_argument('--flops-budget', type=float, default=0.0,
                     help='train every arm for this many FLOPs (sets its steps)')
  sweep.add_argument('--vmap-seeds', choices=('auto', 'on', 'off'), default='auto',
                     help="train an arm's seeds together in one vmapped step (auto: "
                     'small models on an accelerator; on CPU it measured slower)')
  sweep.add_argument('--metric', default='val_loss')

  report = sub.add_parser('report', help='gather every result.json under a folder '
                          'into one markdown file', description='Gather every '
                          "result.json under RUNS_DIR into one table: paper, claim, "
                          "paper's number, ours, verdict.")
  report.add_argument('runs_dir', metavar='RUNS_DIR', type=pathlib.Path)
  report.add_argument('--out', type=pathlib.Path, default=None,
                      help='markdown file to write (default: RUNS_DIR/REPRODUCTIONS.md; '
                      'the committed ./REPRODUCTIONS.md changes only when named here)')

  bench = sub.add_parser('bench', help='run a benchmark (benchmarks/NAME.py)',
                         description='Run benchmarks/NAME.py with its own flags '
                         f'(NAME: {", ".join(benchmarks()) or "none found"}).')
  bench.add_argument('name', metavar='NAME')
  bench.add_argument('args', nargs=argparse.REMAINDER, help="the benchmark's flags")

  for name, help_ in PASSTHROUGH.items():
    passthrough = sub.add_parser(name, add_help=False, help=f'{help_} (lattice {name} --help)')
    passthrough.add_argument('args', nargs=argparse.REMAINDER)
  return top


def benchmarks() -> list[str]:
  """The benchmark modules under benchmarks/ (empty when not importable)."""
  try:
    import benchmarks as package  # pylint: disable=g-import-not-at-top
  except ImportError:
    return []
  return sorted(m.name for m in pkgutil.iter_modules(package.__path__))
