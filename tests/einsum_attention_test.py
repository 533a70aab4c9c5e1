"""The einsum (query-blocked) training attention equals `jax.nn.dot_product_attention`.

Values and all three input gradients, causal alone and with packed documents
(segment ids), grouped-query heads, block sizes that do and do not divide the
length; and a whole model's logits and gradients with
`model.attention.implementation` 'einsum' vs 'xla'.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.nn import attention, einsum_attention, transformer

from conftest import tiny_config

B, L, H, K, DH = 2, 13, 4, 2, 8


def _qkv():
  kq, kk, kv = jax.random.split(jax.random.key(0), 3)
  return (jax.random.normal(kq, (B, L, H, DH)), jax.random.normal(kk, (B, L, K, DH)),
          jax.random.normal(kv, (B, L, K, DH)))


def _segments():
  # Row 0: documents of 5, 6 tokens then 2 padding (id 0); row 1: one document.
  return jnp.asarray([[1] * 5 + [2] * 6 + [0] * 2, [1] * L], jnp.int32)


def _reference(q, k, v, seg):
  mask = None if seg is None else attention.document_mask(seg)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                      implementation='xla')


def _loss(fn):
  w = jax.random.normal(jax.random.key(3), (B, L, H, DH))
  return lambda q, k, v: jnp.sum(fn(q, k, v) * w)


def _model_and_xla(attention_kw, max_len=None, **model_kw):
  """(ModelConfig of a tiny byte model with `attention_kw`, the same with XLA's path)."""
  c = tiny_config(model={'attention': attention_kw, **model_kw},
                  **({'data': {'seq_len': max_len}} if max_len else {}))
  c['model']['vocab_size'] = 384
  if max_len:
    c['model']['max_len'] = max_len
  cfg = config_lib.build(c).model
  return cfg, dataclasses.replace(
      cfg, attention=dataclasses.replace(cfg.attention, implementation='xla'))


@pytest.mark.parametrize('block,packed', [(3, True), (4, False), (5, True), (L, False),
                                          (64, True)])
def test_equals_dot_product_attention(block, packed):
  q, k, v = _qkv()
  seg = _segments() if packed else None
  mine = lambda q, k, v: einsum_attention.causal_attention(q, k, v, seg, block=block)
  ref = lambda q, k, v: _reference(q, k, v, seg)
  np.testing.assert_allclose(jax.jit(mine)(q, k, v), jax.jit(ref)(q, k, v), atol=2e-6,
                             rtol=1e-5)
  g_mine = jax.jit(jax.grad(_loss(mine), argnums=(0, 1, 2)))(q, k, v)
  g_ref = jax.jit(jax.grad(_loss(ref), argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(g_mine, g_ref):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5)


def test_differs_without_the_document_mask():
  # The packed comparison above can fail: ignoring segment ids changes row 0.
  q, k, v = _qkv()
  attend = jax.jit(einsum_attention.causal_attention, static_argnames='block')
  packed, plain = attend(q, k, v, _segments(), block=4), attend(q, k, v, None, block=4)
  assert float(jnp.max(jnp.abs(packed[0] - plain[0]))) > 1e-2
  np.testing.assert_allclose(packed[1], plain[1], atol=1e-6)


def test_rejects_bad_heads_and_block():
  q, k, v = _qkv()
  with pytest.raises(ValueError, match='n_kv_heads'):
    einsum_attention.causal_attention(q[:, :, :3], k, v)
  with pytest.raises(ValueError, match='block'):
    einsum_attention.causal_attention(q, k, v, block=0)


def test_auto_is_einsum_on_cpu():
  assert attention.train_implementation('auto') == (
      'einsum' if jax.default_backend() == 'cpu' else 'auto')
  assert attention.train_implementation('xla') == 'xla'


def test_auto_is_cudnn_on_gpu_for_bf16_heads_it_supports():
  from unittest import mock
  with mock.patch.object(jax, 'default_backend', lambda: 'gpu'), \
       mock.patch.object(attention, 'cudnn_flash_usable', lambda: True):
    resolve = attention.train_implementation
    assert resolve('auto', jnp.bfloat16, 64) == 'cudnn'
    assert resolve('auto', jnp.bfloat16, 64, seq_len=15) == 'cudnn'  # no mask: causal
    assert resolve('auto', jnp.bfloat16, 64, seq_len=15, masked=True) == 'auto'
    assert resolve('auto', jnp.bfloat16, 64, seq_len=16, masked=True) == 'cudnn'
    mesh = jax.sharding.AbstractMesh((1, 2), ('data', 'tensor'))
    with jax.sharding.use_abstract_mesh(mesh):  # tensor parallelism: XLA's path
      assert resolve('auto', jnp.bfloat16, 64) == 'auto'
    with jax.sharding.use_abstract_mesh(jax.sharding.AbstractMesh((2, 1), ('data', 'tensor'))):
      assert resolve('auto', jnp.bfloat16, 64) == 'cudnn'
    assert resolve('auto', jnp.float16, 128) == 'cudnn'
    assert resolve('auto', jnp.float32, 64) == 'auto'   # cuDNN flash: half precision
    assert resolve('auto', jnp.bfloat16, 100) == 'auto'  # head_dim % 8
    assert resolve('auto', jnp.bfloat16, 256) == 'auto'  # head_dim <= 128
    assert resolve('xla', jnp.bfloat16, 64) == 'xla'
  with mock.patch.object(jax, 'default_backend', lambda: 'gpu'), \
       mock.patch.object(attention, 'cudnn_flash_usable', lambda: False):  # CUDA 13, V100
    assert attention.train_implementation('auto', jnp.bfloat16, 64) == 'auto'
  if jax.default_backend() == 'cpu':
    assert not attention.cudnn_flash_usable()  # no CUDA runtime here
  with mock.patch.object(jax, 'default_backend', lambda: 'tpu'):
    assert attention.train_implementation('auto', jnp.bfloat16, 64) == 'auto'


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='a real GPU has cuDNN')
def test_auto_falls_back_to_xla_without_cudnn():
  # A GPU backend without cuDNN: jax raises when tracing the cuDNN call; 'auto'
  # then takes XLA's path (one warning) and gives XLA's numbers. Run here on the CPU
  # with the backend reported as 'gpu', where jax finds no cuDNN.
  from unittest import mock
  cfg, xla_cfg = _model_and_xla({'n_heads': 2}, dtype='bfloat16')
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 256)
  params = nn.unbox(transformer.Transformer(cfg).init(jax.random.key(0), tokens))
  want = transformer.Transformer(xla_cfg).apply(params, tokens)
  attention._CUDNN_FALLBACK_WARNED.clear()
  with mock.patch.object(jax, 'default_backend', lambda: 'gpu'), \
       mock.patch.object(attention, 'cudnn_flash_usable', lambda: True):
    assert attention.train_implementation('auto', jnp.bfloat16, cfg.head_dim) == 'cudnn'
    with pytest.warns(UserWarning, match='cuDNN flash attention unavailable'):
      got = transformer.Transformer(cfg).apply(params, tokens)
    cudnn_cfg = dataclasses.replace(
        cfg, attention=dataclasses.replace(cfg.attention, implementation='cudnn'))
    with pytest.raises(RuntimeError, match='cuDNN'):  # asked for by name: no fallback
      transformer.Transformer(cudnn_cfg).apply(params, tokens)
  np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(jax.default_backend() != 'gpu' or not attention.cudnn_flash_usable(),
                    reason='needs a GPU where auto takes cuDNN (compute >= 8.0, CUDA < 13)')
def test_cudnn_auto_matches_xla_on_gpu():
  # bf16 model, packed rows (document mask): 'auto' (cuDNN flash) against XLA's path.
  cfg, xla_cfg = _model_and_xla({'n_heads': 2}, dtype='bfloat16')
  assert attention.train_implementation('auto', jnp.bfloat16, cfg.head_dim) == 'cudnn'
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
  segments = jnp.asarray([[1] * 9 + [2] * 7, [1] * 16], jnp.int32)
  params = nn.unbox(transformer.Transformer(cfg).init(jax.random.key(0), tokens))
  packed = lambda mod, t: mod.logits(mod.trunk(mod.embed_tokens(t), None, None, segments))
  run = lambda m: jax.jit(lambda p: m.apply(p, tokens, method=packed))(params)
  np.testing.assert_allclose(run(transformer.Transformer(cfg)).astype(np.float32),
                             run(transformer.Transformer(xla_cfg)).astype(np.float32),
                             atol=5e-2, rtol=5e-2)
  # The backward too (cuDNN's dbias path for the document mask).
  loss = lambda m: lambda p: jnp.mean(m.apply(p, tokens, method=packed) ** 2)
  g_cudnn = jax.jit(jax.grad(loss(transformer.Transformer(cfg))))(params)
  g_xla = jax.jit(jax.grad(loss(transformer.Transformer(xla_cfg))))(params)
  for a, b in zip(jax.tree.leaves(g_cudnn), jax.tree.leaves(g_xla)):
    scale = float(jnp.max(jnp.abs(b.astype(jnp.float32)))) + 1e-6
    assert float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)))) < 0.1 * scale


def test_model_einsum_equals_xla():
  cfg, xla_cfg = _model_and_xla({'n_heads': 4, 'n_kv_heads': 2, 'implementation': 'einsum'})
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, 256)
  params = nn.unbox(transformer.Transformer(cfg).init(jax.random.key(0), tokens))
  loss = lambda m: lambda p: jnp.mean(m.apply(p, tokens) ** 2)
  mine, ref = transformer.Transformer(cfg), transformer.Transformer(xla_cfg)
  np.testing.assert_allclose(jax.jit(mine.apply)(params, tokens),
                             jax.jit(ref.apply)(params, tokens), atol=1e-5, rtol=1e-5)
  g_mine = jax.jit(jax.grad(loss(mine)))(params)
  g_ref = jax.jit(jax.grad(loss(ref)))(params)
  for a, b in zip(jax.tree.leaves(g_mine), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def test_splash_equals_xla_on_packed_rows():
  # Pallas's TPU splash-attention kernel, run by its interpreter here: forward and
  # gradients against XLA's path with the document mask (GQA, two documents in row 0).
  cfg, xla_cfg = _model_and_xla({'n_heads': 4, 'n_kv_heads': 2, 'implementation': 'splash'},
                                 max_len=128)
  L = 128
  tokens = jax.random.randint(jax.random.key(1), (2, L), 0, 256)
  segments = jnp.asarray([[1] * 70 + [2] * 58, [1] * L], jnp.int32)
  params = nn.unbox(transformer.Transformer(cfg).init(jax.random.key(0), tokens))
  packed = lambda mod, t: mod.logits(mod.trunk(mod.embed_tokens(t), None, None, segments))
  loss = lambda m: lambda p: jnp.mean(m.apply(p, tokens, method=packed) ** 2)
  mine, ref = transformer.Transformer(cfg), transformer.Transformer(xla_cfg)
  np.testing.assert_allclose(jax.jit(lambda p: mine.apply(p, tokens, method=packed))(params),
                             jax.jit(lambda p: ref.apply(p, tokens, method=packed))(params),
                             atol=2e-5, rtol=2e-5)
  g_mine = jax.jit(jax.grad(loss(mine)))(params)
  g_ref = jax.jit(jax.grad(loss(ref)))(params)
  for a, b in zip(jax.tree.leaves(g_mine), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-3)
  with pytest.raises(ValueError, match='multiple of 128'):
    attention.splash_attention(*(jnp.zeros((1, 64, 2, 8)),) * 3)
