"""kernels/skinny_cpu/attention.py: the native decode attention of a few query rows.

Checks it against float64 and against the XLA path (`lattice.nn.attention.
decode_attention`) on every instruction-set path, with grouped heads, a head
dimension that is not a multiple of 8 (the portable path), every visible-count
remainder and a fully masked row; that a row is bitwise the same alone and inside an
L-row call (what keeps plain and speculative decoding identical); vmap; bad operands;
and that cached attention uses it on CPU unless LATTICE_SKINNY_MATMUL=0.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.skinny_cpu import attention as native_attention
from kernels.skinny_cpu import ops
from lattice import config as config_lib
from lattice.nn import attention, transformer

from conftest import tiny_config

pytestmark = pytest.mark.skipif(ops.best_isa() is None,
                                reason='kernels/skinny_cpu is not built')
ISAS = [isa for isa in ('scalar', 'avx2', 'avx512') if ops.best_isa() and ops.supports(isa)]
# (B, L, H, K, S, Dh): one kv head per query head at the benchmark's sizes; grouped
# heads; Dh 12 (no 8-lane path); Dh 64; 6 rows (the AVX-512 path's outputs in a group
# of 4 rows and one of 2); 19 rows, a prefill (the AVX-512 path's row groups of 8, 8
# and 3).
SHAPES = [(1, 1, 16, 16, 162, 16), (2, 3, 8, 4, 50, 16), (2, 2, 6, 3, 21, 12),
          (1, 4, 4, 2, 33, 64), (1, 6, 4, 4, 40, 16), (1, 19, 4, 2, 45, 16)]


def _operands(b, l, h, k, s, dh, seed=0):
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (b, l, h, dh), jnp.float32)
  kc = jax.random.normal(keys[1], (b, k, s, dh), jnp.float32)
  vc = jax.random.normal(keys[2], (b, k, s, dh), jnp.float32)
  # Every remainder of the visible count mod 8, the first and the last position.
  pos = jax.random.randint(keys[3], (b, l), 0, s).at[0, 0].set(0).at[-1, -1].set(s - 1)
  return q, kc, vc, pos.astype(jnp.int32)


def _float64(q, kc, vc, pos):
  q, kc, vc, pos = (np.asarray(x, np.float64) for x in (q, kc, vc, pos))
  b, l, h, dh = q.shape
  g = h // kc.shape[1]
  out = np.zeros(q.shape)
  for i in range(b):
    for r in range(l):
      for j in range(h):
        n = int(pos[i, r]) + 1 if pos[i, r] >= 0 else kc.shape[2]
        qv = q[i, r, j] if pos[i, r] >= 0 else np.zeros(dh)
        logits = kc[i, j // g, :n] @ qv / np.sqrt(dh)
        p = np.exp(logits - logits.max())
        out[i, r, j] = (p / p.sum()) @ vc[i, j // g, :n]
  return out


@pytest.mark.parametrize('isa', ISAS)
def test_matches_float64_and_xla_and_rows_are_independent(isa):
  for shape in SHAPES:
    q, kc, vc, pos = _operands(*shape)
    out = np.asarray(native_attention.decode_attention_cpu(q, kc, vc, pos, isa=isa))
    np.testing.assert_allclose(out, _float64(q, kc, vc, pos), rtol=0, atol=2e-6)
    mask = jnp.arange(kc.shape[2])[None, None] <= pos[:, :, None]
    np.testing.assert_allclose(out, attention.decode_attention(q, kc, vc, mask),
                               rtol=0, atol=2e-6)
    alone = np.concatenate([np.asarray(native_attention.decode_attention_cpu(
        q[:, r:r + 1], kc, vc, pos[:, r:r + 1], isa=isa)) for r in range(q.shape[1])], 1)
    np.testing.assert_array_equal(out, alone)  # bitwise, whatever the row count


def test_fully_masked_row_averages_every_position():
  q, kc, vc, pos = _operands(1, 2, 4, 2, 9, 16)
  pos = pos.at[0, 1].set(-1)
  out = native_attention.decode_attention_cpu(q, kc, vc, pos)
  mask = jnp.arange(9)[None, None] <= pos[:, :, None]
  np.testing.assert_allclose(out, attention.decode_attention(q, kc, vc, mask),
                             rtol=0, atol=2e-6)
  np.testing.assert_allclose(out[0, 1, 0], vc[0, 0].mean(0), rtol=0, atol=2e-6)


def test_vmap_is_a_loop():
  q, kc, vc, pos = _operands(2, 2, 4, 2, 30, 16)
  qs, ks = jnp.stack([q, q * 2, q - 1]), jnp.stack([kc, kc + 1, -kc])
  f = native_attention.decode_attention_cpu
  np.testing.assert_array_equal(
      jax.vmap(f, (0, 0, None, None))(qs, ks, vc, pos),
      jnp.stack([f(a, b, vc, pos) for a, b in zip(qs, ks)]))


def test_bad_operands_raise():
  q, kc, vc, pos = _operands(1, 2, 4, 2, 9, 16)
  with pytest.raises(ValueError, match='multiple of K'):
    native_attention.decode_attention_cpu(q[:, :, :3], kc, vc, pos)
  with pytest.raises(ValueError, match='pos'):
    native_attention.decode_attention_cpu(q, kc, vc, pos[:, :1])
  with pytest.raises(ValueError, match='isa'):
    native_attention.decode_attention_cpu(q, kc, vc, pos, isa='sse9')


def _decode_hlo():
  """The lowered text of a 2-token decoding step of a tiny model (grouped heads)."""
  cfg = config_lib.build(tiny_config(model={'vocab_size': 64})).model
  model = transformer.Transformer(cfg, decode=True)
  cache = transformer.init_cache(model, 1)
  params = nn.unbox(transformer.Transformer(cfg).init(
      jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))['params']
  step = lambda p, c, t: model.apply({'params': p, 'cache': c}, t, mutable=['cache'])
  return jax.jit(step).lower(params, cache, jnp.zeros((1, 2), jnp.int32)).as_text()


def test_cached_attention_uses_the_kernel_on_cpu(monkeypatch):
  if not ops.available():
    pytest.skip('the kernel needs AVX2 + FMA')
  assert native_attention.use_for(jnp.zeros((1, 2, 4, 8)), jnp.zeros((1, 2, 16, 8)))
  assert native_attention.use_for(jnp.zeros((1, 40, 4, 8)), jnp.zeros((1, 2, 64, 8)))  # prefill
  assert 'lattice_decode_attention' in _decode_hlo()
  monkeypatch.setenv('LATTICE_SKINNY_MATMUL', '0')
  assert 'lattice_decode_attention' not in _decode_hlo()
