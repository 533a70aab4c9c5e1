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


# (m, k, n): M 1..16, ragged K and N, 1 to 8 K splits (6 for the last).
GEMV_SHAPES = [(1, 64, 16), (1, 4096, 512), (2, 300, 200), (3, 1030, 130), (5, 2048, 40),
               (8, 130, 20), (16, 1024, 256), (1, 3072, 768)]


@pytest.mark.parametrize('m,k,n', GEMV_SHAPES)
def test_gemv_interpret_equals_reference(m, k, n):
  _, _, args = _operands(m, k, n, seed=k + m)
  want = tm.ternary_matmul_reference(*args, n)
  got = tm.ternary_gemv_pallas(*args, n, interpret=True)
  assert got.shape == (m, n) and got.dtype == jnp.float32
  np.testing.assert_array_equal(got, want)  # integer sums in float32: exact


def test_gemv_blocks_spread_the_weight_stream():
  from kernels.ternary_matmul import kernel
  # [1, 4096] x [4096, 4096]: 32 column blocks of 128 bytes, K split 8 ways (256
  # programs, each reading 128 packed rows x 128 bytes once).
  assert kernel.gemv_blocks(1024, 4096) == (128, 64, 8)
  # Short K is not split below _GEMV_MIN_SPLIT_ROWS packed rows a program.
  assert kernel.gemv_blocks(64, 4096)[2] == 1
  # Splits divide the K steps (no weight padding): 12 steps of 64 rows -> 6 splits.
  assert kernel.gemv_blocks(768, 768) == (128, 64, 6)
  # K = 11008 (Kq 2752 = 43 x 64): steps of 16 rows allow 4 splits (128 programs).
  assert kernel.gemv_blocks(2752, 4096) == (128, 16, 4)
  _, _, (x_q, sx, w_packed, sw) = _operands(17, 64, 24)
  with pytest.raises(ValueError, match='M must be 1..16'):
    tm.ternary_gemv_pallas(x_q, sx, w_packed, sw, 24, interpret=True)
  with pytest.raises(ValueError, match='block_n must be a power of two'):
    tm.ternary_gemv_pallas(x_q[:2], sx[:2], w_packed, sw, 24, block_n=48, interpret=True)
  # Model widths are read in place: no pad (a copy of the weight each call) of uint8.
  _, _, args = _operands(1, 11008, 384)  # 43 K steps of 64 rows
  jaxpr = jax.make_jaxpr(lambda *a: tm.ternary_gemv_pallas(*a, 384, interpret=True))(*args)
  inner = jaxpr.jaxpr.eqns[0].params['jaxpr']
  call, = [e for e in inner.eqns if e.primitive.name == 'pallas_call']
  assert call.invars[1] is inner.invars[2]  # the kernel reads the weight argument itself


@pytest.mark.parametrize('fn,m', [('ternary_gemv_pallas', 1), ('ternary_gemv_pallas', 3),
                                  ('ternary_matmul_pallas', 1)])
def test_pallas_kernels_lower_to_triton(fn, m):
  # Pallas lowers to Triton IR in Python, so a CUDA export on this CPU catches
  # lowering errors (block shapes, unsupported ops) before a GPU is lent.
  from unittest import mock
  from jax import export
  from kernels.ternary_matmul import kernel
  k, n = 4096, 4096
  specs = (jax.ShapeDtypeStruct((m, k), jnp.int8), jax.ShapeDtypeStruct((m, 1), jnp.float32),
           jax.ShapeDtypeStruct((k // 4, n), jnp.uint8))
  pallas_fn = getattr(kernel, fn)
  with mock.patch.object(jax, 'default_backend', lambda: 'gpu'):
    exported = export.export(
        jax.jit(lambda x, s, w: pallas_fn(x, s, w, 0.5, n)), platforms=['cuda'],
        disabled_checks=[export.DisabledSafetyCheck.custom_call('__gpu$xla.gpu.triton')],
    )(*specs)
  module = exported.mlir_module()
  assert '__gpu$xla.gpu.triton' in module
  if fn == 'ternary_gemv_pallas':
    assert 'grid_x = 32 : i32, grid_y = 8 : i32' in module  # gemv_blocks above


def test_gemv_triton_ir_adds_splits_atomically():
  # Interpret mode runs the grid one program at a time, so a plain (racy) store of
  # the K splits' sums would pass there; the Triton IR must hold one atomic add into
  # the output and no store. Reads the IR through Pallas's (private) lowering hook.
  from unittest import mock
  from jax import export
  from kernels.ternary_matmul import kernel
  try:
    from jax._src.pallas.triton import pallas_call_registration as registration
    lower = registration.lowering.lower_jaxpr_to_triton_module
  except (ImportError, AttributeError):
    pytest.skip("this jax's Pallas Triton lowering hook moved")
  modules = []

  def capture(*args, **kwargs):
    out = lower(*args, **kwargs)
    modules.append(out.module.operation.get_asm())
    return out

  k, n = 4096, 4096
  specs = (jax.ShapeDtypeStruct((1, k), jnp.int8), jax.ShapeDtypeStruct((1, 1), jnp.float32),
           jax.ShapeDtypeStruct((k // 4, n), jnp.uint8))
  with mock.patch.object(jax, 'default_backend', lambda: 'gpu'), \
       mock.patch.object(registration.lowering, 'lower_jaxpr_to_triton_module', capture):
    export.export(
        jax.jit(lambda x, s, w: kernel.ternary_gemv_pallas(x, s, w, 0.5, n)),
        platforms=['cuda'],
        disabled_checks=[export.DisabledSafetyCheck.custom_call('__gpu$xla.gpu.triton')],
    )(*specs)
  ir, = modules
  assert ir.count('tt.atomic_rmw fadd') == 1 and 'tt.store' not in ir
  assert ir.count('tt.dot') == 4  # one bf16 dot per code plane and K step


@pytest.mark.parametrize('m,x_value,code', [(1, -128, 1), (1, 127, 1), (1, -128, -1),
                                            (16, -128, 1)])
def test_gemv_exact_at_the_extremes(m, x_value, code):
  # |x @ (c + 1)| reaches 2 * 128 * K inside the kernel: at K = 32768 that is 2**23,
  # still exact in float32 (GEMV_MAX_K = 65536 is the bound). Codes are packed by hand.
  k, n = 32768, 16
  x_q = jnp.full((m, k), x_value, jnp.int8)
  digit = code + 1
  w_packed = jnp.full((k // 4, n), digit | digit << 2 | digit << 4 | digit << 6, jnp.uint8)
  sx, sw = jnp.full((m, 1), 0.75, jnp.float32), jnp.float32(0.37)
  want = tm.ternary_matmul_reference(x_q, sx, w_packed, sw, n)
  got = tm.ternary_gemv_pallas(x_q, sx, w_packed, sw, n, interpret=True)
  np.testing.assert_array_equal(np.asarray(got).view(np.int32),
                                np.asarray(want).view(np.int32))


def test_auto_takes_the_gemv_on_gpu_for_decoding_rows():
  from unittest import mock
  from kernels.ternary_matmul import kernel
  calls = []
  real = {name: getattr(kernel, name) for name in ('ternary_gemv_pallas',
                                                     'ternary_matmul_pallas')}

  def spy(name, label):
    def fn(*args, **kwargs):
      calls.append(label)
      return real[name](*args, **kwargs)
    return fn

  with mock.patch.object(jax, 'default_backend', lambda: 'gpu'), \
       mock.patch.object(kernel, 'ternary_gemv_pallas',
                         spy('ternary_gemv_pallas', 'gemv')), \
       mock.patch.object(kernel, 'ternary_matmul_pallas',
                         spy('ternary_matmul_pallas', 'tiled')):
    for m in (1, 16, 17):
      _, _, args = _operands(m, 64, 24, seed=m)
      got = tm.ternary_matmul(*args, 24, interpret=True)
      np.testing.assert_array_equal(got, tm.ternary_matmul_reference(*args, 24))
  assert calls == ['gemv', 'gemv', 'tiled']


@pytest.mark.parametrize('impl', ['auto', 'xla', 'reference', 'pallas', 'pallas_gemv',
                                  'native'])
def test_op_equals_bitnet_fake_quant(impl):
  if impl == 'native' and not (jax.default_backend() == 'cpu' and ternary_cpu.available()):
    pytest.skip('native CPU kernel not built or not on CPU')
  m = 6 if impl == 'pallas_gemv' else 24  # the GEMV takes M <= 16
  x_MxK, w_KxN, args = _operands(m, 96, 40, seed=3)
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


@pytest.mark.skipif(jax.default_backend() != 'gpu', reason='needs a GPU')
@pytest.mark.parametrize('m,k,n', GEMV_SHAPES)
def test_gemv_on_gpu_equals_reference(m, k, n):
  _, _, args = _operands(m, k, n, seed=k + m)
  want = tm.ternary_matmul_reference(*args, n)
  np.testing.assert_array_equal(tm.ternary_gemv_pallas(*args, n), want)
  np.testing.assert_array_equal(tm.ternary_matmul(*args, n), want)  # 'auto' -> GEMV
