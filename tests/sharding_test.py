"""Sharded (data=2, fsdp=2, tensor=2 on 8 CPU devices) equals one device."""

import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice import sharding
from lattice.train import loop

from conftest import tiny_config


def _batch(cfg):
  rng = np.random.default_rng(0)
  B, L = cfg.data.batch_size, cfg.data.seq_len
  tokens = rng.integers(0, 256, (B, L + 1)).astype(np.int32)
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
          'weights': np.ones((B, L), np.float32)}


def _one_step(cfg, devices):
  setup = loop.build(cfg, devices=devices)
  with sharding.use_mesh(setup.mesh):
    state = setup.init(jax.random.key(0))
    state, metrics = setup.train_step(state, sharding.global_batch(_batch(setup.cfg),
                                                                   setup.mesh))
  return setup, state, metrics


def _sharded_equals_single(cfg):
  """One step of `cfg` (data=2, fsdp=2, tensor=2) on 8 devices against one device:
  the loss and every parameter after the update agree. Returns the 8-device state."""
  single_cfg = config_lib.replace(cfg, **{'mesh.data': 1, 'mesh.fsdp': 1,
                                          'mesh.tensor': 1})
  _, s1, m1 = _one_step(single_cfg, jax.devices()[:1])
  _, s8, m8 = _one_step(cfg, jax.devices()[:8])
  np.testing.assert_allclose(float(m8['loss']), float(m1['loss']), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-4), s8.params, s1.params)
  return s8


def test_sharded_step_equals_single_device():
  s8 = _sharded_equals_single(config_lib.build(tiny_config(
      model={'d_model': 64, 'attention': {'n_heads': 4, 'n_kv_heads': 2}},
      mesh={'data': 2, 'fsdp': 2, 'tensor': 2})))

  # Parameters really are sharded as the rules say.
  q = s8.params['layers_0']['attention']['query']['kernel']  # (embed, heads, head_dim)
  assert q.sharding.spec == jax.sharding.PartitionSpec('fsdp', 'tensor', None)
  assert q.addressable_shards[0].data.shape == (32, 2, 16)
  mu = s8.opt_state[1][0].mu['layers_0']['attention']['query']['kernel']
  assert mu.sharding.spec == q.sharding.spec  # Adam moments follow their params.
  assert len({s.device for s in q.addressable_shards}) == 8


def test_mesh_errors_name_the_field():
  with pytest.raises(config_lib.ConfigError, match='mesh'):
    sharding.make_mesh(config_lib.MeshConfig(data=3, tensor=2), jax.devices()[:8])
  with pytest.raises(config_lib.ConfigError, match='does not divide'):
    sharding.make_mesh(config_lib.MeshConfig(tensor=3), jax.devices()[:8])
  cfg = config_lib.build(tiny_config(model={'attention': {'n_heads': 2, 'n_kv_heads': 1}},
                                     mesh={'tensor': 2}))
  with pytest.raises(config_lib.ConfigError, match='n_kv_heads'):
    loop.build(cfg, devices=jax.devices()[:8])
  cfg = config_lib.build(tiny_config(data={'batch_size': 6}))
  with pytest.raises(config_lib.ConfigError, match='data.batch_size'):
    loop.build(cfg, devices=jax.devices()[:8])


def test_sharded_splash_step_equals_single_device():
  # The TPU splash-attention path (interpreted here) inside its shard_map: rows over
  # data x fsdp, heads over tensor (one row a batch shard).
  c = tiny_config(model={'d_model': 64, 'max_len': 128,
                         'attention': {'n_heads': 4, 'n_kv_heads': 2,
                                       'implementation': 'splash'}},
                  mesh={'data': 2, 'fsdp': 2, 'tensor': 2},
                  data={'seq_len': 128, 'batch_size': 4})
  _sharded_equals_single(config_lib.build(c))
