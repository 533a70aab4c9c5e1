"""Multi-token prediction: shifted targets, the head-by-head backward, sequential modules."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.mtp import losses, options, parallel, sequential
from lattice.train import loop

from conftest import tiny_config

B, L, V = 4, 16, 384


def _cfg(**mtp):
  return config_lib.build(tiny_config(model={'vocab_size': V, 'mtp': mtp}))


def _batch(seed=0):
  window = jax.random.randint(jax.random.key(seed), (B, L + 1), 0, 256)
  weights = jnp.ones((B, L)).at[0, -3:].set(0.0)  # a padded tail
  return {'inputs': window[:, :-1], 'targets': window[:, 1:], 'weights': weights}


@pytest.fixture(scope='module')
def par():
  cfg = _cfg(kind='parallel', n=3)
  model = model_lib.make_model(cfg.model, False)
  variables = nn.unbox(model.init(jax.random.key(0), _batch()['inputs']))
  return cfg, model, variables


def test_shifted_targets_are_the_token_k_ahead():
  batch = _batch()
  window = jnp.concatenate([batch['inputs'], batch['targets'][:, -1:]], axis=1)
  for k in (1, 2, 3):
    t, w = losses.shifted_targets(batch, k)
    np.testing.assert_array_equal(t[:, :L - k + 1], window[:, k:])
    assert float(w[:, L - k + 1:].sum()) == 0.0  # past the window: no target
  # the padded tail of row 0 moves with the targets
  assert float(losses.shifted_targets(batch, 2)[1][0, -4:].sum()) == 0.0


def test_head_i_is_trained_on_token_t_plus_i(par):
  cfg, model, variables = par
  batch = _batch()
  loss, (metrics, _) = model_lib.loss_fn(model, variables, batch, [])
  out = model.apply(variables, batch, method='outputs')
  logits = [out['logits'], *out['mtp_logits']]
  window = np.concatenate([batch['inputs'], batch['targets'][:, -1:]], axis=1)
  w = np.asarray(batch['weights'])
  for i in range(1, cfg.model.mtp.n + 1):
    logp = jax.nn.log_softmax(logits[i - 1], axis=-1)
    # hand-computed: position t predicts window[t + i], weighted by window's weights
    nll, total = 0.0, 0.0
    for t in range(L - i + 1):
      wt = w[:, t + i - 1]
      nll += float(-(np.take_along_axis(np.asarray(logp[:, t]), window[:, t + i, None],
                                        axis=-1)[:, 0] * wt).sum())
      total += wt.sum()
    np.testing.assert_allclose(metrics[f'ce_head{i}'], nll / total, rtol=1e-5)
  np.testing.assert_allclose(loss, sum(metrics[f'ce_head{i}'] for i in (1, 2, 3)),
                             rtol=1e-6)
  # The model's __call__ is head 1: the plain eval step and sampling see it.
  np.testing.assert_allclose(model.apply(variables, batch['inputs']), logits[0],
                             rtol=1e-6)


def test_memory_efficient_backward_equals_plain_and_uses_less_memory(par):
  _, model, variables = par
  # A shape where the heads' logits dominate memory (B*L = 2048 positions, V = 384).
  batch = {k: jnp.tile(v, (4, 8)) for k, v in _batch(1).items()}
  grad = lambda fn: jax.jit(jax.value_and_grad(
      lambda p, b: fn(model, {'params': p}, b, [])[0])).lower(
          variables['params'], batch).compile()
  plain, efficient = grad(model_lib.loss_fn), grad(parallel.memory_efficient_loss)
  lp, gp = plain(variables['params'], batch)
  le, ge = efficient(variables['params'], batch)
  np.testing.assert_allclose(le, lp, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6), ge, gp)
  # XLA's compiled memory analysis: peak temporary buffers.
  t_plain = plain.memory_analysis().temp_size_in_bytes
  t_eff = efficient.memory_analysis().temp_size_in_bytes
  print(f'peak temp bytes, n=3 heads, B*L=2048, V={V}: plain {t_plain}, '
        f'head-by-head {t_eff} ({t_plain / t_eff:.2f}x)')
  assert t_eff < 0.8 * t_plain


def test_loss_weights_and_config_errors():
  assert options.loss_weights(_cfg(kind='parallel', n=2).model.mtp) == (1.0, 1.0)
  w = options.loss_weights(
      _cfg(kind='parallel', n=3, loss_weights='1, 0.5,0.25').model.mtp)
  assert w == (1.0, 0.5, 0.25)
  with pytest.raises(config_lib.ConfigError, match='model.mtp.loss_weights: 2 weights'):
    _cfg(kind='parallel', n=3, loss_weights='1,1')
  with pytest.raises(config_lib.ConfigError, match='model.mtp.memory_efficient'):
    _cfg(kind='sequential', memory_efficient=True)
  with pytest.raises(config_lib.ConfigError, match='model.mtp.n: must be positive'):
    _cfg(kind='parallel', n=0)
  with pytest.raises(config_lib.ConfigError, match='model.mtp.lam: must be non-neg'):
    _cfg(kind='sequential', lam=-1.0)
  with pytest.raises(config_lib.ConfigError, match='model.mtp.depth'):
    _cfg(kind='sequential', depth=0)
  with pytest.raises(config_lib.ConfigError, match='model.n_layers'):
    config_lib.build(tiny_config(model={'n_layers': 1, 'scan_layers': True,
                                        'mtp': {'kind': 'parallel'}}))
  with pytest.raises(config_lib.ConfigError, match='model.mtp.memory_efficient'):
    _cfg(kind='none', memory_efficient=True)
  # The other kinds' fields are not read (each kind checks its own).
  assert _cfg(kind='sequential', n=0).model.mtp.options.depth == 1
  assert _cfg(kind='parallel', depth=0).model.mtp.options == options.Parallel()


def test_sequential_modules_shapes_and_loss_weights():
  cfg = _cfg(kind='sequential', depth=2, lam=0.3, lam_late=0.1, lam_switch_step=2)
  model = model_lib.make_model(cfg.model, False)
  batch = _batch()
  variables = nn.unbox(model.init(jax.random.key(0), batch['inputs']))
  D = cfg.model.d_model
  for k in range(2):
    p = variables['params'][f'mtp_{k}']
    assert p['proj']['kernel'].shape == (2 * D, D)
    assert p['hidden_norm']['scale'].shape == p['embed_norm']['scale'].shape == (D,)
    assert 'attention' in p['block'] and 'ffn' in p['block']
  future = sequential.future_tokens(batch, 2)
  out = model.apply(variables, batch, method='outputs')
  logits = [out['logits'], *out['mtp_logits']]
  assert [l.shape for l in logits] == [(B, L, V)] * 3
  # Module 1 at position i reads token i+1 (and module 2 token i+2).
  np.testing.assert_array_equal(future[:, :, 0], batch['targets'])
  np.testing.assert_array_equal(future[:, :-1, 1], batch['targets'][:, 1:])
  np.testing.assert_allclose(model.apply(variables, batch['inputs']), logits[0], rtol=1e-6)

  state = dict(variables)
  for step, lam in enumerate([0.3, 0.3, 0.1, 0.1]):
    loss, (m, mutated) = model_lib.loss_fn(model, state, batch, ['mtp_state'])
    np.testing.assert_allclose(m['lam'], lam, rtol=1e-6)
    np.testing.assert_allclose(
        loss, m['ce_depth0'] + lam * (m['ce_depth1'] + m['ce_depth2']) / 2, rtol=1e-6)
    for k in (1, 2):  # module k is scored on token t+k+1
      np.testing.assert_allclose(m[f'ce_depth{k}'], losses.head_ce(logits[k], batch, k + 1),
                                 rtol=1e-5)
    assert int(mutated['mtp_state']['step']) == step + 1
    state = {**state, 'mtp_state': mutated['mtp_state']}


@pytest.mark.parametrize('kind,model_over', [
    ('parallel', {'ffn': {'kind': 'moe', 'n_experts': 4, 'top_k': 2,
                          'bias_rate': 1e-3, 'aux_loss': 1e-2},
                  'mtp': {'kind': 'parallel', 'n': 2, 'memory_efficient': True}}),
    ('sequential', {'linear': {'kind': 'bitnet'},
                    'mtp': {'kind': 'sequential', 'lam_switch_step': 3}}),
    ('parallel', {'linear': {'kind': 'quest'}, 'mtp': {'kind': 'parallel', 'n': 2}}),
])
def test_train_step_composes_with_moe_and_quantized_linears(kind, model_over, one_device):
  cfg = config_lib.build(tiny_config(model=model_over))
  setup = loop.build(cfg, devices=one_device)
  assert isinstance(setup.model, model_lib.Model) and setup.model.cfg.mtp.kind == kind
  state = setup.init(jax.random.key(0))
  before = jax.tree.map(np.asarray, state.params)
  batch = {k: np.asarray(v) for k, v in _batch().items()}
  new, _ = setup.train_step(state, batch)  # the first step has learning rate 0 (warmup)
  new, metrics = setup.train_step(new, batch)
  assert bool(metrics['finite']) and np.isfinite(float(metrics['loss']))
  head_metric = 'ce_head2' if kind == 'parallel' else 'ce_depth1'
  assert head_metric in metrics
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), before,
                         jax.tree.map(np.asarray, new.params))
  assert all(jax.tree.leaves(changed['heads_1' if kind == 'parallel' else 'mtp_0']))
  if 'moe' in str(model_over):  # the router bias (state.extra) is updated in the step
    assert float(metrics['aux_loss']) > 0
    bias = [np.asarray(x) for x in jax.tree.leaves(new.extra)]
    assert bias and any(np.abs(b).sum() > 0 for b in bias)
  if kind == 'sequential':
    assert int(new.extra['mtp_state']['step']) == 2
