"""Two jax.distributed processes on 127.0.0.1 train one global mesh together."""

import json
import os
import socket
import subprocess
import sys
import pathlib

from lattice.train import checkpoint
from lattice import config as config_lib

from conftest import tiny_config

_SCRIPT = '''
import json, sys
import jax
jax.config.update('jax_num_cpu_devices', 2)
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
port, pid, workdir, cfg = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
jax.distributed.initialize(f'127.0.0.1:{port}', 2, pid)
from lattice.train import loop
out = loop.train_and_evaluate(cfg, workdir)
print('RESULT', json.dumps({'process': jax.process_index(), 'devices': jax.device_count(),
                            'val_loss': out['val_loss'], 'steps': out['steps']}))
'''


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_share_one_mesh(tmp_path):
  cfg = tiny_config(mesh={'data': 2, 'fsdp': 2}, train={'steps': 4},
                    checkpoint={'every': 2})
  port = _free_port()
  env = {**os.environ, 'PYTHONPATH': str(pathlib.Path(__file__).parent.parent)}
  procs = [subprocess.Popen(
      [sys.executable, '-c', _SCRIPT, str(port), str(i), str(tmp_path), json.dumps(cfg)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
      for i in range(2)]
  outs = [p.communicate(timeout=240) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  res = [json.loads(o.split('RESULT ')[1]) for o, _ in outs]
  assert {r['process'] for r in res} == {0, 1}
  assert all(r['devices'] == 4 and r['steps'] == 4 for r in res)
  assert res[0]['val_loss'] == res[1]['val_loss']  # one model, evaluated together
  ckpt = checkpoint.Checkpointer(tmp_path / 'checkpoints', config_lib.CheckpointConfig())
  assert ckpt.all_steps() == [2, 4]  # written once, collectively
  ckpt.close()
  data_files = sorted(p.name for p in (tmp_path / 'checkpoints' / '4' / 'data').glob('*.json'))
  assert data_files == ['process_0-of-2.json', 'process_1-of-2.json']
