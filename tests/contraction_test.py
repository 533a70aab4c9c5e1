"""`contraction.contract` equals dot_general (values and autodiff gradients), and on
CPU its backward has none of the activation-gradient transposes autodiff's had."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice.nn import contraction


def _dot(x, w, n_in):
  return jax.lax.dot_general(
      x, w, ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ())))


@pytest.mark.parametrize('x_shape,w_shape,n_in,dtype', [
    ((2, 5, 8), (8, 3, 4), 1, jnp.float32),      # D -> (H, Dh), like the query
    ((2, 5, 3, 4), (3, 4, 8), 2, jnp.float32),   # (H, Dh) -> D, like the out proj
    ((7, 8), (8, 6), 1, jnp.bfloat16),
])
def test_equals_dot_general_and_its_gradients(x_shape, w_shape, n_in, dtype):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, x_shape, dtype)
  w = jax.random.normal(kw, w_shape, dtype)
  out_shape = x_shape[:len(x_shape) - n_in] + w_shape[n_in:]
  g = jax.random.normal(kg, out_shape, jnp.float32)
  loss = lambda f: lambda x, w: jnp.sum(f(x, w, n_in).astype(jnp.float32) * g)
  tol = (dict(atol=1e-5, rtol=1e-5) if dtype == jnp.float32
         else dict(atol=0.1, rtol=0.02))
  np.testing.assert_allclose(np.asarray(contraction.contract(x, w, n_in), np.float32),
                             np.asarray(_dot(x, w, n_in), np.float32), **tol)
  mine = jax.grad(loss(contraction.contract), argnums=(0, 1))(x, w)
  ref = jax.grad(loss(_dot), argnums=(0, 1))(x, w)
  for a, b in zip(mine, ref):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               **tol)


def _ffn_grad_hlo(dense):
  """Compiled HLO of a SwiGLU FFN's gradient (B*L = 512 tokens, D 32, F 96)."""
  ks = jax.random.split(jax.random.key(1), 5)
  x = jax.random.normal(ks[0], (4, 128, 32))
  w0, w1 = (jax.random.normal(k, (32, 96)) for k in ks[1:3])
  w2 = jax.random.normal(ks[3], (96, 32))
  u = jax.random.normal(ks[4], (4, 128, 32))

  def loss(x, w0, w1, w2):
    h = jax.nn.silu(dense(x, w0, 1)) * dense(x, w1, 1)
    return jnp.sum(dense(h, w2, 1) * u)
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).lower(x, w0, w1, w2).compile(
  ).as_text()


@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='an XLA:CPU layout property')
def test_cpu_backward_does_not_transpose_ffn_gradients():
  # The [F, B, L]-shaped transposes are what made autodiff's backward slow on CPU;
  # the control shows XLA still makes them for plain dot_general, so this can fail.
  pattern = r'= f32\[([\d,]+)\]\{[\d,]+\} transpose\('
  big = lambda hlo: [s for s in re.findall(pattern, hlo)
                     if np.prod([int(d) for d in s.split(',')]) >= 96 * 512]
  assert big(_ffn_grad_hlo(_dot))
  assert not big(_ffn_grad_hlo(contraction.contract))
