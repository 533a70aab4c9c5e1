"""`lattice COMMAND ...`: dispatches the commands the one parser (`lattice.parser`)
reads: run, config, sweep, report, bench, serve, sample, convert, tokenizer, plan,
lm-eval, eval.
See `lattice --help`.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from typing import Sequence

from lattice import parser as parser_lib
from lattice.parser import fail


def _config_command(args, overrides) -> None:
  from lattice import config as config_lib  # pylint: disable=g-import-not-at-top
  from lattice.run import config_file  # pylint: disable=g-import-not-at-top
  try:
    _, config = config_file.load(args.config)
    notes = config_file.apply(config, overrides)
    config_lib.build(config)
  except config_lib.ConfigError as e:
    fail(str(e))
  for note in notes:
    print(f'# {note}')
  print(config_file.describe(config))


def _bench(args) -> None:
  if args.name not in parser_lib.benchmarks():
    fail(f'bench: no benchmark {args.name!r}; choose one of '
         f'{", ".join(parser_lib.benchmarks())}')
  sys.argv = [f'benchmarks.{args.name}', *args.args]
  runpy.run_module(f'benchmarks.{args.name}', run_name='__main__')


def _passthrough(command: str, rest: list[str]) -> None:
  """Commands with flags of their own: serve, sample, convert, tokenizer, plan,
  lm-eval, eval."""
  from lattice import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    if command == 'serve':
      from lattice import serve  # pylint: disable=g-import-not-at-top
      serve.main(rest)
    elif command == 'sample':
      from lattice import sample  # pylint: disable=g-import-not-at-top
      sample.main(rest)
    elif command == 'convert':
      from lattice.convert import cli as convert_cli  # pylint: disable=g-import-not-at-top
      convert_cli.main(rest)
    elif command == 'tokenizer':
      from lattice import tokenizer_cli  # pylint: disable=g-import-not-at-top
      tokenizer_cli.main(rest)
    elif command == 'plan':
      from lattice import plan  # pylint: disable=g-import-not-at-top
      plan.main(rest)
    elif command == 'lm-eval':
      from lattice.eval import harness  # pylint: disable=g-import-not-at-top
      harness.main(rest)
    elif command == 'eval':
      from lattice import eval_cli  # pylint: disable=g-import-not-at-top
      eval_cli.main(rest)
  except config_lib.ConfigError as e:
    fail(str(e))


def _sweep(args) -> None:
  """`lattice sweep`: the base config, --set overrides, grids, then run_sweep."""
  from lattice import config as config_lib  # pylint: disable=g-import-not-at-top
  from lattice.run import arms, config_file, sweep  # pylint: disable=g-import-not-at-top
  try:
    if not args.grid:
      raise config_lib.ConfigError('--grid: give at least one KEY=V1,V2')
    if args.seeds < 1:
      raise config_lib.ConfigError(f'--seeds: must be >= 1, got {args.seeds}')
    if args.workdir.exists() and not args.workdir.is_dir():
      raise config_lib.ConfigError(f'--workdir: {args.workdir} is not a folder')
    _, config = config_file.load(args.config)
    config_lib.build(config)  # the base must be valid before --set changes it
    sets = []
    for item in args.set:
      key, eq, text = item.partition('=')
      if not eq or not key.strip():
        raise config_lib.ConfigError(f'--set {item!r}: expected KEY=VALUE')
      sets.append((key.strip(), text.strip()))
    try:
      for note in config_file.apply(config, sets):
        print(f'[lattice] {note}')
    except config_lib.ConfigError as e:
      raise config_lib.ConfigError(f'--set: {e}'.replace('--config.', '')) from None
    if args.flops_budget:
      config.flops_budget = args.flops_budget
    grids = [sweep.parse_grid(g) for g in args.grid]
    for key, _values in grids:
      try:
        config_file.check_key(config, key)
      except config_lib.ConfigError as e:
        raise config_lib.ConfigError(f'--grid: {e}'.replace('--config.', '')) from None
    vmap = {'auto': 'auto', 'on': True, 'off': False}[args.vmap_seeds]
    out = sweep.run_sweep(config, args.workdir, grids, seeds=range(args.seeds),
                          metric=args.metric, vmap_seeds=vmap,
                          title=f'Sweep of {args.config}')
  except config_lib.ConfigError as e:
    fail(f'sweep: {e}')
  except arms.Preempted as e:
    print(f'[lattice] preempted: {e}; rerun the same command to resume')
    sys.exit(arms.PREEMPTED_EXIT)
  print(out['table'])
  print(f'wrote {args.workdir / sweep.TABLE_FILE} and {args.workdir / sweep.SWEEP_FILE}')


def main(argv: Sequence[str] | None = None) -> None:
  """`lattice COMMAND ...`; argv excludes the program name."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if not argv:
    print(parser_lib.USAGE)
    sys.exit(2)
  command = argv[0]
  if not command.startswith('-') and command not in parser_lib.COMMANDS:
    fail(f'unknown command {command!r}; choose {", ".join(parser_lib.COMMANDS)} '
         '(see lattice --help)')
  if command in parser_lib.PASSTHROUGH:  # their own flags, passed through untouched
    _passthrough(command, argv[1:])
    return
  if command == 'bench' and len(argv) > 2:  # the benchmark's flags, untouched
    args = argparse.Namespace(name=argv[1], args=argv[2:])
    _bench(args)
    return
  rest, overrides = parser_lib.split_overrides(argv)
  args = parser_lib.parser().parse_args(rest)
  if args.command is None:
    fail('give a command: run, config, sweep, report, bench or serve (lattice --help)')
  if overrides and args.command not in ('run', 'config'):
    fail(f'{args.command}: --config.KEY=VALUE overrides go with run and config '
         '(sweep: --set KEY=VALUE)')
  if args.command == 'run':
    from lattice import main as main_lib  # pylint: disable=g-import-not-at-top
    main_lib.run_command(args, overrides)
  elif args.command == 'config':
    _config_command(args, overrides)
  elif args.command == 'sweep':
    _sweep(args)
  elif args.command == 'report':
    from lattice import report  # pylint: disable=g-import-not-at-top
    report.write(args.runs_dir, args.out)
  elif args.command == 'bench':
    _bench(args)


if __name__ == '__main__':
  main()
