"""Tests for lattice.train.checkpoint: Orbax state + grain iterator, async, retention."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import pipeline
from lattice.data import tokenizer as tokenizer_lib
from lattice.train import checkpoint

TOK = tokenizer_lib.ByteTokenizer()


def _data_cfg(tmp_path):
  folder = tmp_path / 'corpus'
  folder.mkdir()
  for i in range(12):
    (folder / f'{i:02d}.txt').write_text(f'document {i} ' * (5 + i))
  return dataclasses.replace(config_lib.DataConfig(), source='text', paths=str(folder),
                             val_fraction=0, seq_len=16, batch_size=2)


def _iterator(data_cfg):
  return pipeline.make_train_iterator(data_cfg, TOK, seed=0, process_index=0,
                                      process_count=1)


def _state(scale):
  mesh = jax.make_mesh((len(jax.devices()),), ('data',))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  n = 8 * len(jax.devices())
  return {
      'params': {'w': jax.device_put(scale * jnp.arange(n * 3.0).reshape(n, 3), rows),
                 'b': jax.device_put(jnp.full((3,), scale, jnp.bfloat16), replicated)},
      'step': jax.device_put(jnp.asarray(scale, jnp.int32), replicated),
  }


def _assert_batches_equal(a, b):
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def _ckpt_cfg(**kw):
  return dataclasses.replace(config_lib.CheckpointConfig(), **kw)


def test_save_restore_state_and_iterator(tmp_path):
  data_cfg = _data_cfg(tmp_path)
  it = _iterator(data_cfg)
  for _ in range(5):
    next(it)
  state = _state(2)
  ckpt = checkpoint.Checkpointer(tmp_path / 'new' / 'ckpt', _ckpt_cfg(every=1))
  assert ckpt.latest_step() is None
  assert ckpt.save(5, state, it)
  # The iterator position is the one at the save call, even while the array write
  # is still in flight.
  expected = [next(it) for _ in range(3)]
  ckpt.wait()
  ckpt.close()

  ckpt = checkpoint.Checkpointer(tmp_path / 'new' / 'ckpt', _ckpt_cfg(every=1))
  assert ckpt.latest_step() == 5
  abstract = jax.eval_shape(lambda: _state(0))
  abstract = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s.sharding),
      abstract, state)
  fresh = _iterator(data_cfg)
  restored = ckpt.restore(abstract, fresh)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert got.dtype == want.dtype and got.sharding == want.sharding
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  for want in expected:
    _assert_batches_equal(next(fresh), want)
  # Concrete arrays work as the target too.
  again = ckpt.restore(_state(0))
  np.testing.assert_array_equal(again['params']['w'], state['params']['w'])
  ckpt.close()


def test_every_keep_and_latest(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path / 'c', _ckpt_cfg(every=10, keep=2))
  assert ckpt.save(10, _state(1))
  assert not ckpt.save(15, _state(1))  # Not a multiple of `every`.
  assert ckpt.save(15, _state(1), force=True)
  assert not ckpt.save(15, _state(1), force=True)  # Already saved.
  assert ckpt.save(20, _state(2))
  assert ckpt.save(30, _state(3))
  ckpt.wait()
  assert ckpt.all_steps() == [20, 30] and ckpt.latest_step() == 30
  assert sorted(os.listdir(tmp_path / 'c')) == ['20', '30']
  restored = ckpt.restore(_state(0), step=20)
  assert int(restored['step']) == 2
  assert int(ckpt.restore(_state(0))['step']) == 3
  with pytest.raises(FileNotFoundError, match='no step 10'):
    ckpt.restore(_state(0), step=10)
  ckpt.close()


def test_async_save_then_wait(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path / 'c', _ckpt_cfg(every=1, async_save=True))
  big = {'w': jnp.ones((512, 512))}
  assert ckpt.save(1, big)
  ckpt.wait()
  assert ckpt.latest_step() == 1
  np.testing.assert_array_equal(ckpt.restore(big)['w'], big['w'])
  ckpt.close()


def test_errors(tmp_path):
  ckpt = checkpoint.Checkpointer(tmp_path / 'empty', _ckpt_cfg())
  assert (tmp_path / 'empty').is_dir()
  with pytest.raises(FileNotFoundError, match='no checkpoint to restore'):
    ckpt.restore(_state(0))
  ckpt.save(1, _state(1), force=True)
  with pytest.raises(FileNotFoundError, match='no data iterator state'):
    ckpt.restore(_state(0), _iterator(_data_cfg(tmp_path)))
  ckpt.close()
  disabled = checkpoint.Checkpointer(tmp_path / 'off', _ckpt_cfg(enabled=False))
  assert not disabled.save(500, _state(1), force=True)
  disabled.close()


@pytest.mark.parametrize('kind', ['mixture', 'hf_streaming'])
def test_orbax_checkpoint_resumes_mixture_and_streaming_iterators(tmp_path, kind):
  # The Checkpointer (not just get_state/set_state) carries a weighted mixture's and
  # a streamed HF dataset's position: the resumed iterator continues exactly.
  base = _data_cfg(tmp_path)
  if kind == 'mixture':
    other = tmp_path / 'other'
    other.mkdir()
    for i in range(6):
      (other / f'{i}.txt').write_text(f'other text {i} ' * (4 + i))
    data_cfg = dataclasses.replace(base, mixture=(
        {'source': 'text', 'paths': base.paths, 'weight': 3.0},
        {'source': 'text', 'paths': str(other), 'weight': 1.0}))
  else:
    pytest.importorskip('datasets')
    path = tmp_path / 'stream.jsonl'
    path.write_text(''.join(f'{{"text": "streamed {i} {"ab" * i}"}}\n' for i in range(40)))
    data_cfg = dataclasses.replace(base, source='hf', hf_name='json', hf_streaming=True,
                                   hf_data_files=str(path))
  it = _iterator(data_cfg)
  for _ in range(3):
    next(it)
  state = _state(1)
  with checkpoint.Checkpointer(tmp_path / 'ckpt', _ckpt_cfg(every=1)) as ckpt:
    assert ckpt.save(3, state, it)
    expected = [next(it) for _ in range(3)]
  fresh = _iterator(data_cfg)
  with checkpoint.Checkpointer(tmp_path / 'ckpt', _ckpt_cfg(every=1)) as ckpt:
    ckpt.restore(_state(0), fresh)
  for want in expected:
    _assert_batches_equal(next(fresh), want)
