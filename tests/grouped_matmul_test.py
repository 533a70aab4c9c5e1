"""kernels.grouped_matmul: values and gradients equal jax.lax.ragged_dot's for any
group sizes (empty groups, one group holding every row, rows past the sizes' sum)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.grouped_matmul import grouped_matmul, grouped_matmul_reference
from kernels.grouped_matmul import ops


@pytest.fixture(autouse=True)
def _exact_matmuls():
  with jax.default_matmul_precision('highest'):
    yield


# (rows, sizes): whole big tiles plus remainders and an empty group; one group
# holding every row; empty groups and sizes summing to fewer than the rows.
CASES = [(300, [130, 0, 1, 169]), (64, [64, 0, 0, 0]), (50, [10, 0, 25, 0])]


@pytest.mark.parametrize('n,sizes', CASES)
def test_values_and_gradients_equal_ragged_dot(n, sizes):
  sizes_E = jnp.asarray(sizes, jnp.int32)
  kx, kw = jax.random.split(jax.random.key(n))
  x_NxI = jax.random.normal(kx, (n, 8))
  w_ExIxO = jax.random.normal(kw, (len(sizes), 8, 6))
  got_fn = lambda x, w: grouped_matmul(x, w, sizes_E, big=32, small=8)
  want_fn = lambda x, w: grouped_matmul_reference(x, w, sizes_E)
  np.testing.assert_allclose(got_fn(x_NxI, w_ExIxO), want_fn(x_NxI, w_ExIxO),
                             atol=1e-5, rtol=1e-5)
  grad = lambda f: jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), (0, 1))(x_NxI, w_ExIxO)
  for got, want in zip(grad(jax.jit(got_fn)), grad(want_fn)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_big_tile_rule():
  assert ops.big_tile_rows(4096, 8) == 128
  assert ops.big_tile_rows(4096, 32) == 64
  assert ops.big_tile_rows(100, 32) == 32


def test_clear_errors():
  with pytest.raises(ValueError, match='sizes must be'):
    grouped_matmul(jnp.zeros((4, 3)), jnp.zeros((2, 3, 5)), jnp.zeros((3,), jnp.int32))
  with pytest.raises(ValueError, match='want x'):
    grouped_matmul(jnp.zeros((4, 2)), jnp.zeros((2, 3, 5)), jnp.zeros((2,), jnp.int32))
