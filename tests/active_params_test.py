"""Active parameters come from the expert logical axis, never from parameter names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.nn import flops

from conftest import tiny_config


def _boxed(shape, names):
  return nn.LogicallyPartitioned(jnp.zeros(shape), names)


def _config():
  return config_lib.build(tiny_config(model={
      'vocab_size': 128, 'ffn': {'kind': 'moe', 'n_experts': 4, 'top_k': 1,
                                               'norm_topk': False}}))


def _cfg():
  return _config().model


def test_expert_stacks_count_k_of_e_whatever_their_names():
  m = _cfg()
  params = {
      'adapter': {'wo': _boxed((8, 16), ('embed', 'mlp'))},        # a 'wo', not an expert
      'ffn': {'fc1': _boxed((4, 8, 16), ('exp', 'embed', 'mlp')),  # experts, any name
              'router': _boxed((8, 4), ('embed', 'exp'))},         # routers count fully
      'scanned': {'w': _boxed((2, 4, 8, 16), ('layers', 'exp', 'embed', 'mlp'))},
  }
  want = 8 * 16 + 4 * 8 * 16 // 4 + 8 * 4 + 2 * 4 * 8 * 16 // 4
  assert flops.active_params(params, m) == want
  assert flops.matmul_params(params, m) == want
  assert flops.matmul_params(params, m, active=False) == flops.count_params(params)
  # Unboxed params with their axes tree give the same count.
  assert flops.active_params(nn.unbox(params), m, flops.logical_axes(params)) == want
  with pytest.raises(ValueError, match='need axes='):
    flops.active_params(nn.unbox(params), m)


def test_a_moe_model_counts_one_of_four_experts():
  cfg = _config()
  m = cfg.model
  model = model_lib.make_model(m)
  boxed = jax.eval_shape(model.init, jax.random.key(0), model_lib.init_batch(cfg))
  params = boxed['params']
  flat = jax.tree_util.tree_flatten_with_path(
      params, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  experts = sum(leaf.value.size for _, leaf in flat
                if isinstance(leaf, nn.Partitioned) and 'exp' == leaf.names[0])
  assert experts > 0
  total = flops.count_params(params)
  assert flops.active_params(params, m) == total - experts + experts // 4
