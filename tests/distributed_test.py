"""Two jax.distributed processes on 127.0.0.1 train one global mesh together.

The processes are set up the way `lattice.main` does it from $JAX_COORDINATOR_ADDRESS,
$JAX_NUM_PROCESSES and $JAX_PROCESS_ID. Each has 2 simulated CPU devices; the mesh
(data=2, fsdp=2) spans all 4. The run is preempted after step 2 and resumed in the
same processes, so the multi-host restore is exercised too. The test then replays
the same global batches on one process with 4 devices and compares the loss
trajectory and the final parameters, checks that each process read exactly its own
shard of the data, and that every checkpoint was written once, collectively.
"""

import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from lattice import config as config_lib
from lattice import sharding
from lattice.data import pipeline, tokenizer
from lattice.train import checkpoint, loop

from conftest import tiny_config

STEPS = 4

_SCRIPT = '''
import json, os, sys
import jax
jax.config.update('jax_num_cpu_devices', 2)
from absl import flags
from lattice import distributed
flags.FLAGS(['lattice'])  # no flags: the JAX_* environment variables decide
distributed.initialize()
import numpy as np
from lattice import sharding
from lattice.train import checkpoint, loop
workdir, cfg = sys.argv[1], json.loads(sys.argv[2])
pid = jax.process_index()

local_batches = []  # this process's rows of every batch it fed, in order
assemble = sharding.global_batch
def record(batch, mesh):
  local_batches.append(batch['inputs'])
  return assemble(batch, mesh)
sharding.global_batch = record
seals = []
seal = checkpoint.write_manifest
def count(step_dir):
  seals.append(os.path.basename(str(step_dir)))
  return seal(step_dir)
checkpoint.write_manifest = count

first = loop.train_and_evaluate(cfg, workdir, stop_after=2)  # preempted after step 2
out = loop.train_and_evaluate(cfg, workdir)  # resumed by every process
np.save(os.path.join(workdir, f'batches_{pid}.npy'), np.stack(local_batches[:%d]))
print('RESULT', json.dumps({'process': pid, 'devices': jax.device_count(),
                            'first_steps': first['steps'], 'steps': out['steps'],
                            'val_loss': out['val_loss'], 'seals': seals}))
''' % STEPS


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _corpus(folder: pathlib.Path, n: int = 11) -> list[bytes]:
  folder.mkdir()
  docs = [(f'doc {i:02d}: ' + 'abcdefgh'[i % 8] * (7 + 5 * i)).encode() for i in range(n)]
  for i, d in enumerate(docs):
    (folder / f'{i:02d}.txt').write_bytes(d)
  return docs


def _data(folder) -> dict:
  return {'source': 'text', 'paths': str(folder), 'val_fraction': 0.25,
          'seq_len': 16, 'batch_size': 8, 'eval_batches': 2}


def test_two_processes_share_one_mesh_and_match_one_process(tmp_path):
  _corpus(tmp_path / 'corpus', 16)
  raw = tiny_config(mesh={'data': 2, 'fsdp': 2}, train={'steps': STEPS, 'log_every': 1},
                    checkpoint={'every': 2}, data=_data(tmp_path / 'corpus'))
  work = tmp_path / 'run'
  port = _free_port()
  procs = []
  for i in range(2):
    env = {**os.environ, 'PYTHONPATH': str(pathlib.Path(__file__).parent.parent),
           'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}', 'JAX_NUM_PROCESSES': '2',
           'JAX_PROCESS_ID': str(i), 'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'xla'),
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
    procs.append(subprocess.Popen(
        [sys.executable, '-c', _SCRIPT, str(work), json.dumps(raw)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  res = sorted((json.loads(o.split('RESULT ')[1]) for o, _ in outs),
               key=lambda r: r['process'])
  assert [r['process'] for r in res] == [0, 1]
  assert all(r['devices'] == 4 and r['first_steps'] == 2 and r['steps'] == STEPS
             for r in res)
  assert res[0]['val_loss'] == res[1]['val_loss']  # one model, evaluated together

  # Checkpoints: written once, collectively, sealed by process 0 alone.
  with checkpoint.Checkpointer(work / 'checkpoints', config_lib.CheckpointConfig()) as c:
    assert c.all_steps() == [2, 4]
  assert [s.split('.')[0] for s in res[0]['seals']] == ['2', '4'] and not res[1]['seals']
  for step in (2, 4):
    assert checkpoint.verify(work / 'checkpoints' / str(step)) is None
    # Both processes hashed their share of the step (lattice/train/seal.py).
    manifest = json.loads((work / 'checkpoints' / str(step) / checkpoint.MANIFEST).read_text())
    assert manifest['hashed_by'] == 2
    data_files = sorted(p.name for p in (work / 'checkpoints' / str(step) / 'data').glob('*.json'))
    assert data_files == ['process_0-of-2.json', 'process_1-of-2.json']

  # Data: each process fed its own shard, and after the resume it went on exactly
  # where it had stopped.
  cfg = config_lib.build(raw)
  tok = tokenizer.ByteTokenizer()
  fed = [np.load(work / f'batches_{p}.npy') for p in range(2)]
  for p in range(2):
    it = pipeline.make_train_iterator(cfg.data, tok, seed=cfg.data.shuffle_seed,
                                      process_index=p, process_count=2)
    np.testing.assert_array_equal(fed[p], np.stack([next(it)['inputs']
                                                    for _ in range(STEPS)]))

  # The same global batches on one process with 4 devices: the same trajectory.
  setup = loop.build(cfg, devices=jax.devices()[:4])
  losses = []
  its = [pipeline.make_train_iterator(cfg.data, tok, seed=cfg.data.shuffle_seed,
                                      process_index=p, process_count=2) for p in range(2)]
  with sharding.use_mesh(setup.mesh):
    state = setup.init(jax.random.key(cfg.train.seed))
    for _ in range(STEPS):
      local = [next(i) for i in its]  # process 0's rows, then process 1's
      batch = {key: np.concatenate([b[key] for b in local]) for key in local[0]}
      state, metrics = setup.train_step(state, sharding.global_batch(batch, setup.mesh))
      losses.append(float(metrics['loss']))
  logged = [json.loads(l) for l in (work / 'metrics.jsonl').read_text().splitlines()]
  two_process = [l['loss'] for l in logged if 'grad_norm' in l]
  np.testing.assert_allclose(two_process, losses, rtol=2e-5)
  with checkpoint.Checkpointer(work / 'checkpoints', config_lib.CheckpointConfig()) as c:
    saved = c.restore(setup.abstract_state, step=STEPS)
  for a, b in zip(jax.tree.leaves(saved.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def _stream_docs(data_cfg, p, count, n_docs, tok):
  """The first `n_docs` documents process `p` of `count` reads, rebuilt from batches."""
  it = pipeline.make_train_iterator(data_cfg, tok, seed=0, process_index=p,
                                    process_count=count)
  stream, docs = [], []
  while len(docs) < n_docs:
    b = next(it)
    for inputs, targets in zip(b['inputs'], b['targets']):
      stream.extend(inputs.tolist() + targets[-1:].tolist())  # the L+1 window
    while tok.eos_id in stream and len(docs) < n_docs:
      end = stream.index(tok.eos_id)
      doc, stream = stream[:end + 1], stream[end + 1:]
      assert doc[0] == tok.bos_id, doc
      docs.append(bytes(doc[1:-1]))
  return docs


def test_processes_read_disjoint_shards_that_cover_every_document(tmp_path):
  docs = _corpus(tmp_path / 'corpus', 11)
  tok = tokenizer.ByteTokenizer()
  data_cfg = dataclasses.replace(config_lib.DataConfig(), source='text',
                                 paths=str(tmp_path / 'corpus'), val_fraction=0,
                                 seq_len=16, batch_size=6)
  for count in (1, 2, 3):
    epoch = []
    for p in range(count):
      share = len(range(p, len(docs), count))
      first_epoch = _stream_docs(data_cfg, p, count, share, tok)
      assert len(set(first_epoch)) == share  # no document twice within an epoch
      epoch += first_epoch
    assert sorted(epoch) == sorted(docs)  # together: every document exactly once
