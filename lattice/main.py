r"""Runs an experiment: `python -m lattice.main --config=FILE.py:MODE --workdir=DIR`.

Overrides follow the ml_collections convention, e.g. `--config.model.d_model=512`.
The experiment file's `run(config, workdir)` is called and its Result written.
Errors a user can cause end in one line naming the field, exit code 2.
"""

from __future__ import annotations

import difflib
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from lattice import config as config_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Experiment file and mode, e.g. experiments/baseline_lm.py:quick.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and '
                               'results go (a rerun resumes from it).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 for a multi-process run '
    '(jax.distributed); else $JAX_COORDINATOR_ADDRESS, else auto-detected on Cloud '
    'TPU pod slices, SLURM and Open MPI, else a single process.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'jax.distributed '
                                      'processes; else $JAX_NUM_PROCESSES.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index; else '
                                   '$JAX_PROCESS_ID.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None, 'Force (true) or forbid (false) jax.distributed with '
    "JAX's own cluster auto-detection; unset: initialize only when a coordinator "
    'or a multi-process cluster is found.')


def _fail(message: str) -> None:
  print(f'lattice: error: {message}', file=sys.stderr)
  sys.exit(2)


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


def _init_distributed() -> None:
  import jax
  kwargs = distributed_args(_COORDINATOR.value, _NUM_PROCESSES.value,
                            _PROCESS_ID.value, _DISTRIBUTED.value)
  if kwargs is None:
    return
  # CPU processes exchange collectives over gloo (TPU/GPU use their own fabric).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)


def run(config, workdir: str):
  """Loads the experiment module named by the config flag and runs it."""
  from lattice import experiment
  # The flag's value is 'FILE.py:MODE'; config_flags splits it at the first ':'.
  filename = config_flags.get_config_filename(flags.FLAGS['config']).split(':', 1)[0]
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
  if not _WORKDIR.value:
    _fail('--workdir is required (where checkpoints, metrics and result.json go)')
  if os.path.exists(_WORKDIR.value) and not os.path.isdir(_WORKDIR.value):
    _fail(f'--workdir: {_WORKDIR.value!r} exists and is not a folder')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  from lattice import experiment  # pylint: disable=g-import-not-at-top
  from lattice.train import checkpoint, loop  # pylint: disable=g-import-not-at-top
  try:
    _init_distributed()
    run(_CONFIG.value, _WORKDIR.value)
  except config_lib.ConfigError as e:
    _fail(str(e))
  except experiment.Preempted as e:
    print(f'[lattice] preempted: {e}')
  except (checkpoint.CheckpointError, loop.NonFiniteError) as e:
    # Faults of the run, not of the input: one line, exit 1; checkpoints on disk
    # are intact and a rerun resumes from the newest good one.
    print(f'lattice: error: {e}', file=sys.stderr)
    sys.exit(1)


def _first_line(e: BaseException) -> str:
  lines = [l for l in str(e).splitlines() if l.strip()]
  return lines[0].strip() if lines else type(e).__name__


def _config_error_in(e: BaseException | None) -> config_lib.ConfigError | None:
  """The innermost ConfigError that `e` wraps.

  absl re-raises as a flag error, and config_flags re-raises a get_config error as
  `type(e)('Error whilst parsing config file:' + traceback)`; the original, with
  the one-line message, is at the end of the chain.
  """
  found, seen = None, set()
  while e is not None and id(e) not in seen:
    if isinstance(e, config_lib.ConfigError):
      found = e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return found


_OVERRIDE = re.compile(r'^--?(?:no)?config\.([^=]+)(?:=(.*))?$', re.S)


def _config_args(argv) -> tuple[str | None, list[tuple[str, str | None]]]:
  """The --config value and the (path, value) of each --config.PATH override."""
  spec, overrides = None, []
  for i, arg in enumerate(argv):
    if re.match(r'^--?config(=|$)', arg):
      spec = arg.split('=', 1)[1] if '=' in arg else (
          argv[i + 1] if i + 1 < len(argv) else None)
    elif m := _OVERRIDE.match(arg):
      overrides.append((m.group(1), m.group(2)))
  return spec, overrides


def _check_override(config, path: str, value: str | None) -> str | None:
  """Why `--config.path=value` does not fit `config`, or None if it does."""
  node, parts = config, path.split('.')
  for j, part in enumerate(parts):
    where = '.'.join(parts[:j]) or 'the config'
    if not hasattr(node, 'keys'):
      return (f'--config.{path}: {where} holds a value ({type(node).__name__}), '
              'not a section of keys')
    if part not in node:
      if j == 0 and part in config_lib.SECTIONS:
        return (f'--config.{path}: the experiment config has no {part!r} section '
                '(build its modes with lattice.experiment.pick_mode, which fills '
                'in every default)')
      keys = sorted(node.keys())
      close = difflib.get_close_matches(part, keys, n=1)
      hint = f'did you mean {close[0]!r}? ' if close else ''
      return (f'--config.{path}: unknown config key {part!r} in {where} '
              f'({hint}known keys: {", ".join(keys)})')
    node = node[part]
  if value is None:
    return None
  # The parsers config_flags uses for these field types.
  for kind, parser, want in ((bool, flags.BooleanParser(), 'true/false'),
                             (int, flags.IntegerParser(), 'an integer'),
                             (float, flags.FloatParser(), 'a number')):
    if isinstance(node, kind):
      try:
        parser.parse(value)
      except ValueError:
        return f'--config.{path}: expected {want}, got {value!r}'
      break
  return None


def _diagnose(argv) -> str | None:
  """Re-reads the experiment named by --config and checks each override."""
  from lattice import experiment
  spec, overrides = _config_args(argv[1:])
  if not spec:
    return '--config: needs a value, FILE.py:MODE'
  # Mirrors config_flags: 'FILE.py:MODE' split at the first ':'.
  filename, *mode = spec.split(':', 1)
  try:
    module = experiment.load_experiment_module(filename)
    config = module.get_config(*mode)
  except config_lib.ConfigError as e:
    return str(e)
  except Exception as e:  # A broken experiment file: say where, in one line.
    return f'--config: {spec}: {type(e).__name__}: {_first_line(e)}'
  for path, value in overrides:
    problem = _check_override(config, path, value)
    if problem:
      return problem
  return None


def _explain(argv, e: BaseException) -> str:
  """One line for a flag-parsing failure, naming the flag or config field."""
  cause = _config_error_in(e)
  if cause is not None:
    return str(cause)
  diagnosis = _diagnose(argv)
  if diagnosis:
    return diagnosis
  if isinstance(e, flags.Error):
    return _first_line(e)
  return f'--config: {type(e).__name__}: {_first_line(e)}'


def _parse_flags(argv):
  """absl parsing, with config-file and override errors turned into one clear line.

  ml_collections reports a mistyped override key as a bare AttributeError/KeyError
  and a get_config failure as a multi-line traceback inside a flag error, so on any
  failure the experiment is re-read and each override checked by name.
  """
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    _fail(_explain(argv, e))


def cli(argv=None):
  argv = sys.argv if argv is None else argv
  if not any(a.startswith('--config') for a in argv[1:]):
    _fail('--config=FILE.py:MODE is required (e.g. experiments/baseline_lm.py:quick)')
  app.run(main, argv=argv, flags_parser=_parse_flags)


if __name__ == '__main__':
  cli()
