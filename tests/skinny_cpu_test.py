"""kernels/skinny_cpu: the native few-row float32 matmul that decoding's projections use.

Checks the product against float64 on every instruction-set path, that a row's result
is bitwise the same alone and inside a larger call (what makes speculative and plain
decoding compute identical logits), the vmap rules, and that lattice.nn.contraction
routes decode-sized products to it and training-sized ones to XLA.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.skinny_cpu import ops
from lattice.nn import contraction

pytestmark = pytest.mark.skipif(ops.best_isa() is None,
                                reason='kernels/skinny_cpu is not built')
ISAS = [isa for isa in ('scalar', 'avx2', 'avx512') if ops.best_isa() and ops.supports(isa)]
# The last shape has >= 256 KiB of weights, so its columns are split across the
# thread pool (kernels/column_chunks.h), with a scalar tail of 13 columns.
SHAPES = [(1, 64, 64), (4, 64, 200), (3, 37, 131), (8, 96, 320), (5, 100, 70),
          (2, 256, 333)]


def _operands(m, k, n):
  x = jax.random.normal(jax.random.key(m * 1000 + k), (m, k), jnp.float32)
  w = jax.random.normal(jax.random.key(n), (k, n), jnp.float32)
  return x, w


@pytest.mark.parametrize('isa', ISAS)
def test_matches_float64_and_rows_are_independent(isa):
  for m, k, n in SHAPES:
    x, w = _operands(m, k, n)
    y = np.asarray(ops.skinny_matmul_cpu(x, w, isa=isa))
    ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-4 * np.sqrt(k))
    alone = np.concatenate([np.asarray(ops.skinny_matmul_cpu(x[i:i + 1], w, isa=isa))
                            for i in range(m)])
    np.testing.assert_array_equal(y, alone)  # bitwise, whatever the row count


def test_every_isa_rounds_the_same():
  x, w = _operands(5, 100, 70)
  outs = [np.asarray(ops.skinny_matmul_cpu(x, w, isa=isa)) for isa in ISAS]
  for out in outs[1:]:
    np.testing.assert_array_equal(out, outs[0])


def test_vmap_rules():
  h, m, k, n = 3, 4, 64, 96
  x = jax.random.normal(jax.random.key(1), (h, m, k))
  w = jax.random.normal(jax.random.key(2), (h, k, n))
  f = ops.skinny_matmul_cpu
  loop = lambda xs, ws: jnp.stack([f(a, b) for a, b in zip(xs, ws)])
  np.testing.assert_array_equal(jax.vmap(f)(x, w), loop(x, w))
  np.testing.assert_array_equal(jax.vmap(f, (0, None))(x, w[0]), loop(x, [w[0]] * h))
  np.testing.assert_array_equal(jax.vmap(f, (None, 0))(x[0], w), loop([x[0]] * h, w))
  x2, w2 = jnp.stack([x, x + 1]), jnp.stack([w, w * 2])
  np.testing.assert_array_equal(jax.vmap(jax.vmap(f))(x2, w2),
                                jnp.stack([loop(x2[i], w2[i]) for i in range(2)]))
  # Batched weights: one custom call, no per-head loop.
  assert jax.jit(jax.vmap(f)).lower(x, w).as_text().count('custom_call') == 1


def test_bad_operands_raise():
  with pytest.raises(ValueError, match='isa must be one of'):
    ops.skinny_matmul_cpu(jnp.ones((1, 4)), jnp.ones((4, 4)), isa='neon')
  with pytest.raises(ValueError, match='float32 x'):
    ops.skinny_matmul_cpu(jnp.ones((1, 4)), jnp.ones((5, 4)))


def test_contraction_routes_decode_rows_to_the_kernel(monkeypatch):
  w = jax.random.normal(jax.random.key(3), (64, 4, 16))  # D -> (H, Dh), as a q projection
  few = jax.random.normal(jax.random.key(4), (1, 4, 64))
  many = jax.random.normal(jax.random.key(5), (2, 16, 64))
  hlo = lambda x: jax.jit(lambda a, b: contraction.contract(a, b, 1)).lower(x, w).as_text()
  assert 'lattice_skinny_matmul' in hlo(few)
  assert 'lattice_skinny_matmul' not in hlo(many)
  # With decoding's packed copy, a prefill's rows (up to MAX_PACKED_ROWS) go there too.
  w_packed = contraction.pack(w, 1)
  hlo_packed = lambda x: jax.jit(lambda a, b, c: contraction.contract_packed(
      a, b, c, 1)).lower(x, w, w_packed).as_text()
  assert 'lattice_skinny_matmul_packed' in hlo_packed(many)
  lots = jnp.zeros((1, ops.MAX_PACKED_ROWS + 1, 64))
  assert 'lattice_skinny_matmul' not in hlo_packed(lots)
  np.testing.assert_allclose(contraction.contract_packed(many, w, w_packed, 1),
                             jax.lax.dot_general(many, w, (((2,), (0,)), ((), ()))),
                             rtol=1e-5, atol=1e-5)
  ref = jax.lax.dot_general(few, w, (((2,), (0,)), ((), ())))
  np.testing.assert_allclose(contraction.contract(few, w, 1), ref, rtol=1e-5, atol=1e-5)
  monkeypatch.setenv('LATTICE_SKINNY_MATMUL', '0')
  assert 'lattice_skinny_matmul' not in hlo(few)
  # Gradients still flow (the backward is contraction's two 2-D matmuls).
  g = jax.grad(lambda a: jnp.sum(contraction.contract(a, w, 1) ** 2))(few)
  monkeypatch.setenv('LATTICE_SKINNY_MATMUL', '1')
  g2 = jax.grad(lambda a: jnp.sum(contraction.contract(a, w, 1) ** 2))(few)
  np.testing.assert_allclose(g, g2, rtol=1e-5, atol=1e-5)
