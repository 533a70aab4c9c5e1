"""Model properties: causality, scan == loop, remat == none, KV cache == full forward."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.nn import transformer

from conftest import tiny_config


def _model_cfg(**model):
  c = tiny_config(model=model)
  c['model']['vocab_size'] = 384
  return config_lib.build(c).model


def _init(cfg, tokens):
  model = transformer.Transformer(cfg)
  return model, nn.unbox(model.init(jax.random.key(0), tokens))


TOKENS = jax.random.randint(jax.random.key(1), (2, 12), 0, 256)


def test_causal_gradient_of_output_t_wrt_later_inputs_is_zero():
  cfg = _model_cfg()
  model, variables = _init(cfg, TOKENS)
  x = model.apply(variables, TOKENS, method=model.embed_tokens)

  def out_t(x, t):
    h = model.apply(variables, x, method=model.trunk)
    return jnp.sum(model.apply(variables, h, method=model.logits)[:, t])

  for t in (0, 5, 10):
    g = jax.grad(out_t)(x, t)
    assert np.all(np.asarray(g[:, t + 1:]) == 0), t
    assert np.any(np.asarray(g[:, :t + 1]) != 0), t


def test_scan_equals_loop():
  cfg = _model_cfg()
  model, variables = _init(cfg, TOKENS)
  scan_cfg = dataclasses.replace(cfg, scan_layers=True)
  scanned = transformer.Transformer(scan_cfg)
  stack = lambda *xs: jnp.stack(xs)
  layers = [variables['params'][f'layers_{i}'] for i in range(cfg.n_layers)]
  params = {k: v for k, v in variables['params'].items() if not k.startswith('layers_')}
  params['layers'] = jax.tree.map(stack, *layers)
  # The scanned model's params have the same tree once the loop's layers are stacked.
  ref = jax.tree.map(jnp.shape, nn.unbox(scanned.init(jax.random.key(0), TOKENS)))
  assert jax.tree.map(jnp.shape, {'params': params}) == ref
  np.testing.assert_allclose(scanned.apply({'params': params}, TOKENS),
                             model.apply(variables, TOKENS), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('policy', ['full', 'dots'])
def test_remat_equals_no_remat(policy):
  cfg = _model_cfg()
  model, variables = _init(cfg, TOKENS)
  remat = transformer.Transformer(dataclasses.replace(cfg, remat=policy))
  loss = lambda m: lambda p: jnp.mean(m.apply(p, TOKENS) ** 2)
  l0, g0 = jax.value_and_grad(loss(model))(variables)
  l1, g1 = jax.value_and_grad(loss(remat))(variables)
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g0, g1)


@pytest.mark.parametrize('scan', [False, True])
def test_kv_cache_decoding_matches_full_forward(scan):
  cfg = _model_cfg(scan_layers=scan)
  model, variables = _init(cfg, TOKENS)
  full = model.apply(variables, TOKENS)
  decoder = transformer.Transformer(cfg, decode=True)
  cache = transformer.init_cache(decoder, TOKENS.shape[0])
  step = jax.jit(lambda v, t: decoder.apply(v, t, mutable=['cache']))
  logits, mut = step({**variables, 'cache': cache}, TOKENS[:, :5])  # prefill 5
  outs = [logits]
  for t in range(5, TOKENS.shape[1]):  # then one token at a time
    logits, mut = step({**variables, 'cache': mut['cache']}, TOKENS[:, t:t + 1])
    outs.append(logits)
  np.testing.assert_allclose(np.concatenate(outs, axis=1), full, atol=1e-4, rtol=1e-4)


def test_untied_head_and_param_axes():
  cfg = _model_cfg(tie_embeddings=False)
  model = transformer.Transformer(cfg)
  boxed = model.init(jax.random.key(0), TOKENS)
  axes = nn.get_partition_spec(boxed)['params']
  assert axes['unembed']['kernel'] == jax.sharding.PartitionSpec('embed', 'vocab')
  assert axes['layers_0']['attention']['query']['kernel'] == jax.sharding.PartitionSpec(
      'embed', 'heads', 'head_dim')
  assert axes['layers_0']['ffn']['wo']['kernel'] == jax.sharding.PartitionSpec('mlp', 'embed')
  assert model.apply(nn.unbox(boxed), TOKENS).shape == (2, 12, 384)


def test_model_requires_resolved_vocab():
  cfg = config_lib.build(tiny_config()).model
  with pytest.raises(config_lib.ConfigError, match='model.vocab_size'):
    transformer.Transformer(cfg).init(jax.random.key(0), TOKENS)
