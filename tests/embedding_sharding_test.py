"""The token-embedding gather on a data x fsdp x tensor mesh (vocab tensor-sharded,
embed fsdp-sharded): XLA partitions it without an "Involuntary full
rematerialization", and the sharded logits equal one device's."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from lattice import config as config_lib
from lattice import sharding
from lattice.train import loop

from conftest import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
WARNING = 'Involuntary full rematerialization'

# Compiles the train step on 8 CPU devices (data=2, fsdp=2, tensor=2) with untied
# embeddings, once with lattice's Embed and once with the plain gather it replaced
# (the control: XLA must warn there, or this test could not fail).
_COMPILE = r'''
import sys, jax, numpy as np
import jax.numpy as jnp
jax.config.update('jax_num_cpu_devices', 8)
sys.path.insert(0, 'tests')
from conftest import tiny_config
from lattice import config as config_lib, sharding
from lattice.nn import layers
from lattice.train import loop
cfg = config_lib.build(tiny_config(
    model={'d_model': 64, 'tie_embeddings': False, 'attention': {'n_heads': 4, 'n_kv_heads': 2}},
    mesh={'data': 2, 'fsdp': 2, 'tensor': 2}))
B, L = cfg.data.batch_size, cfg.data.seq_len
spec = jax.ShapeDtypeStruct((B, L), np.int32)
batch = {'inputs': spec, 'targets': spec, 'weights': jax.ShapeDtypeStruct((B, L), np.float32)}
lattice_call = layers.Embed.__call__
plain_call = lambda self, ids: jnp.take(self.embedding, ids, axis=0).astype(self.dtype)
for name, call in (('lattice', lattice_call), ('plain', plain_call)):
  layers.Embed.__call__ = call
  sys.stderr.write(f'@@ {name}\n'); sys.stderr.flush()
  setup = loop.build(cfg, devices=jax.devices()[:8])
  with sharding.use_mesh(setup.mesh):
    setup.train_step.lower(setup.abstract_state, batch).compile()
  sys.stderr.flush()
sys.stderr.write('@@ end\n')
print('compiled')
'''


def _compile_logs() -> dict[str, str]:
  """XLA's stderr while compiling with each Embed ('lattice', 'plain')."""
  # A fresh process: XLA's C++ warnings go to its stderr, and no compilation cache
  # can skip the partitioner.
  env = {**os.environ, 'PYTHONPATH': str(ROOT), 'TF_CPP_MIN_LOG_LEVEL': '0',
         'JAX_PLATFORMS': 'cpu', 'JAX_ENABLE_COMPILATION_CACHE': 'false'}
  r = subprocess.run([sys.executable, '-c', _COMPILE], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0 and 'compiled' in r.stdout, r.stderr[-3000:]
  parts = r.stderr.split('@@ ')
  return {p.split('\n', 1)[0]: p for p in parts[1:]}


def test_embedding_gather_compiles_without_involuntary_rematerialization():
  logs = _compile_logs()
  assert WARNING in logs['plain']      # the control reproduces the warning
  assert WARNING not in logs['lattice'], [
      l for l in logs['lattice'].splitlines() if WARNING in l][:2]


def test_sharded_logits_equal_one_device():
  cfg = config_lib.build(tiny_config(
      model={'d_model': 64, 'tie_embeddings': False,
             'attention': {'n_heads': 4, 'n_kv_heads': 2}},
      mesh={'data': 2, 'fsdp': 2, 'tensor': 2}))
  one = config_lib.replace(cfg, **{'mesh.data': 1, 'mesh.fsdp': 1, 'mesh.tensor': 1})
  tokens_BxL = np.random.default_rng(0).integers(0, 256, (8, 16)).astype(np.int32)
  logits = []
  for c, devices in ((one, jax.devices()[:1]), (cfg, jax.devices()[:8])):
    setup = loop.build(c, devices=devices)
    with sharding.use_mesh(setup.mesh):
      state = setup.init(jax.random.key(0))
      x = sharding.global_batch({'inputs': tokens_BxL}, setup.mesh)['inputs']
      out = jax.jit(lambda p, x: setup.model.apply({'params': p}, x))(state.params, x)
    logits.append(np.asarray(out))
  assert logits[0].shape == (8, 16, setup.cfg.model.vocab_size)
  np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-5)
