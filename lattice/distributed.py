"""Multi-process start-up: `jax.distributed.initialize` arguments from flags, the
`JAX_*` environment variables, or a detected cluster launcher (`lattice run`'s
--coordinator_address/--num_processes/--process_id/--distributed).

Errors a user can fix raise `ConfigError` naming the flag or variable.
"""

from __future__ import annotations

import os
import re

from lattice.errors import ConfigError

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
    raise ConfigError(f'${name}: expected an integer, got {value!r}') from None


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
    raise ConfigError(f'--num_processes: must be positive, got '
                                 f'{num_processes}')
  if process_id is not None and (process_id < 0 or (
      num_processes is not None and process_id >= num_processes)):
    raise ConfigError(f'--process_id: must lie in [0, --num_processes='
                                 f'{num_processes}), got {process_id}')
  if coordinator is not None and not re.fullmatch(r'\[?[\w.:-]+\]?:\d+', coordinator):
    raise ConfigError(f'--coordinator_address: expected host:port, got '
                                 f'{coordinator!r}')
  if not _cluster_detected(environ) and not force and None in (
      coordinator, num_processes, process_id):
    raise ConfigError(
        '--coordinator_address, --num_processes and --process_id: give all three '
        '(or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID) for a '
        'multi-process run outside a detected cluster')
  return {'coordinator_address': coordinator, 'num_processes': num_processes,
          'process_id': process_id}


def initialize(coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None, force: bool | None = None) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  kwargs = distributed_args(coordinator, num_processes, process_id, force)
  if kwargs is None:
    return
  # CPU processes exchange collectives over gloo (TPU/GPU use their own fabric).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(**kwargs)
