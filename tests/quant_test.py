"""lattice.quant: STE / trust gradients, grids, Hadamard, packing, quantized models."""

import functools
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from lattice import config as config_lib
from lattice import quant  # registers linear kinds 'bitnet' and 'quest'
from lattice.nn import transformer
from lattice.quant import packing, quest, ste
from lattice.train import loop

from conftest import tiny_config

X = jax.random.normal(jax.random.key(0), (6, 64)) * 3.0
COT = jax.random.normal(jax.random.key(1), X.shape)


# Compile-time dominates these tests on a shared CPU: skip XLA's backend optimizations.
FAST = {'xla_backend_optimization_level': 0}


def _jit(f, **kw):
  return jax.jit(f, compiler_options=FAST, **kw)


def _vjp(f, x, g):
  return jax.vjp(f, x)[1](g)[0]


# --- BitNet b1.58 straight-through quantizers --------------------------------------

@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_bitnet_ste_gradient_is_exactly_identity(dtype):
  x, g = X.astype(dtype), COT.astype(dtype)
  for f in (ste.ternary_weight, ste.int8_activation):
    for wrap in (lambda f: f, jax.jit, jax.vmap):
      out = _vjp(wrap(f), x, g)
      assert out.dtype == dtype
      np.testing.assert_array_equal(np.asarray(out, np.float32),
                                    np.asarray(g, np.float32))


def test_ternary_values_lie_on_the_absmean_grid():
  w = X * 0.02
  codes, s = ste.ternary_codes(w)
  assert codes.dtype == jnp.int8 and set(np.unique(codes)) == {-1, 0, 1}
  np.testing.assert_allclose(s, 1.0 / np.mean(np.abs(w)), rtol=1e-6)
  w_q = np.asarray(ste.ternary_weight(w))
  np.testing.assert_allclose(w_q, np.asarray(codes) / s, rtol=1e-6)
  assert set(np.unique(np.round(w_q * s, 4))) == {-1.0, 0.0, 1.0}
  # All-zero tensors stay zero (the eps floor) rather than becoming NaN.
  assert np.all(np.asarray(ste.ternary_weight(jnp.zeros((3, 4)))) == 0)


def test_int8_codes_per_token_absmax():
  x = X.at[2].set(0.0)
  codes, s = ste.int8_codes(x)
  c = np.asarray(codes)
  assert codes.dtype == jnp.int8 and c.min() >= -128 and c.max() <= 127
  # The largest magnitude of each (non-zero) token maps to +-127.
  assert np.all(np.abs(c[[0, 1, 3, 4, 5]]).max(axis=1) == 127)
  assert np.all(c[2] == 0) and np.all(np.isfinite(np.asarray(s)))
  x_q = np.asarray(ste.int8_activation(x))
  np.testing.assert_allclose(x_q, c / np.asarray(s), rtol=1e-6)
  assert np.max(np.abs(x_q - np.asarray(x))) <= np.max(0.5 / np.asarray(s)) * (1 + 1e-5)
  # Several feature axes form one token (e.g. the attention output projection).
  c3, s3 = ste.int8_codes(x.reshape(6, 4, 16), (1, 2))
  assert s3.shape == (6, 1, 1)
  np.testing.assert_array_equal(np.asarray(c3).reshape(6, 64), c)


# --- QuEST --------------------------------------------------------------------------

@pytest.mark.parametrize('n, block', [(8, 8), (48, 16), (256, 128)])
def test_fwht_matches_dense_scipy_hadamard(n, block):
  assert quest.hadamard_block(n) == block
  h = scipy.linalg.hadamard(block) / math.sqrt(block)
  dense = np.kron(np.eye(n // block), h)
  np.testing.assert_allclose(dense @ dense.T, np.eye(n), atol=1e-12)
  x = np.asarray(jax.random.normal(jax.random.key(2), (3, n)))
  fwht = _jit(quest.fwht)
  y = np.asarray(fwht(jnp.asarray(x)))
  np.testing.assert_allclose(y, x @ dense.T, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1),
                             rtol=1e-5)
  np.testing.assert_allclose(np.asarray(fwht(jnp.asarray(y))), x, atol=1e-5)
  # Transform of the identity is H itself, so H H^T = I holds for the code path.
  hb = np.asarray(fwht(jnp.eye(block)))
  np.testing.assert_allclose(hb @ hb.T, np.eye(block), atol=1e-5)


def test_alpha_table_is_gaussian_mse_optimal():
  for bits in range(1, 8):
    assert abs(quest.gaussian_mse_alpha(bits) - quest.GAUSSIAN_ALPHA[bits]) < 2e-4, bits


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
@pytest.mark.parametrize('hadamard', [True, False])
def test_quest_levels_on_centred_grid(bits, hadamard):
  x = X.reshape(3, 128)
  x_rot, x_q = _jit(lambda x: (quest.fwht(x) if hadamard else x,
                               quest.quest_quantize(x, bits, hadamard=hadamard)))(x)
  x_rot, x_q = np.asarray(x_rot, np.float64), np.asarray(x_q, np.float64)
  sigma = np.sqrt(np.mean(x_rot ** 2, axis=-1, keepdims=True))
  scale = quest.GAUSSIAN_ALPHA[bits] * sigma
  k = (x_q + scale) / (2 * scale / (2 ** bits - 1))
  np.testing.assert_allclose(k, np.round(k), atol=1e-3)
  assert k.min() > -1e-3 and k.max() < 2 ** bits - 1 + 1e-3
  for row in x_q:
    assert len(np.unique(np.round(row, 5))) <= 2 ** bits
  codes, _ = quest.quest_codes(jnp.asarray(x_rot, jnp.float32), bits)
  assert int(codes.min()) >= 0 and int(codes.max()) < 2 ** bits


@pytest.mark.parametrize('bits', [1, 2, 4])
@pytest.mark.parametrize('trust', [None, 0.3])
def test_quest_trust_gradient_mask(bits, trust):
  x, g = X.reshape(3, 128), COT.reshape(3, 128)
  t = trust or quest.GAUSSIAN_ALPHA[bits] / (2 ** bits - 1)

  @functools.partial(jax.jit, compiler_options=FAST)
  def run(x, g):
    x_rot = quest.fwht(x)
    x_q = quest.quest_quantize(x, bits, trust=trust)
    rotated = _vjp(lambda r: quest.trust_quantize(r, bits, t), x_rot, g)
    full = _vjp(lambda v: quest.quest_quantize(v, bits, trust=trust), x, g)
    return x_rot, x_q, rotated, full

  x_rot, x_q, rotated, full = map(np.asarray, run(x, g))
  sigma = np.sqrt(np.mean(x_rot ** 2, axis=-1, keepdims=True))
  mask = np.abs(x_q - x_rot) <= t * sigma
  assert 0 < mask.mean() < 1  # the test distinguishes masked from unmasked entries
  # In the rotated basis the gradient is g on trusted entries and exactly zero elsewhere.
  np.testing.assert_array_equal(rotated, np.where(mask, np.asarray(g), 0.0))
  # Through the rotation: the (self-inverse) Hadamard maps the masked gradient back.
  h = scipy.linalg.hadamard(128) / math.sqrt(128)
  np.testing.assert_allclose(full, np.where(mask, np.asarray(g), 0.0) @ h, atol=1e-5)


def test_quest_zeros_match_the_reference_quantizer():
  # Issue 19. The reference (IST-DASLab/QuEST TrustQuantizer, 2 bits, no Hadamard) on
  # [0, 1, -2, 3]: sigma = sqrt(14/4), step = 2 * alpha * sigma / 3 = 1.8627; 0 is a
  # tie of round(0 / step + 1/2) and goes to the negative half-step, trusted.
  x = jnp.array([[0.0, 1.0, -2.0, 3.0]])
  half = quest.GAUSSIAN_ALPHA[2] * math.sqrt(3.5) / 3
  x_q = quest.quest_quantize(x, 2, hadamard=False)
  np.testing.assert_allclose(x_q, [[-half, half, -3 * half, 3 * half]], rtol=1e-6)
  assert float(x_q[0, 0]) == pytest.approx(-0.9314, abs=1e-4)
  np.testing.assert_array_equal(quest.trust_mask(x, 2, quest.default_trust(2)),
                                [[True, True, True, True]])
  # Sparse ReLU-like rows: every exact zero, at every width, goes to -step/2 and is
  # trusted at the default radius (half a step), whatever the float32 rounding.
  rows = jax.nn.relu(jax.random.normal(jax.random.key(3), (64, 128)))
  for bits in (1, 2, 3, 4, 8):
    x_q = np.asarray(quest.quest_quantize(rows, bits, hadamard=False))
    mask = np.asarray(quest.trust_mask(rows, bits, quest.default_trust(bits)))
    zero = np.asarray(rows) == 0
    assert zero.sum() > 1000 and (x_q[zero] < 0).all() and mask[zero].all(), bits


@pytest.mark.parametrize('bits', [1, 2, 5, 8])
def test_quest_all_zero_row_gets_no_gradient(bits):
  # The reference's trust radius is trust * sigma = 0 on an all-zero row: no entry is
  # trusted, so no gradient flows (lattice gave 1 per entry at 1, 2 and 5-8 bits).
  x = jnp.zeros((2, 128)).at[1].set(jnp.linspace(-1.0, 1.0, 128))
  g = jax.grad(lambda v: quest.quest_quantize(v, bits, hadamard=False).sum())(x)
  assert float(jnp.abs(g[0]).sum()) == 0.0
  assert float(g[1].sum()) > 0  # the other row still learns
  x_q = quest.quest_quantize(x, bits, hadamard=False)
  np.testing.assert_allclose(x_q[0], -quest.SIGMA_EPS / (2 ** bits - 1), rtol=1e-5)


def test_quest_linear_preserves_product_without_quantization_error_at_8_bits():
  cfg = config_lib.LinearConfig(kind='quest', w_bits=8, a_bits=8)
  x = jax.random.normal(jax.random.key(3), (5, 4, 16))
  w = jax.random.normal(jax.random.key(4), (4, 16, 24)) * 0.1
  xq, wq = _jit(quant.QuestLinear.prepare, static_argnums=(0, 3))(cfg, x, w, 2)
  assert xq.shape == x.shape and wq.shape == w.shape
  ref = np.einsum('nhd,hdo->no', x, w)
  got = np.einsum('nhd,hdo->no', xq, wq)
  assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.02
  # Bits are checked once, when the config is built (QuestLinear.options = Quest).
  with pytest.raises(config_lib.ConfigError, match='^model.linear.w_bits: QuEST supports'):
    config_lib.build({'model': {'linear': {'kind': 'quest', 'w_bits': 9}}})


# --- Packing ------------------------------------------------------------------------

@pytest.mark.parametrize('shape', [(3, 7), (5,), (2, 3, 11), (8,), (1,)])
def test_packing_round_trips_and_byte_counts(shape):
  n = int(np.prod(shape))
  rng = np.random.default_rng(n)
  t = rng.integers(-1, 2, shape).astype(np.int8)
  s = np.where(rng.random(shape) < 0.5, 1, -1).astype(np.int8)
  for pack, unpack, x, per in [
      (packing.pack_ternary_2bit, packing.unpack_ternary_2bit, t, 4),
      (packing.pack_ternary_base3, packing.unpack_ternary_base3, t, 5),
      (packing.pack_signs, packing.unpack_signs, s, 8)]:
    p = pack(x)
    assert p.data.dtype == np.uint8 and p.data.shape == (-(-n // per),)
    np.testing.assert_array_equal(unpack(p), x)
  assert int(packing.pack_ternary_base3(t).data.max()) <= 242
  with pytest.raises(ValueError, match='values must be in'):
    packing.pack_ternary_2bit(t + 2)


def test_packing_exhaustive_ternary_groups():
  # Every one of the 3^5 base-3 groups and 3^4 2-bit groups decodes to itself.
  grid = np.stack(np.meshgrid(*[[-1, 0, 1]] * 5, indexing='ij'), -1).reshape(-1, 5)
  t = grid.astype(np.int8)
  p3 = packing.pack_ternary_base3(t)
  assert len(np.unique(np.asarray(p3.data))) == 243
  np.testing.assert_array_equal(packing.unpack_ternary_base3(p3), grid)
  np.testing.assert_array_equal(
      packing.unpack_ternary_2bit(packing.pack_ternary_2bit(t)), grid)


# --- Quantized models ---------------------------------------------------------------

TOKENS = jax.random.randint(jax.random.key(5), (2, 8), 0, 256)


def _model_cfg(linear, **model):
  return config_lib.build(tiny_config(model={'vocab_size': 384, 'n_layers': 1,
                                             'linear': linear, **model})).model


def _forward_and_grads(cfg):
  # One jit for init, forward, loss and grads keeps compile time (the cost here) low.
  model = transformer.Transformer(cfg)

  @functools.partial(jax.jit, compiler_options=FAST)
  def run():
    variables = nn.unbox(model.init(jax.random.key(0), TOKENS))
    loss = lambda p: jnp.mean(jax.nn.log_softmax(model.apply(p, TOKENS))[..., 0])
    return jax.value_and_grad(loss)(variables)

  value, grads = run()
  assert np.isfinite(float(value))
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in leaves)
  assert all(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


# The bitnet model with the dense FFN is initialised, run and differentiated (every
# step's loss and gradient norm checked finite) by test_bitnet_model_trains.
@pytest.mark.parametrize('linear', [{'kind': 'bitnet'},
                                    {'kind': 'quest', 'w_bits': 2, 'a_bits': 4}])
def test_quantized_transformer_with_moe_forward_and_finite_grads(linear):
  _forward_and_grads(_model_cfg(linear, ffn={'kind': 'moe', 'n_experts': 4, 'top_k': 2}))


def test_bitnet_model_trains(tmp_path, one_device):
  cfg = tiny_config(model={'vocab_size': 384, 'n_layers': 1,
                           'linear': {'kind': 'bitnet'}},
                    train={'steps': 8, 'log_every': 1},
                    optimizer={'lr': 3e-3, 'warmup_steps': 1},
                    checkpoint={'enabled': False})
  loop.train_and_evaluate(cfg, tmp_path, devices=one_device)
  losses = [json.loads(l)['loss'] for l in (tmp_path / 'metrics.jsonl').read_text()
            .splitlines() if 'loss' in json.loads(l)]
  assert len(losses) == 8 and all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses
