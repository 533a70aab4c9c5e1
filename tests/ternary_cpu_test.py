"""kernels.ternary_cpu: the native kernel's integer dots are exact on every instruction
set this CPU runs, and its results equal the reference and the XLA path bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import ternary_cpu
from kernels import ternary_matmul as tm

pytestmark = pytest.mark.skipif(
    ternary_cpu.best_isa() is None or jax.default_backend() != 'cpu',
    reason='native CPU kernel not built (python setup.py build_ext --inplace)')

ISAS = [i for i in ('scalar', 'avx2', 'avx512') if ternary_cpu.supports(i)]
# (m, k, n): one row; ragged K and N (vector tails); M not a multiple of the 4-row
# block; enough work to split columns across the thread pool.
SHAPES = [(1, 64, 64), (3, 70, 50), (5, 130, 200), (2, 512, 333), (1, 1024, 640)]


def _codes(m, k, n, seed):
  rng = np.random.default_rng(seed)
  x_MxK = rng.integers(-128, 128, (m, k), dtype=np.int8)
  w_KxN = rng.integers(-1, 2, (k, n)).astype(np.float32)
  return x_MxK, w_KxN


@pytest.mark.parametrize('isa', ISAS)
@pytest.mark.parametrize('m,k,n', SHAPES)
def test_integer_dots_are_exact(isa, m, k, n):
  x_MxK, w_KxN = _codes(m, k, n, seed=k + n)
  w_packed, sw = tm.pack_weight(w_KxN)  # absmean of a {-1, 0, 1} matrix: codes = w
  np.testing.assert_array_equal(tm.unpack_weight(w_packed, k), w_KxN)
  ones = jnp.ones((m, 1), jnp.float32)
  got = ternary_cpu.ternary_matmul_cpu(jnp.asarray(x_MxK), ones, w_packed, 1.0, n, isa=isa)
  want = x_MxK.astype(np.int64) @ w_KxN.astype(np.int64)
  np.testing.assert_array_equal(np.asarray(got), want.astype(np.float32))


@pytest.mark.parametrize('isa', ISAS)
def test_extreme_codes_do_not_overflow(isa):
  # Every code +1 and every activation -128: the largest |partial sum| any path meets.
  m, k, n = 2, 4096, 96
  x_MxK = jnp.full((m, k), -128, jnp.int8)
  w_packed, _ = tm.pack_weight(jnp.ones((k, n)))
  got = ternary_cpu.ternary_matmul_cpu(x_MxK, jnp.ones((m, 1)), w_packed, 1.0, n, isa=isa)
  np.testing.assert_array_equal(np.asarray(got), np.full((m, n), -128.0 * k, np.float32))


@pytest.mark.parametrize('isa', ISAS)
def test_equals_reference_and_xla_bitwise(isa):
  m, k, n = 3, 200, 130
  kx, kw = jax.random.split(jax.random.key(0))
  args = (*tm.quantize_activation(jax.random.normal(kx, (m, k)) * 3.0),
          *tm.pack_weight(jax.random.normal(kw, (k, n)) * 0.02))
  got = np.asarray(ternary_cpu.ternary_matmul_cpu(*args, n, isa=isa))
  np.testing.assert_array_equal(got, tm.ternary_matmul_reference(*args, n))
  np.testing.assert_array_equal(got, tm.ternary_matmul(*args, n, impl='xla'))
  jitted = jax.jit(lambda *a: tm.ternary_matmul(*a, n, impl='native'))
  np.testing.assert_array_equal(got, jitted(*args))


def test_auto_takes_the_native_path_and_cpu_auto_overrides_it():
  if ternary_cpu.available():
    assert tm.cpu_path() == f'native-{ternary_cpu.best_isa()}'
  with tm.cpu_auto('xla'):
    assert tm.cpu_path() == 'xla-unpack'


def test_clear_errors():
  x_q, sx = jnp.zeros((1, 8), jnp.int8), jnp.ones((1, 1))
  w_packed, sw = tm.pack_weight(jnp.ones((8, 4)))
  with pytest.raises(ValueError, match='isa must be one of'):
    ternary_cpu.ternary_matmul_cpu(x_q, sx, w_packed, sw, 4, isa='neon')
  with pytest.raises(ValueError, match='impl must be native or xla'):
    with tm.cpu_auto('pallas'):
      pass
