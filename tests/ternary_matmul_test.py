"""kernels.ternary_matmul: packed layout, kernel == reference, op == BitNet fake quant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import ternary_cpu
from kernels import ternary_matmul as tm
from lattice.quant import packing, ste


def _operands(m, k, n, seed=0):
  kx, kw = jax.random.split(jax.random.key(seed))
  x_MxK = jax.random.normal(kx, (m, k)) * 3.0
  w_KxN = jax.random.normal(kw, (k, n)) * 0.02
  return x_MxK, w_KxN, (*tm.quantize_activation(x_MxK), *tm.pack_weight(w_KxN))


def _fake_quant(x_MxK, w_KxN):
  # Full float32 matmul: the default on GPU (TF32/bf16 passes) is too coarse for 1e-5.
  return jnp.matmul(ste.int8_activation(x_MxK), ste.ternary_weight(w_KxN),
                    precision=jax.lax.Precision.HIGHEST)


def test_packed_layout_and_size():
  _, w_KxN, (_, _, w_packed, _) = _operands(4, 64, 24)
  assert w_packed.dtype == jnp.uint8 and w_packed.shape == (16, 24)
  assert w_packed.nbytes == 64 * 24 // 4
  codes_KxN, _ = ste.ternary_codes(w_KxN)
  np.testing.assert_array_equal(tm.unpack_weight(w_packed, 64), codes_KxN)
  # Byte [g, n] is packing.pack_ternary_2bit of w[4g:4g+4, n] (code i at bits 2i).
  np.testing.assert_array_equal(
      w_packed[3, 5], packing.pack_ternary_2bit(codes_KxN[12:16, 5]).data[0])


def test_pack_weight_pads_k_to_whole_bytes():
  _, w_KxN, (_, _, w_packed, _) = _operands(2, 10, 8)
  assert w_packed.shape == (3, 8)
  np.testing.assert_array_equal(tm.unpack_weight(w_packed, 10),
                                ste.ternary_codes(w_KxN)[0])


# (m, k, n, block caps): whole blocks, several K steps, and ragged M, K, N.
SHAPES = [(16, 64, 16, 16), (32, 256, 32, 16), (37, 70, 50, 16), (5, 130, 20, 32)]


@pytest.mark.parametrize('m,k,n,block', SHAPES)
def test_kernel_interpret_equals_reference(m, k, n, block):
  _, _, args = _operands(m, k, n, seed=m)
  want = tm.ternary_matmul_reference(*args, n)
  got = tm.ternary_matmul_pallas(*args, n, block_m=block, block_n=block,
                                 block_k4=block, interpret=True)
  assert got.shape == (m, n) and got.dtype == jnp.float32
  # Integer sums are exact in float32 here, so the results agree bit for bit.
  np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('impl', ['auto', 'xla', 'reference', 'pallas', 'native'])
def test_op_equals_bitnet_fake_quant(impl):
  if impl == 'native' and not (jax.default_backend() == 'cpu' and ternary_cpu.available()):
    pytest.skip('native CPU kernel not built or not on CPU')
  x_MxK, w_KxN, args = _operands(24, 96, 40, seed=3)
  got = tm.ternary_matmul(*args, 40, impl=impl)
  want = _fake_quant(x_MxK, w_KxN)
  # Fake quant rounds each dequantized product; tolerance scaled to the output size.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_op_flattens_leading_dims():
  x_BxLxK = jax.random.normal(jax.random.key(7), (2, 3, 32))
  w_KxN = jax.random.normal(jax.random.key(8), (32, 16))
  got = tm.ternary_matmul(*tm.quantize_activation(x_BxLxK), *tm.pack_weight(w_KxN), 16)
  assert got.shape == (2, 3, 16)
  want = _fake_quant(x_BxLxK, w_KxN)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_clear_errors():
  _, _, (x_q, sx, w_packed, sw) = _operands(4, 64, 24)
  with pytest.raises(ValueError, match='w_packed must be uint8'):
    tm.ternary_matmul(x_q, sx, w_packed, sw, 32)
  with pytest.raises(ValueError, match='x_int8 must be int8'):
    tm.ternary_matmul(x_q.astype(jnp.float32), sx, w_packed, sw, 24)
  with pytest.raises(ValueError, match='impl must be one of'):
    tm.ternary_matmul(x_q, sx, w_packed, sw, 24, impl='cuda')
  with pytest.raises(ValueError, match='block_n must be a power of two'):
    tm.ternary_matmul_pallas(x_q, sx, w_packed, sw, 24, block_n=24, interpret=True)


@pytest.mark.skipif(jax.default_backend() != 'gpu', reason='needs a GPU')
@pytest.mark.parametrize('m,k,n', [(64, 512, 256), (37, 70, 50), (256, 2048, 512)])
def test_kernel_on_gpu_equals_reference(m, k, n):
  _, _, args = _operands(m, k, n, seed=k)
  want = tm.ternary_matmul_reference(*args, n)
  got = tm.ternary_matmul_pallas(*args, n, interpret=False)
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(tm.ternary_matmul(*args, n), want)  # 'auto' -> kernel
