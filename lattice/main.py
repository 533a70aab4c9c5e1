r"""Runs an experiment: `python -m lattice.main --config=FILE.py:MODE --workdir=DIR`.

Overrides follow the ml_collections convention, e.g. `--config.model.d_model=512`.
The experiment file's `run(config, workdir)` is called and its Result written.
Errors a user can cause end in one line naming the field, exit code 2.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lattice import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment file and mode, e.g. experiments/baseline_lm.py:quick.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and '
                               'results go (a rerun resumes from it).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 for multi-process runs '
                                   '(jax.distributed); unset: auto-detect or single.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'jax.distributed processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index.')


def _fail(message: str) -> None:
  print(f'lattice: error: {message}', file=sys.stderr)
  sys.exit(2)


def _init_distributed() -> None:
  import jax
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  elif any(v in os.environ for v in ('TPU_WORKER_HOSTNAMES', 'SLURM_JOB_ID',
                                     'JAX_COORDINATOR_ADDRESS')):
    jax.distributed.initialize()  # Cloud TPU pod slices / SLURM: auto-detected.


def run(config, workdir: str):
  """Loads the experiment module named by the config flag and runs it."""
  from lattice import experiment
  # The flag's value is 'FILE.py:MODE'; the mode is the part after the last ':'.
  filename = config_flags.get_config_filename(flags.FLAGS['config']).rsplit(':', 1)[0]
  module = experiment.load_experiment_module(filename)
  config_lib.build(config)  # Validate every section before anything compiles.
  result = module.run(config, workdir)
  print(f'[lattice] {result.experiment} ({result.mode}): '
        f'{"reproduced" if result.reproduced else "NOT reproduced"}; '
        f'wrote {os.path.join(workdir, "result.json")}')
  for c in result.checks:
    print(f'  [{"x" if c.passed else " "}] {c.name}: {c.detail}')
  return result


def main(argv):
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if _WORKDIR.value is None:
    _fail('--workdir is required')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  try:
    _init_distributed()
    run(_CONFIG.value, _WORKDIR.value)
  except config_lib.ConfigError as e:
    _fail(str(e))


def _parse_flags(argv):
  """absl parsing, with config-file errors turned into one clear line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e).splitlines()[0] if str(e) else repr(e))
  except config_lib.ConfigError as e:
    _fail(str(e))
  except Exception as e:  # get_config raising on a bad mode, a broken file, ...
    _fail(f'--config: {type(e).__name__}: {e}')


def cli(argv=None):
  argv = sys.argv if argv is None else argv
  if not any(a.startswith('--config') for a in argv[1:]):
    _fail('--config=FILE.py:MODE is required (e.g. experiments/baseline_lm.py:quick)')
  app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == '__main__':
  cli()
