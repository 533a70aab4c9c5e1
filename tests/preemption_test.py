"""Two jax.distributed processes; only one gets SIGTERM, at a random step.

Both must stop after the same step, save that step once (collectively), and return
normally; resumed in the same processes, the run must end where an uninterrupted
run (also in the same processes, another workdir) ends: the same parameters and
the same logged losses. One process pair; its compiles are shared through a
persistent compilation cache.
"""

import json
import os
import pathlib
import random
import socket
import subprocess
import sys

import numpy as np

from lattice import config as config_lib
from lattice.train import checkpoint

from conftest import XLA_TEST_FLAGS, tiny_config

STEPS = 6

_SCRIPT = '''
import json, os, signal, sys
import jax
jax.config.update('jax_num_cpu_devices', 1)
from absl import flags
from lattice import distributed
flags.FLAGS(['lattice'])  # no flags: the JAX_* environment variables decide
distributed.initialize()
import numpy as np
from lattice import sharding
from lattice.train import loop
root, cfg, kill_at = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
pid = jax.process_index()

calls = [0]
assemble = sharding.global_batch
def batch_then_maybe_sigterm(batch, mesh):
  calls[0] += 1
  if pid == 1 and calls[0] == kill_at:  # only process 1 is preempted
    os.kill(os.getpid(), signal.SIGTERM)
  return assemble(batch, mesh)
sharding.global_batch = batch_then_maybe_sigterm

first = loop.train_and_evaluate(cfg, os.path.join(root, 'run'))
kill_at = -1
resumed = loop.train_and_evaluate(cfg, os.path.join(root, 'run'))
whole = loop.train_and_evaluate(cfg, os.path.join(root, 'whole'))
flat = lambda out: [float(np.asarray(x, np.float64).sum()) for x in
                    jax.tree.leaves(jax.device_get(out['state'].params))]
print('RESULT', json.dumps({'process': pid, 'first': first['steps'],
                            'preempted': first['preempted'], 'steps': resumed['steps'],
                            'resumed': flat(resumed), 'whole': flat(whole)}))
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _losses(run: pathlib.Path) -> dict[int, float]:
  rows = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines()]
  return {r['step']: r['loss'] for r in rows if 'grad_norm' in r}


def test_one_sigterm_stops_both_processes_at_the_same_step(tmp_path):
  kill_at = random.randint(2, STEPS - 1)  # the batch fetch of step kill_at
  raw = tiny_config(mesh={'data': 2}, train={'steps': STEPS, 'log_every': 1},
                    checkpoint={'every': STEPS, 'keep': 2})
  port = _free_port()
  procs = []
  for i in range(2):
    env = {**os.environ, 'PYTHONPATH': str(pathlib.Path(__file__).parent.parent),
           'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}', 'JAX_NUM_PROCESSES': '2',
           'JAX_PROCESS_ID': str(i), 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': XLA_TEST_FLAGS,
           'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'xla'),
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
    procs.append(subprocess.Popen(
        [sys.executable, '-c', _SCRIPT, str(tmp_path), json.dumps(raw), str(kill_at)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  res = sorted((json.loads(o.split('RESULT ')[1]) for o, _ in outs),
               key=lambda r: r['process'])
  stopped = {r['first'] for r in res}
  assert len(stopped) == 1, f'processes stopped at different steps: {res}'
  (at,) = stopped
  assert all(r['preempted'] for r in res) and 1 <= at < STEPS, (kill_at, res)
  assert all('SIGTERM on process 1' in o for o, _ in outs)
  assert all(r['steps'] == STEPS for r in res)

  with checkpoint.Checkpointer(tmp_path / 'run' / 'checkpoints',
                               config_lib.CheckpointConfig()) as c:
    assert c.all_steps() == [at, STEPS]  # the preemption save, once, then the end
  for r in res:  # resumed == uninterrupted, on both processes
    np.testing.assert_allclose(r['resumed'], r['whole'], rtol=1e-5)
  run, whole = _losses(tmp_path / 'run'), _losses(tmp_path / 'whole')
  assert run.keys() == whole.keys() == set(range(1, STEPS + 1))
  np.testing.assert_allclose([run[k] for k in sorted(run)],
                             [whole[k] for k in sorted(run)], rtol=1e-6)
