"""NanoQuant compression and the fast Hadamard transform's cost."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.nn import transformer
from lattice.quant import nanoquant as nq
from lattice.quant import quest


def test_rank_follows_the_bit_budget_with_scales_counted():
  # (r + 16)(K + N) = bits K N: 128 x 384 at 1 bit -> r = 80, exactly 1 bit/weight.
  assert nq.rank_for(1.0, 128, 384) == 80
  assert nq.bits_per_weight(80, 128, 384) == pytest.approx(1.0)
  assert nq.rank_for(0.55, 128, 384) == 32 and nq.rank_for(0.55, 128, 384, 32) == 32
  assert nq.rank_for(0.8, 128, 384, 32) == 32  # the paper's multiple of 32
  for bits in (1.0, 0.8, 0.55):
    r = nq.rank_for(bits, 128, 384)
    assert nq.bits_per_weight(r, 128, 384) <= bits + 1e-9


def _trained_like(k, n, seed):
  """A kernel with a decaying spectrum and outlier rows (as trained projections have)
  and uneven input-feature RMS d (lognormal, a few features 10x the rest)."""
  rng = np.random.default_rng(seed)
  a = np.linalg.qr(rng.normal(size=(k, k)))[0]
  b = np.linalg.qr(rng.normal(size=(n, n)))[0]
  s = 1.0 / np.sqrt(1.0 + np.arange(min(k, n)))
  w = (a[:, :s.size] * s) @ b[:, :s.size].T + 0.02 * rng.normal(size=(k, n))
  d = np.exp(0.7 * rng.normal(size=k))
  d[rng.choice(k, 3, replace=False)] *= 10.0
  return w, d


def _error(w, d, factors):
  u, v, s_in, s_out = factors
  return nq.weighted_error(w, d, nq.signs(u) @ nq.signs(v).T, s_in, s_out)


@pytest.mark.parametrize('bits', [1.0, 0.8, 0.55])
def test_admm_beats_sign_svd_on_the_activation_weighted_error(bits):
  # The paper's claim at the factor level, at the ranks the budgets give (128 x 128:
  # r = 48 / 32 / 16). The old ADMM (SVD start, fixed rho, row-scaled-sign
  # projections, 40 iterations) lost to SVD here at 0.55 bits, and on the quick
  # model's real projections at every budget.
  w, d = _trained_like(128, 128, 0)
  r = nq.rank_for(bits, 128, 128)
  admm = _error(w, d, nq.init_factors(w, d, r, 'admm'))
  svd = _error(w, d, nq.init_factors(w, d, r, 'svd'))
  assert admm < svd - 0.05, (admm, svd)


def test_admm_keeps_its_best_iterate_and_improves_on_its_start():
  w, d = _trained_like(64, 96, 1)
  m = d[:, None] * w
  u, v, a, b, trace = nq.admm_init(m, 16, iters=60, eval_every=5)
  errs = [e for _, e in trace]
  assert [i for i, _ in trace] == list(range(5, 61, 5))
  assert errs[-1] < errs[0]  # ADMM lowers the objective it minimises
  got = nq.weighted_error(m, np.ones(64), nq.signs(u) @ nq.signs(v).T, a, b)
  assert got == pytest.approx(min(errs), rel=1e-9)  # the returned point is the best


@pytest.mark.parametrize('iters', [1, 400])
def test_admm_init_never_returns_worse_than_the_svd_start(iters):
  # One iteration from a random start is far from the SVD point: init_factors must
  # then fall back to it (fails if the comparison with the SVD start is removed).
  w, d = _trained_like(64, 96, 2)
  svd = _error(w, d, nq.init_factors(w, d, 16, 'svd'))
  admm = _error(w, d, nq.init_factors(w, d, 16, 'admm', admm_iters=iters))
  assert admm <= svd + 1e-12
  u, v, a, b, _ = nq.admm_init(d[:, None] * w, 16, iters=iters)
  raw = nq.weighted_error(w, d, nq.signs(u) @ nq.signs(v).T, a / d, b)
  if iters == 1:
    assert raw > svd  # the case the fallback exists for


def test_fit_scales_recovers_planted_scales():
  rng = np.random.default_rng(1)
  b = np.where(rng.normal(size=(16, 12)) >= 0, 1.0, -1.0)
  s_in, s_out = rng.uniform(0.5, 2, 16), rng.uniform(0.5, 2, 12)
  got_in, got_out = nq.fit_scales(s_in[:, None] * b * s_out, b, np.ones(16), iters=50)
  np.testing.assert_allclose(got_in[:, None] * got_out, s_in[:, None] * s_out, rtol=1e-6)


def test_binary_weight_has_straight_through_gradients():
  u, v = jnp.array([[0.3], [-2.0]]), jnp.array([[1.5], [-0.1], [0.2]])
  s_in, s_out = jnp.ones(2), jnp.ones(3)
  w = nq.binary_weight(u, v, s_in, s_out)
  np.testing.assert_array_equal(w, [[1, -1, 1], [-1, 1, -1]])
  gu = jax.grad(lambda u: jnp.sum(nq.binary_weight(u, v, s_in, s_out)))(u)
  # d sum / d sign(u_k) = sum_n sign(v_n); the STE passes it to u unchanged.
  np.testing.assert_allclose(gu, [[1.0], [1.0]])


def test_compress_a_model_end_to_end():
  cfg = config_lib.build({'model': dict(d_model=64, n_layers=2, vocab_size=384, max_len=16,
                                        attention=dict(n_heads=2)),
                            'data': dict(seq_len=16)}).model
  model = transformer.Transformer(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params']
  tokens = np.asarray(jax.random.randint(jax.random.key(1), (4, 16), 0, 256))
  qcfg, qparams, report = nq.compress(
      cfg, params, tokens, nq.CompressConfig(bits=1.0, float_steps=2, block_steps=3,
                                             distill_steps=2))
  assert qcfg.linear.kind == 'nanoquant'
  assert report['bits_per_weight'] <= 1.0 + 1e-9
  assert report['compressed_proj_bytes'] * 32 == pytest.approx(
      report['float32_proj_bytes'] * report['bits_per_weight'])
  q = qparams['layers_0']['ffn']['wi_0']
  assert set(q) == {'u', 'v', 's_in', 's_out'} and q['u'].shape[0] == 64
  logits = transformer.Transformer(qcfg).apply({'params': qparams}, tokens)
  assert logits.shape == (4, 16, 384) and bool(jnp.all(jnp.isfinite(logits)))
  with pytest.raises(config_lib.ConfigError, match='nanoquant'):
    nq.compress(dataclasses.replace(cfg, linear=config_lib.LinearConfig(kind='bitnet')),
                params, tokens)


def test_fwht_is_n_log_n_butterflies_not_a_dense_matmul():
  for n in (64, 1024):
    jaxpr = jax.make_jaxpr(lambda x: quest.fwht(x, block=n))(jnp.zeros((2, n)))
    prims = [e.primitive.name for e in jaxpr.jaxpr.eqns]
    assert 'dot_general' not in prims
    # log2(n) add/sub stages: the op count grows with log n, not with n.
    assert prims.count('add') + prims.count('sub') <= 2 * int(np.log2(n)) + 2


def test_init_keeps_admm_scales_and_refits_monotonically():
  rng = np.random.default_rng(2)
  w = rng.normal(size=(32, 48))
  d = np.exp(rng.normal(size=32))
  u, v, a, b_out, _ = nq.admm_init(d[:, None] * w, 8)
  b = np.where(u >= 0, 1.0, -1.0) @ np.where(v >= 0, 1.0, -1.0).T
  admm_err = nq.weighted_error(w, d, b, a / d, b_out)  # ADMM's own scales, in W units
  _, _, s_in, s_out = nq.init_factors(w, d, 8, 'admm')
  refined = nq.weighted_error(w, d, b, s_in, s_out)
  assert refined <= admm_err + 1e-12 and refined < 1.0
