"""kernels.grouped_matmul: grouped_matmul and the fused grouped_ffn give the values
and gradients of jax.lax.ragged_dot for any group sizes (empty groups, one group
holding every row, rows past the sizes' sum)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.grouped_matmul import (grouped_ffn, grouped_ffn_reference, grouped_matmul,
                                    grouped_matmul_reference)
from kernels.grouped_matmul import ffn, native, ops, permute, tiles


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


# grouped_ffn: (rows, sizes, window, remainder tile levels, gated). Windows smaller
# than some groups (remainders in several tiles, the last one spilling into the next
# group's window); the default window; empty groups and sizes summing to fewer than
# the rows; a remainder tile moved back to end at row N; a window past every group
# (no remainder, window rows past N).
FFN_CASES = [(333, [17, 100, 3, 200], 32, (16, 8), True),
             (333, [17, 100, 3, 200], None, None, True),
             (50, [10, 0, 25, 0], 16, (16, 8), False),
             (40, [0, 31, 9], 8, (8,), True),
             (64, [64, 0, 0, 0], 256, None, True)]


NATIVE = pytest.mark.skipif(not native.available(),
                            reason='native grouped matmul not built / no scipy-openblas32')


@pytest.mark.parametrize('impl', ['windows', pytest.param('native', marks=NATIVE)])
@pytest.mark.parametrize('n,sizes,window,levels,gated', FFN_CASES)
def test_grouped_ffn_values_and_gradients_equal_ragged_dot(n, sizes, window, levels,
                                                            gated, impl):
  sizes_E = jnp.asarray(sizes, jnp.int32)
  E = len(sizes)
  ks = jax.random.split(jax.random.key(n), 4)
  x = jax.random.normal(ks[0], (n, 8))
  w0, wo = jax.random.normal(ks[1], (E, 8, 6)), jax.random.normal(ks[3], (E, 6, 8))
  w1 = jax.random.normal(ks[2], (E, 8, 6)) if gated else None
  got_fn = lambda x, w0, w1, wo: grouped_ffn(x, w0, w1, wo, sizes_E, jax.nn.silu,
                                             window=window, levels=levels, impl=impl)
  want_fn = lambda x, w0, w1, wo: grouped_ffn_reference(x, w0, w1, wo, sizes_E,
                                                        jax.nn.silu)
  np.testing.assert_allclose(jax.jit(got_fn)(x, w0, w1, wo), want_fn(x, w0, w1, wo),
                             atol=1e-4, rtol=1e-4)
  argnums = (0, 1, 2, 3) if gated else (0, 1, 3)
  grad = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), argnums))(
      x, w0, w1, wo)
  for got, want in zip(grad(got_fn), grad(want_fn)):
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)


def test_grouped_ffn_rules_and_errors():
  assert ffn.tile_levels(4096, 8) == (256, 128, 64, 32, 16)
  assert ffn.tile_levels(4096, 32) == (64, 32, 16)
  assert ffn.tile_levels(10, 64) == (32, 16)
  assert ffn.window_rows(4096, 32) == 128 and ffn.window_rows(4000, 32) == 112
  assert ffn.window_rows(40, 8) == 16
  assert tiles.check_levels((64, 32, 16), 40) == (32, 16)
  assert tiles.check_levels((16,), 10) == (10,)
  x, w, s = jnp.zeros((4, 3)), jnp.zeros((2, 3, 5)), jnp.zeros((2,), jnp.int32)
  with pytest.raises(ValueError, match='want x'):
    grouped_ffn(x, w, w, jnp.zeros((2, 3, 5)), s, jax.nn.silu)
  with pytest.raises(ValueError, match='sizes must be'):
    grouped_ffn(x, w, w, jnp.zeros((2, 5, 3)), s[:1], jax.nn.silu)
  with pytest.raises(ValueError, match='share one dtype'):
    grouped_ffn(x.astype(jnp.bfloat16), w, w, jnp.zeros((2, 5, 3)), s, jax.nn.silu)
  with pytest.raises(ValueError, match='must not exceed the window'):
    grouped_ffn(x, w, w, jnp.zeros((2, 5, 3)), s, jax.nn.silu, window=16, levels=(32,))


@NATIVE
@pytest.mark.parametrize('gemm', ['openblas', 'avx2', 'avx512'])
def test_native_grouped_products_equal_ragged_dot_and_einsum(gemm):
  # The products of the native kernel one by one, with an empty group, rows
  # past the sizes' sum (0) and a group larger than one row chunk (256 rows), on each
  # products' code (capped at what the CPU runs).
  native.set_moe_gemm(gemm)
  try:
    _check_native_grouped_products()
  finally:
    native.set_moe_gemm(None)


def _check_native_grouped_products():
  sizes_E = jnp.asarray([300, 0, 7, 40], jnp.int32)
  n, i, o = 360, 12, 5
  ks = jax.random.split(jax.random.key(3), 3)
  x_NxI = jax.random.normal(ks[0], (n, i))
  w_ExIxO = jax.random.normal(ks[1], (4, i, o))
  g_NxO = jax.random.normal(ks[2], (n, o))
  np.testing.assert_allclose(native.gmm(x_NxI, w_ExIxO, sizes_E),
                             grouped_matmul_reference(x_NxI, w_ExIxO, sizes_E),
                             atol=1e-4, rtol=1e-4)
  w_ExOxI = jnp.swapaxes(w_ExIxO, 1, 2)
  np.testing.assert_allclose(native.gmm_t(g_NxO, w_ExIxO, sizes_E),
                             grouped_matmul_reference(g_NxO, w_ExOxI, sizes_E),
                             atol=1e-4, rtol=1e-4)
  h_NxO = jax.random.normal(jax.random.key(4), (n, o))
  np.testing.assert_allclose(
      native.gmm_t2(g_NxO, w_ExIxO, h_NxO, 2 * w_ExIxO, sizes_E),
      grouped_matmul_reference(g_NxO + 2 * h_NxO, w_ExOxI, sizes_E), atol=1e-4, rtol=1e-4)
  group_N = jnp.repeat(jnp.arange(4), sizes_E, total_repeat_length=n)
  live_N = jnp.arange(n) < jnp.sum(sizes_E)
  onehot_NxE = jax.nn.one_hot(group_N, 4) * live_N[:, None]
  want = jnp.einsum('ne,ni,no->eio', onehot_NxE, x_NxI, g_NxO)
  np.testing.assert_allclose(native.tgmm(x_NxI, g_NxO, sizes_E), want, atol=1e-4,
                             rtol=1e-4)


@NATIVE
def test_native_is_the_auto_path_for_float32_and_agrees_with_windows():
  sizes_E = jnp.asarray([40, 3, 0, 21], jnp.int32)
  ks = jax.random.split(jax.random.key(5), 4)
  x = jax.random.normal(ks[0], (64, 16))
  w0, w1 = jax.random.normal(ks[1], (4, 16, 8)), jax.random.normal(ks[2], (4, 16, 8))
  wo = jax.random.normal(ks[3], (4, 8, 16))
  assert ffn.native_applies(jnp.float32) and not ffn.native_applies(jnp.bfloat16)
  run = lambda impl: jax.jit(jax.value_and_grad(
      lambda *a: jnp.sum(jnp.sin(grouped_ffn(*a, sizes_E, jax.nn.silu, impl=impl))),
      (0, 1, 2, 3)))(x, w0, w1, wo)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-3),
               run('auto'), run('windows'))
  with pytest.raises(ValueError, match='impl must be'):
    grouped_ffn(x, w0, w1, wo, sizes_E, jax.nn.silu, impl='fast')
  with pytest.raises(ValueError, match='takes float32'):
    b = lambda a: a.astype(jnp.bfloat16)
    grouped_ffn(b(x), b(w0), b(w1), b(wo), sizes_E, jax.nn.silu, impl='native')


@NATIVE
def test_native_fused_swiglu_equals_ragged_dot_on_every_code_path():
  # The fused SwiGLU kernels' elementwise code (portable, AVX2, AVX-512: each the CPU
  # runs) against ragged_dot's values and gradients.
  sizes_E = jnp.asarray([37, 0, 300, 5], jnp.int32)
  ks = jax.random.split(jax.random.key(7), 4)
  x = 2 * jax.random.normal(ks[0], (350, 16))
  w0, w1 = jax.random.normal(ks[1], (4, 16, 24)), jax.random.normal(ks[2], (4, 16, 24))
  wo = jax.random.normal(ks[3], (4, 24, 16)) / 4
  loss = lambda f: jax.jit(jax.value_and_grad(
      lambda *a: jnp.sum(jnp.sin(f(*a, sizes_E, jax.nn.silu))), (0, 1, 2, 3)))
  want = loss(grouped_ffn_reference)(x, w0, w1, wo)
  got_fn = loss(native.grouped_ffn_native)
  paths = set()
  try:
    for gemm in ('openblas', 'avx512'):  # the products on sgemm and on small_gemm.h
      native.set_moe_gemm(gemm)
      for isa in (1, 2, 3):
        paths.add(native.set_isa(isa))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-3, rtol=2e-3),
                     got_fn(x, w0, w1, wo), want)
  finally:
    native.set_isa(0)
    native.set_moe_gemm(None)
  assert 1 in paths


def test_openblas_coretype_rule(monkeypatch):
  # SkylakeX on a CPU with its AVX-512 subsets, OpenBLAS's own choice elsewhere, and
  # LATTICE_OPENBLAS_CORETYPE wins ('' = OpenBLAS's own choice).
  monkeypatch.delenv('LATTICE_OPENBLAS_CORETYPE', raising=False)
  monkeypatch.setattr(native, '_cpu_flags', lambda: set(native._SKYLAKEX_FLAGS) | {'avx2'})
  assert native.openblas_coretype() == 'SkylakeX'
  monkeypatch.setattr(native, '_cpu_flags', lambda: {'avx2', 'fma', 'avx512f'})
  assert native.openblas_coretype() is None
  monkeypatch.setenv('LATTICE_OPENBLAS_CORETYPE', 'Haswell')
  assert native.openblas_coretype() == 'Haswell'
  monkeypatch.setenv('LATTICE_OPENBLAS_CORETYPE', '')
  assert native.openblas_coretype() is None


@NATIVE
def test_openblas_loaded_with_the_chosen_kernels():
  want = native.openblas_coretype()
  got = native.openblas_corename()
  assert isinstance(got, str) and got
  if want is not None and 'scipy_openblas32' not in __import__('sys').modules:
    assert got.lower() == want.lower()


@NATIVE
def test_openblas_packing_buffers_prefaulted_at_load():
  # One buffer slot per concurrent caller (the task loop's threads), found among the new
  # anonymous mappings (two side by side are one) and mapped, its MiB counted
  # (native.prefault_openblas_buffers). On Linux only
  # (it reads /proc/self/maps); skipped with the A/B switch off.
  import os
  if os.environ.get('LATTICE_OPENBLAS_PREFAULT') == '0' or not os.path.exists('/proc/self/maps'):
    pytest.skip('prefault off / no /proc')
  got = native.openblas_prefaulted()
  assert got is not None and 16 <= got <= 64 * len(os.sched_getaffinity(0))  # MiB
  # the products are still right after it
  x = np.arange(12, dtype=np.float32).reshape(3, 4)
  w = np.ones((4, 2), np.float32)
  np.testing.assert_allclose(np.asarray(native.matmul(jnp.asarray(x), jnp.asarray(w))), x @ w)


@NATIVE
def test_native_row_moves_equal_xla_moves():
  # The native token gather and gate-weighted combine (values and VJPs for x, gate and
  # the experts' weights) against the XLA gathers and einsum, with uneven loads and an
  # empty expert (no token picks expert 4), through ragged_dot.
  from lattice.moe import dispatch
  T, K, E, D = 50, 3, 5, 16
  ks = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(ks[0], (T, D))
  idx = jax.random.randint(ks[1], (T, K), 0, E - 1).at[:, 0].set(0)
  gate = jax.random.uniform(ks[2], (T, K))
  w = jax.random.normal(ks[3], (E, D, D))
  ffn = lambda w, x, sizes: jax.lax.ragged_dot(x, w, sizes)

  def run(native_moves):
    loss = lambda x, g, w: jnp.sum(jnp.sin(dispatch.dispatch_ragged(
        x, idx, g, w, ffn, E, native_moves=native_moves)[0]))
    return jax.jit(jax.value_and_grad(loss, (0, 1, 2)))(x, gate, w)

  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5),
               run(True), run(False))


@NATIVE
@pytest.mark.parametrize('t,k,e,d,f', [(50, 3, 5, 16, 24), (300, 2, 4, 32, 20),
                                       (1000, 1, 3, 8, 8), (7, 1, 3, 8, 8)])
def test_fused_moe_swiglu_equals_gather_ffn_combine(t, k, e, d, f):
  # moe_cpu.cc's fused experts (values, and gradients for x, gate and the three
  # weights) against XLA's gather, the reference FFN and the einsum combine: uneven
  # loads, an empty expert (no token picks the last), experts with more rows than
  # one block (kRows = 256), K = 1 with one expert holding every row but the last
  # expert's none (its backward cut across threads, partial weight gradients added).
  from kernels.grouped_matmul import moe
  from lattice.moe import dispatch
  ks = jax.random.split(jax.random.key(t), 6)
  x = jax.random.normal(ks[0], (t, d))
  idx = jax.random.randint(ks[1], (t, k), 0, e - 1).at[:, 0].set(0)
  gate = jax.random.uniform(ks[2], (t, k))
  w = {'wi_0': jax.random.normal(ks[3], (e, d, f)) / 3,
       'wi_1': jax.random.normal(ks[4], (e, d, f)) / 3,
       'wo': jax.random.normal(ks[5], (e, f, d)) / 3}
  ref = lambda w, x, sizes: grouped_ffn_reference(x, w['wi_0'], w['wi_1'], w['wo'], sizes,
                                                  jax.nn.silu)
  fused = lambda x, order, inv, gate, w, sizes: moe.moe_swiglu(
      x, order, inv, gate, w['wi_0'], w['wi_1'], w['wo'], sizes)

  def run(use_fused):
    if use_fused:
      f_ = lambda x, g, w: dispatch.dispatch_fused(x, idx, g, w, fused, e)[0]
    else:
      f_ = lambda x, g, w: dispatch.dispatch_ragged(x, idx, g, w, ref, e)[0]
    return jax.jit(jax.value_and_grad(lambda x, g, w: jnp.sum(jnp.sin(f_(x, g, w))),
                                      (0, 1, 2)))(x, gate, w)

  want = run(False)
  try:  # every elementwise code path (portable, AVX2, AVX-512) this CPU runs, and every
    # products' code (OpenBLAS's sgemm; small_gemm.h's AVX2 and AVX-512, capped at the CPU)
    for gemm in ('openblas', 'avx2', 'avx512'):
      native.set_moe_gemm(gemm)
      for isa in (1, 2, 3):
        native.set_isa(isa)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-4, rtol=2e-4),
                     run(True), want)
  finally:
    native.set_isa(0)
    native.set_moe_gemm(None)


@NATIVE
def test_native_counting_sort_equals_argsort():
  # Stable: ties keep assignment order, as jnp.argsort(stable=True); an empty expert.
  idx = jax.random.randint(jax.random.key(3), (40, 3), 0, 6)
  order, inv, counts = permute.sort_assignments(idx, 7)
  want = jnp.argsort(idx.reshape(-1), stable=True)
  np.testing.assert_array_equal(order, want)
  np.testing.assert_array_equal(inv[order], np.arange(120))
  np.testing.assert_array_equal(counts, jnp.bincount(idx.reshape(-1), length=7))
  assert int(counts[6]) == 0


@NATIVE
@pytest.mark.parametrize('i', [24, 200])
def test_native_matmul_equals_dot(i):
  # The MoE router's product through the kernel's sgemm: values and both gradients
  # (at i = 200 the weight gradient, one narrow group, is also cut by output rows).
  x = jax.random.normal(jax.random.key(8), (300, i))
  w = jax.random.normal(jax.random.key(9), (i, 5))
  run = lambda f: jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))),
                                             (0, 1)))(x, w)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
               run(native.matmul), run(jnp.dot))


@NATIVE
def test_native_top_k_indices_equal_lax_top_k():
  # IEEE total order (NaN above inf, -NaN below -inf, +0 above -0), ties to the lower
  # index, and random rows with many ties.
  nan, inf = jnp.nan, jnp.inf
  x = jnp.array([[1.0, nan, 3.0, 3.0, -inf, inf], [0., 0., 0., -0., 0., 1.],
                 [-nan, -inf, -1., -1., 2., 2.]])
  r = jnp.round(jax.random.normal(jax.random.key(0), (500, 32)) * 2) / 2
  for a, ks in ((x, (1, 2, 3, 6)), (-x, (1, 3, 6)), (r, (1, 2, 4))):
    for k in ks:
      np.testing.assert_array_equal(permute.top_k_indices(a, k), jax.lax.top_k(a, k)[1])
  with pytest.raises(ValueError, match='k = 7'):
    permute.top_k_indices(x, 7)


@NATIVE
def test_small_gemm_products_equal_numpy():
  # small_gemm.h's three forms (the fused MoE kernel's products) on each instruction set
  # this CPU runs, against float64 numpy: row counts that leave every tile height
  # (12/8/4/2/1 on AVX-512: 23 = 12 + 8 + 2 + 1; 6/2/1 on AVX2), column counts with
  # masked strips, K past one 256-row block and K = 0, strides wider than the rows,
  # beta 0 and 1; the columns between n and the stride stay untouched.
  import ctypes
  f = native._library().LatticeSmallGemm
  f.restype = ctypes.c_int32
  f.argtypes = [ctypes.c_int32] * 2 + [ctypes.c_int64] * 3 + [
      ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
      ctypes.c_int64, ctypes.c_int32]
  isas = [isa for isa, name in ((2, 'avx2'), (3, 'avx512'))
          if native.set_moe_gemm(name) == name]
  native.set_moe_gemm(None)
  if not isas:
    pytest.skip('the CPU has neither AVX2 nor AVX-512')
  rng = np.random.default_rng(0)
  for isa in isas:
    for m, n, k in [(1, 1, 1), (27, 70, 300), (12, 32, 256), (13, 33, 17), (40, 5, 0),
                    (3, 48, 513), (7, 9, 8), (23, 40, 64), (11, 17, 30)]:
      for form in range(3):
        for acc in (0, 1):
          a = rng.standard_normal((k, m + 3) if form == 2 else (m, k + 3), np.float32)
          b = rng.standard_normal((n, k + 2) if form == 1 else (k, n + 2), np.float32)
          c = rng.standard_normal((m, n + 5), np.float32)
          a_mk = (a[:, :m].T if form == 2 else a[:, :k]).astype(np.float64)
          b_kn = (b[:, :k].T if form == 1 else b[:, :n]).astype(np.float64)
          want = c.astype(np.float64).copy()
          want[:, :n] = a_mk @ b_kn + (want[:, :n] if acc else 0)
          assert f(isa, form, m, n, k, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1],
                   c.ctypes.data, c.shape[1], acc) == 1
          np.testing.assert_allclose(
              c, want, rtol=1e-4, atol=1e-4 * np.sqrt(k + 1),
              err_msg=f'isa {isa} form {form} m {m} n {n} k {k} acc {acc}')
