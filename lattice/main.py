r"""Runs an experiment: `python -m lattice.main --config=FILE.py:MODE --workdir=DIR`.

The same as `lattice run` (one parser: `lattice.parser`). Overrides follow the
ml_collections convention, e.g. `--config.model.d_model=512`; the experiment file's
`run(config, workdir)` is called and its Result written. Flags -> config -> run:
config errors come from `lattice.run.config_file` as one line naming the field.
"""

from __future__ import annotations

import os
import sys

from lattice import distributed
from lattice import hostmem
from lattice import parser as parser_lib
# (lattice.config is imported inside run_command: importing it starts native threads
# (grain's), and glibc fixes its arena limit when a second thread first allocates, so
# `hostmem.tune_malloc` has to run before it.)


# The experiment module `run_command` loaded (the file named by --config).
_experiment_module = None


def run(config, workdir: str):
  """Runs the loaded experiment on `config` in `workdir`; prints the verdict.

  The workdir is bound to the code's commit first (`provenance.bind_workdir`: a
  ConfigError if it holds arms of another commit) and the load average is noted.
  """
  from lattice.run import provenance, records  # pylint: disable=g-import-not-at-top
  commit = records.git_commit(os.path.dirname(__file__))
  provenance.mark_start(commit)
  try:
    provenance.bind_workdir(workdir, commit, write=records.is_primary_process())
    result = _experiment_module.run(config, workdir)
  finally:
    provenance.forget_start()
  print(f'[lattice] {result.experiment} ({result.mode}): '
        f'{"reproduced" if result.reproduced else "NOT reproduced"}; '
        f'wrote {os.path.join(workdir, "result.json")}')
  for c in result.checks:
    print(f'  [{"x" if c.passed else " "}] {c.name}: {c.detail}')
  return result


def run_command(args, overrides: list[tuple[str, str | None]]) -> None:
  """`lattice run`: flags -> config -> run (glibc's malloc tuned first,
  `lattice.hostmem`; LATTICE_MALLOC=0 keeps its defaults). Exit 2 on a user error, 1 on a fault
  of the run (checkpoints on disk stay intact; a rerun resumes), 143
  (`arms.PREEMPTED_EXIT`) when SIGTERM stopped the run after it saved (a rerun
  resumes)."""
  hostmem.tune_malloc()  # before any native thread exists (lattice.hostmem: why, measured)
  from absl import logging  # pylint: disable=g-import-not-at-top
  from lattice import config as config_lib  # pylint: disable=g-import-not-at-top
  from lattice.run import arms, config_file  # pylint: disable=g-import-not-at-top
  from lattice.train import checkpoint, loop  # pylint: disable=g-import-not-at-top
  try:
    module, config = config_file.load(args.config)
    for note in config_file.apply(config, overrides):
      print(f'[lattice] {note}')
    if not args.workdir:
      raise config_lib.ConfigError('--workdir is required (where checkpoints, metrics '
                                   'and result.json go)')
    if os.path.exists(args.workdir) and not os.path.isdir(args.workdir):
      raise config_lib.ConfigError(f'--workdir: {args.workdir!r} exists and is not a '
                                   'folder')
    config_lib.build(config)  # Validate every section before anything compiles.
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    distributed.initialize(args.coordinator_address, args.num_processes, args.process_id,
                           args.distributed)
    global _experiment_module
    _experiment_module = module
    run(config, args.workdir)
  except config_lib.ConfigError as e:
    parser_lib.fail(str(e))
  except arms.Preempted as e:
    print(f'[lattice] preempted: {e}; rerun the same command to resume')
    sys.exit(arms.PREEMPTED_EXIT)
  except (checkpoint.CheckpointError, loop.NonFiniteError) as e:
    parser_lib.fail(str(e), code=1)


def cli(argv=None) -> None:
  """`python -m lattice.main ARGS`: `lattice run ARGS` (argv[0] is the program)."""
  argv = sys.argv if argv is None else argv
  rest, overrides = parser_lib.split_overrides(['run', *argv[1:]])
  run_command(parser_lib.parser().parse_args(rest), overrides)


if __name__ == '__main__':
  cli()
