"""lattice.decode.packed_weights: decoding from packed copies of the projection kernels.

The packed skinny kernel must give the bits of the unpacked one (same multiply-adds,
same order) on every instruction-set path and under both vmap rules; `pack_weights`
must pack the float projections a decoder runs (scanned layers too) and leave
quantized ones alone; and every decoder must emit the same tokens with and without
the packed copies (plain, sampling, self-speculative).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.skinny_cpu import ops
from lattice import config as config_lib
from lattice import model as model_lib
from lattice.decode import packed_weights, sampling, speculative

from conftest import tiny_config

pytestmark = pytest.mark.skipif(not ops.available(), reason='kernels/skinny_cpu is not built')
ISAS = [isa for isa in ('scalar', 'avx2', 'avx512') if ops.supports(isa)]


@pytest.mark.parametrize('isa', ISAS)
def test_packed_kernel_gives_the_unpacked_bits(isa):
  rng = np.random.default_rng(0)
  # The last shape's weights (>= 256 KiB) are split across the thread pool.
  for m, k, n in [(1, 64, 64), (2, 37, 128), (3, 96, 192), (5, 17, 64), (8, 256, 320),
                  (2, 256, 704)]:
    x = jnp.asarray(rng.standard_normal((m, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, n)), jnp.float32)
    packed = ops.pack(w)
    assert packed.shape == (n // 64, k, 64)
    y = np.asarray(ops.skinny_matmul_packed_cpu(x, packed, isa=isa))
    np.testing.assert_array_equal(y, np.asarray(ops.skinny_matmul_cpu(x, w, isa=isa)))
  assert ops.pack(jnp.ones((8, 100), jnp.float32)) is None  # 100 columns: left unpacked


def test_packed_kernel_vmap_rules():
  rng = np.random.default_rng(1)
  w_HxKxN = jnp.asarray(rng.standard_normal((3, 64, 128)), jnp.float32)
  x_HxMxK = jnp.asarray(rng.standard_normal((3, 2, 64)), jnp.float32)
  packed = jax.vmap(ops.pack)(w_HxKxN)
  both = jax.vmap(ops.skinny_matmul_packed_cpu)(x_HxMxK, packed)  # one batched call
  np.testing.assert_array_equal(both, jax.vmap(ops.skinny_matmul_cpu)(x_HxMxK, w_HxKxN))
  shared = jax.vmap(lambda x: ops.skinny_matmul_packed_cpu(x, packed[0]))(x_HxMxK)
  np.testing.assert_array_equal(
      shared, jax.vmap(lambda x: ops.skinny_matmul_cpu(x, w_HxKxN[0]))(x_HxMxK))
  with pytest.raises(ValueError, match='want float32 x'):
    ops.skinny_matmul_packed_cpu(x_HxMxK[0], w_HxKxN[0])  # not packed


def _setup(**model):
  cfg = config_lib.build(tiny_config(model={
      'd_model': 64, 'vocab_size': 64, 'max_len': 48,
      'attention': {'n_heads': 4, 'n_kv_heads': 4}, **model})).model
  prompt = jnp.asarray(np.random.default_rng(0).integers(0, 64, (1, 6)), jnp.int32)
  params = nn.unbox(model_lib.make_model(cfg).init(jax.random.key(0), prompt))['params']
  # Perturbed weights, so greedy continuations vary and drafts are sometimes rejected.
  leaves, tdef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tdef, [x + 0.2 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])
  return cfg, {'params': params}, prompt


@pytest.mark.parametrize('model', [dict(mtp={'kind': 'parallel', 'n': 2}),
                                   dict(scan_layers=True)], ids=['mtp', 'scanned'])
def test_decoders_emit_the_same_tokens_from_packed_weights(model):
  cfg, variables, prompt = _setup(**model)
  if cfg.mtp.kind == 'parallel':  # the draft head copies the main head: it drafts
    # the token after next as the next one, right exactly where greedy repeats
    variables = {'params': {**variables['params'], 'heads_1': variables['params']['heads_0']}}
  packed = packed_weights.pack_weights(variables, cfg)
  leaves = jax.tree.leaves(packed[packed_weights.PACKED])
  assert leaves and all(x.shape[-1] == 64 for x in leaves)
  # Every float projection with a multiple of 64 outputs has its copy: q, k, v, out
  # (64 outputs each) per layer and head block.
  n_blocks = cfg.n_layers + (cfg.mtp.n - 1 if cfg.mtp.kind == 'parallel' else 0)
  n_packed = sum(x.shape[0] if cfg.scan_layers and x.ndim == 4 else 1 for x in leaves)
  assert n_packed >= 4 * n_blocks
  key = jax.random.key(0)
  kw = dict(model_cfg=cfg, max_new_tokens=12)
  plain = speculative.generate_plain(variables, prompt, key, **kw)
  np.testing.assert_array_equal(speculative.generate_plain(packed, prompt, key, **kw), plain)
  # The decoders do read the copies: zeroed copies (params untouched) change the tokens.
  zeroed = {**packed, packed_weights.PACKED: jax.tree.map(jnp.zeros_like,
                                                          packed[packed_weights.PACKED])}
  assert not np.array_equal(speculative.generate_plain(zeroed, prompt, key, **kw), plain)
  s = sampling.SamplingConfig(temperature=0.8, top_k=10)
  np.testing.assert_array_equal(
      sampling.generate(packed, prompt, key, sampling=s, **kw),
      sampling.generate(variables, prompt, key, sampling=s, **kw))
  if cfg.mtp.kind == 'parallel':
    out, stats = speculative.generate(packed, prompt, key, **kw)
    np.testing.assert_array_equal(out, plain)
    assert 1.0 < float(stats['accepted_per_forward'][0]) < 2.0  # accepts and rejects


def test_quantized_projections_and_the_xla_path_stay_unpacked(monkeypatch):
  cfg, variables, _ = _setup(linear={'kind': 'bitnet'})
  packed = packed_weights.pack_weights(variables, cfg)
  quantized = jax.tree_util.tree_flatten_with_path(packed.get(packed_weights.PACKED, {}))[0]
  assert not any('attention' in jax.tree_util.keystr(p) or 'ffn' in jax.tree_util.keystr(p)
                 for p, _ in quantized)
  cfg, variables, _ = _setup()
  monkeypatch.setenv('LATTICE_SKINNY_MATMUL', '0')
  assert packed_weights.pack_weights(variables, cfg) is variables
