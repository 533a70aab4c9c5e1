r"""Runs an experiment: `python -m lattice.main --config=FILE.py:MODE --workdir=DIR`.

The same as `lattice run` (one parser: `lattice.parser`). Overrides follow the
ml_collections convention, e.g. `--config.model.d_model=512`; the experiment file's
`run(config, workdir)` is called and its Result written. Flags -> config -> run:
config errors come from `lattice.run.config_file` as one line naming the field.
"""

from __future__ import annotations

import os
import re
import sys

from lattice import parser as parser_lib
from lattice import config as config_lib


# Environment markers of clusters whose launcher starts one process per host/GPU and
# that jax.distributed.initialize() auto-detects (jax._src.clusters).
_CLUSTER_MARKERS = (('TPU_WORKER_HOSTNAMES', ','),  # multi-host TPU slice (GKE, XPK)
                    ('MEGASCALE_COORDINATOR_ADDRESS', ''),  # multi-slice TPU
                    ('SLURM_NTASKS', 'int>1'), ('OMPI_COMM_WORLD_SIZE', 'int>1'))


def _env_int(environ, name: str) -> int | None:
  value = environ.get(name)
  if value in (None, ''):
    return None
  try:
    return int(value)
  except ValueError:
    raise config_lib.ConfigError(f'${name}: expected an integer, got {value!r}') from None


def _cluster_detected(environ) -> str | None:
  for name, rule in _CLUSTER_MARKERS:
    value = environ.get(name, '')
    if (rule == ',' and ',' in value) or (rule == '' and value) or (
        rule == 'int>1' and value.isdigit() and int(value) > 1):
      return name
  return None


def distributed_args(coordinator: str | None, num_processes: int | None,
                     process_id: int | None, force: bool | None,
                     environ=os.environ) -> dict | None:
  """The jax.distributed.initialize kwargs for this process; None: single process.

  Flags win over $JAX_COORDINATOR_ADDRESS / $JAX_NUM_PROCESSES / $JAX_PROCESS_ID;
  with neither, a known multi-process cluster (Cloud TPU slice, SLURM, Open MPI)
  or `--distributed` means JAX's auto-detection (empty kwargs).
  """
  if force is False:
    return None
  coordinator = coordinator or environ.get('JAX_COORDINATOR_ADDRESS') or None
  if num_processes is None:
    num_processes = _env_int(environ, 'JAX_NUM_PROCESSES')
  if process_id is None:
    process_id = _env_int(environ, 'JAX_PROCESS_ID')
  if coordinator is None and num_processes is None and process_id is None:
    return {} if force or _cluster_detected(environ) else None
  if num_processes is not None and num_processes < 1:
    raise config_lib.ConfigError(f'--num_processes: must be positive, got '
                                 f'{num_processes}')
  if process_id is not None and (process_id < 0 or (
      num_processes is not None and process_id >= num_processes)):
    raise config_lib.ConfigError(f'--process_id: must lie in [0, --num_processes='
                                 f'{num_processes}), got {process_id}')
  if coordinator is not None and not re.fullmatch(r'\[?[\w.:-]+\]?:\d+', coordinator):
    raise config_lib.ConfigError(f'--coordinator_address: expected host:port, got '
                                 f'{coordinator!r}')
  if not _cluster_detected(environ) and not force and None in (
      coordinator, num_processes, process_id):
    raise config_lib.ConfigError(
        '--coordinator_address, --num_processes and --process_id: give all three '
        '(or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID) for a '
        'multi-process run outside a detected cluster')
  return {'coordinator_address': coordinator, 'num_processes': num_processes,
          'process_id': process_id}


def _init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None, force: bool | None = None) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  kwargs = distributed_args(coordinator, num_processes, process_id, force)
  if kwargs is None:
    return
  # CPU processes exchange collectives over gloo (TPU/GPU use their own fabric).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)


# The experiment module `run_command` loaded (the file named by --config).
_experiment_module = None


def run(config, workdir: str):
  """Runs the loaded experiment on `config` in `workdir`; prints the verdict."""
  result = _experiment_module.run(config, workdir)
  print(f'[lattice] {result.experiment} ({result.mode}): '
        f'{"reproduced" if result.reproduced else "NOT reproduced"}; '
        f'wrote {os.path.join(workdir, "result.json")}')
  for c in result.checks:
    print(f'  [{"x" if c.passed else " "}] {c.name}: {c.detail}')
  return result


def run_command(args, overrides: list[tuple[str, str | None]]) -> None:
  """`lattice run`: flags -> config -> run. Exit 2 on a user error, 1 on a fault
  of the run (checkpoints on disk stay intact; a rerun resumes)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
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
    _init_distributed(args.coordinator_address, args.num_processes, args.process_id,
                      args.distributed)
    global _experiment_module
    _experiment_module = module
    run(config, args.workdir)
  except config_lib.ConfigError as e:
    parser_lib.fail(str(e))
  except arms.Preempted as e:
    print(f'[lattice] preempted: {e}')
  except (checkpoint.CheckpointError, loop.NonFiniteError) as e:
    parser_lib.fail(str(e), code=1)


def cli(argv=None) -> None:
  """`python -m lattice.main ARGS`: `lattice run ARGS` (argv[0] is the program)."""
  argv = sys.argv if argv is None else argv
  rest, overrides = parser_lib.split_overrides(['run', *argv[1:]])
  run_command(parser_lib.parser().parse_args(rest), overrides)


if __name__ == '__main__':
  cli()
