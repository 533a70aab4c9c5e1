"""MoE: dispatch paths equal a per-token loop, routing math, balancing, expert parallelism."""

import dataclasses
import functools
import importlib.util

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.grouped_matmul import grouped_matmul, permute
from lattice import config as config_lib
from lattice import sharding
from lattice.moe import dispatch, layer, parallel, router
from lattice.nn import layers

from conftest import tiny_config


def _cfg(**ffn):
  c = tiny_config(model={'vocab_size': 384, 'ffn': {'kind': 'moe', 'n_experts': 4,
                                                    'top_k': 2, **ffn}})
  return config_lib.build(c).model


def _naive(x_TxD, idx_TxK, gate_TxK, w, cfg):
  """Each token through each of its experts, one at a time."""
  act = layers.ACTIVATIONS[cfg.ffn.activation]
  out = []
  for t in range(x_TxD.shape[0]):
    y = 0.0
    for k in range(idx_TxK.shape[1]):
      e = int(idx_TxK[t, k])
      h = act(x_TxD[t] @ w['wi_0'][e]) * (x_TxD[t] @ w['wi_1'][e])
      y = y + gate_TxK[t, k] * (h @ w['wo'][e])
    out.append(y)
  return jnp.stack(out)


def _problem(cfg, T=24, seed=0):
  E, D, F = cfg.ffn.n_experts, cfg.d_model, cfg.expert_d_ff
  ks = jax.random.split(jax.random.key(seed), 5)
  x = jax.random.normal(ks[0], (T, D))
  w = {'wi_0': jax.random.normal(ks[1], (E, D, F)) / 4,
       'wi_1': jax.random.normal(ks[2], (E, D, F)) / 4,
       'wo': jax.random.normal(ks[3], (E, F, D)) / 4}
  logits = jax.random.normal(ks[4], (T, E)) * 3  # skewed enough to overflow capacity
  idx, gate, _ = router.route(logits, cfg.ffn)
  return x, idx, gate, w


@pytest.fixture(autouse=True)
def _exact_matmuls():
  # GPUs default to TF32 matmuls; compare dispatch paths at full float32 precision.
  with jax.default_matmul_precision('highest'):
    yield


NATIVE = pytest.mark.skipif(not permute.applies(jnp.float32),
                            reason='native grouped kernel not built / no scipy-openblas32')
# tokamax is in the test extra; without it (a bare install) its path is skipped.
TOKAMAX = pytest.mark.skipif(importlib.util.find_spec('tokamax') is None,
                             reason='tokamax not installed')


@pytest.mark.parametrize('path', ['blocks', 'ragged', 'grouped', 'grouped_ffn',
                                  pytest.param('grouped_native', marks=NATIVE),
                                  pytest.param('grouped_fused', marks=NATIVE),
                                  pytest.param('tokamax', marks=TOKAMAX),
                                  'capacity_large'])
def test_dispatch_equals_per_token_loop(path):
  cfg = _cfg()
  x, idx, gate, w = _problem(cfg)
  ref = _naive(x, idx, gate, w, cfg)
  E = cfg.ffn.n_experts
  if path == 'blocks':
    y, dropped = dispatch.dispatch_blocks(x, idx, gate, w, layer.expert_ffn(cfg), E, b=8)
  elif path == 'ragged':
    y, dropped = dispatch.dispatch_ragged(x, idx, gate, w, layer.ragged_expert_ffn(cfg), E)
  elif path == 'grouped':
    y, dropped = dispatch.dispatch_ragged(
        x, idx, gate, w, layer.ragged_expert_ffn(cfg, grouped_matmul), E)
  elif path == 'grouped_ffn':  # what dropless_impl='grouped' runs for float linears
    y, dropped = dispatch.dispatch_ragged(x, idx, gate, w, layer.grouped_expert_ffn(cfg), E)
  elif path == 'grouped_native':  # ... with the native row moves (float32 on CPU)
    y, dropped = dispatch.dispatch_ragged(x, idx, gate, w, layer.grouped_expert_ffn(cfg), E,
                                          native_moves=True)
  elif path == 'grouped_fused':  # what it runs for SwiGLU there: one fused native pass
    assert cfg.ffn.activation == 'swiglu'
    y, dropped = layer.DISPATCH['grouped'](x, idx, gate, w, cfg, x.shape[0])
  elif path == 'tokamax':  # dropless_impl='tokamax': the kernel library's ragged_dot
    y, dropped = layer.DISPATCH['tokamax'](x, idx, gate, w, cfg, x.shape[0])
  else:  # a capacity no expert can exceed: nothing dropped, same as dropless
    cap = dispatch.capacity(x.shape[0], 2, E, factor=E / 2)
    y, dropped = dispatch.dispatch_capacity(x, idx, gate, w, layer.expert_ffn(cfg), E, cap)
  np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)
  assert float(dropped) == 0.0


def test_grouped_dispatch_gradients_equal_plain_autodiff():
  # Values equal the per-token loop (above). Gradients of the sorted path (custom
  # VJPs: permutations by gathers, grouped_matmul, the fused grouped_ffn) are checked
  # against the blocks path, which JAX differentiates on its own.
  cfg = _cfg()
  x, idx, gate, w = _problem(cfg)
  E = cfg.ffn.n_experts
  unfused = layer.ragged_expert_ffn(cfg, functools.partial(grouped_matmul, big=8, small=2))
  fused = layer.grouped_expert_ffn(cfg)

  def grads(run):
    loss = lambda x, w, gate: jnp.sum(jnp.sin(run(x, idx, gate, w)[0]))
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, w, gate)

  want = grads(lambda *a: dispatch.dispatch_blocks(*a, layer.expert_ffn(cfg), E, b=8))
  runs = [(unfused, False), (fused, False)] + (
      [(fused, True)] if permute.applies(jnp.float32) else [])
  for ffn, moves in runs:
    got = grads(lambda *a, ffn=ffn, moves=moves: dispatch.dispatch_ragged(
        *a, ffn, E, native_moves=moves))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
                 got, want)
  if permute.applies(jnp.float32):  # the fused native experts (gather + FFN + combine)
    got = grads(lambda *a: layer.DISPATCH['grouped'](*a, cfg, x.shape[0]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
                 got, want)
  if importlib.util.find_spec('tokamax') is not None:  # tokamax's own backward
    got = grads(lambda *a: layer.DISPATCH['tokamax'](*a, cfg, x.shape[0]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
                 got, want)


def test_small_capacity_drops_and_reports_it():
  cfg = _cfg()
  x, idx, gate, w = _problem(cfg)
  y, dropped = dispatch.dispatch_capacity(x, idx, gate, w, layer.expert_ffn(cfg), 4, cap=3)
  counts = np.asarray(router.expert_counts(idx, 4))
  assert float(dropped) == pytest.approx(np.maximum(counts - 3, 0).sum() / 48)
  # Kept assignments are exactly the first 3 of each expert, in token order.
  first = {}
  keep = np.zeros(idx.shape, bool)
  for t in range(idx.shape[0]):
    for k in range(2):
      e = int(idx[t, k])
      first[e] = first.get(e, 0) + 1
      keep[t, k] = first[e] <= 3
  ref = _naive(x, idx, gate * keep, w, cfg)
  np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


def test_capacity_is_per_row_so_rows_never_change_each_other():
  # Issue 19: capacity slots were handed out in flattened-batch order, so a row's
  # output depended on the rows before it. Now the capacity is per sequence (as
  # MaxText): permuting the rows permutes the outputs, and drops still happen.
  cfg = _cfg(dispatch='capacity', capacity_factor=0.5)
  x = jax.random.normal(jax.random.key(2), (4, 8, cfg.d_model))
  moe, variables = _moe_apply(cfg, x)
  run = jax.jit(lambda x: moe.apply(variables, x, mutable=['intermediates']))
  y, mut = run(x)
  y_swapped, _ = run(x[::-1])
  np.testing.assert_allclose(y_swapped[::-1], y, atol=1e-5)
  y_one, _ = run(jnp.tile(x[2:3], (4, 1, 1)))
  np.testing.assert_allclose(y_one, jnp.tile(y[2:3], (4, 1, 1)), atol=1e-5)
  assert float(mut['intermediates']['metrics'][0]['drop_rate']) > 0
  # Grouped dispatch by hand: each group of 8 tokens keeps its first `cap` per expert.
  xt, idx, gate, w = _problem(cfg, T=16)
  y2, _ = dispatch.dispatch_capacity(xt, idx, gate, w, layer.expert_ffn(cfg), 4, cap=2,
                                     group=8)
  for g in range(2):
    rows = slice(8 * g, 8 * g + 8)
    ref, _ = dispatch.dispatch_capacity(xt[rows], idx[rows], gate[rows], w,
                                        layer.expert_ffn(cfg), 4, cap=2)
    np.testing.assert_allclose(y2[rows], ref, atol=1e-5)


def test_gate_math_by_hand():
  f = config_lib.FFNConfig(kind='moe', n_experts=4, top_k=2, router='sigmoid',
                           route_scale=2.5)
  logits = jnp.array([[0.0, 2.0, -1.0, 1.0]])
  bias = jnp.array([0.0, 0.0, 10.0, 0.0])  # bias changes the choice, not the gate value
  idx, gate, scores = router.route(logits, f, bias)
  s = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0, 1.0])))
  assert sorted(np.asarray(idx[0]).tolist()) == [1, 2]
  chosen = {1: s[1], 2: s[2]}
  for k in range(2):
    e = int(idx[0, k])
    assert float(gate[0, k]) == pytest.approx(2.5 * chosen[e] / (s[1] + s[2]), rel=1e-5)
  soft = router.route(logits, dataclasses.replace(f, router='softmax', route_scale=1.0,
                                                  norm_topk=False))[1]
  p = np.exp([0.0, 2.0, -1.0, 1.0]) / np.exp([0.0, 2.0, -1.0, 1.0]).sum()
  np.testing.assert_allclose(np.sort(np.asarray(soft[0])), np.sort(p[[1, 3]]), rtol=1e-5)
  assert float(router.max_violation(jnp.array([2.0, 2.0, 2.0, 6.0]))) == pytest.approx(1.0)
  # Balanced routing has Switch loss exactly 1.
  bal_idx = jnp.array([[0], [1], [2], [3]])
  assert float(router.switch_aux_loss(bal_idx, jnp.full((4, 4), 0.25))) == pytest.approx(1.0)


@pytest.mark.parametrize('kind', ['softmax', 'sigmoid'])
def test_top1_router_learns_only_with_the_raw_gate(kind):
  # With top_k=1 a normalized gate is s / s = 1 whatever the logits, so the loss gives
  # the router no gradient; the raw gate (Switch Transformer, arXiv 2101.03961 eq. 2)
  # does. The config refuses the first.
  logits = jax.random.normal(jax.random.key(1), (8, 4))
  grads = {}
  for norm in (True, False):
    f = config_lib.FFNConfig(kind='moe', n_experts=4, top_k=1, router=kind,
                             norm_topk=norm)
    grads[norm] = np.asarray(jax.grad(lambda l: jnp.sum(router.route(l, f)[1]))(logits))
  assert np.abs(grads[True]).max() < 1e-6
  assert (np.abs(grads[False]).sum(-1) > 1e-2).all()
  with pytest.raises(config_lib.ConfigError, match='^model.ffn.norm_topk: with top_k=1'):
    _cfg(top_k=1)
  assert _cfg(top_k=1, norm_topk=False).ffn.top_k == 1

def test_group_limited_routing_stays_in_kept_groups():
  f = config_lib.FFNConfig(kind='moe', n_experts=16, top_k=4, n_groups=4, topk_groups=2,
                           router='sigmoid')
  logits = jax.random.normal(jax.random.key(0), (64, 16)) * 2
  for bias in (None, jnp.zeros((16,))):
    idx, _, scores = router.route(logits, f, bias)
    s = np.asarray(scores).reshape(64, 4, 4)
    # No bias: a group scores its best expert; with a bias: its top-2 sum.
    group_score = s.max(-1) if bias is None else np.sort(s, axis=-1)[:, :, -2:].sum(-1)
    kept = np.argsort(-group_score, axis=-1)[:, :2]
    for t in range(64):
      assert set((np.asarray(idx[t]) // 4).tolist()) <= set(kept[t].tolist())


def test_group_score_is_best_expert_without_bias_and_top2_sum_with():
  # Issue 19: DeepSeek-V3's reference gate (inference/model.py, Gate.forward) scores
  # a group by its max without a bias and by its top-2 sum with one. Two groups of
  # two experts, keep one group, top-1: group 0 = [0.9, 0.0] (max 0.9, sum 0.9),
  # group 1 = [0.6, 0.5] (max 0.6, sum 1.1). Softmax logits log(p / sum p) give
  # affinities p / 2.0: the same order, so the same choices.
  p = np.array([[0.9, 0.0, 0.6, 0.5]], np.float32)
  logits = jnp.log(jnp.asarray(p / p.sum()))
  f = config_lib.FFNConfig(kind='moe', n_experts=4, top_k=1, n_groups=2, topk_groups=1,
                           router='softmax', norm_topk=False)
  np.testing.assert_array_equal(router.group_mask(jnp.asarray(p), 2, 1, top2=False),
                                [[True, True, False, False]])
  np.testing.assert_array_equal(router.group_mask(jnp.asarray(p), 2, 1, top2=True),
                                [[False, False, True, True]])
  assert int(router.route(logits, f)[0][0, 0]) == 0          # best expert: group 0
  assert int(router.route(logits, f, jnp.zeros(4))[0][0, 0]) == 2  # top-2 sum: group 1
  # Same with sigmoid affinities (DeepSeek-V3's kind), bias zero vs absent.
  fs = dataclasses.replace(f, router='sigmoid')
  sig_logits = jnp.log(jnp.asarray(p) / (1 - jnp.asarray(p)))  # sigmoid^-1(p)
  assert int(router.route(sig_logits, fs)[0][0, 0]) == 0
  assert int(router.route(sig_logits, fs, jnp.zeros(4))[0][0, 0]) == 2


def _moe_apply(cfg, x, mutable=()):
  moe = layer.MoE(cfg)
  variables = nn.unbox(moe.init(jax.random.key(0), x))
  return moe, variables


def test_loss_free_bias_balances_a_skewed_router_without_gradients():
  cfg = _cfg(bias_rate=1e-2, router='sigmoid')
  x = jax.random.normal(jax.random.key(1), (4, 16, cfg.d_model)) + 1.0
  moe, variables = _moe_apply(cfg, x)
  # Skew the router hard toward expert 0.
  variables['params']['router'] = variables['params']['router'].at[:, 0].add(0.5)
  step = jax.jit(lambda v: moe.apply(v, x, mutable=['moe_bias', 'intermediates']))
  first_vio = None
  for i in range(300):
    _, mut = step(variables)
    vio = float(router.max_violation(mut['intermediates']['expert_load'][0]))
    first_vio = vio if first_vio is None else first_vio
    variables = {**variables, 'moe_bias': mut['moe_bias']}
  assert first_vio > 0.5 and vio < 0.5 * first_vio, (first_vio, vio)
  assert float(variables['moe_bias']['bias'][0]) < 0  # the overloaded expert is pushed down
  # The bias is not a parameter and gets no gradient: the loss ignores it.
  loss = lambda b: jnp.sum(moe.apply({**variables, 'moe_bias': {'bias': b}}, x) ** 2)
  g = jax.grad(loss)(variables['moe_bias']['bias'])
  assert np.all(np.asarray(g) == 0)


def test_moe_in_the_train_step_updates_bias_and_reports_stats(tmp_path, one_device):
  from lattice.train import loop
  c = tiny_config(model={'ffn': {'kind': 'moe', 'n_experts': 4, 'top_k': 2,
                                 'bias_rate': 1e-3, 'aux_loss': 1e-2}},
                  train={'steps': 4})
  out = loop.train_and_evaluate(c, tmp_path, devices=one_device)
  bias = out['state'].extra['moe_bias']['layers_0']['ffn']['bias']
  assert np.abs(np.asarray(bias)).sum() > 0  # moved inside the step
  assert 0 <= out['maxvio_global'] and np.isfinite(out['val_loss'])
  lines = (tmp_path / 'metrics.jsonl').read_text()
  assert 'maxvio_batch' in lines and 'aux_loss' in lines


@pytest.mark.parametrize('dispatch_kind,factor,skewed', [
    ('dropless', 1.0, False), ('dropless', 1.0, True), ('capacity', 4.0, False),
    ('capacity', 0.5, False)])
def test_expert_parallel_equals_single_device(dispatch_kind, factor, skewed):
  # At factor 0.5 tokens are dropped: equal only because both paths cap per sequence.
  # skewed: a selection bias sends every token to experts 0 and 1, so dropless needs
  # its last (worst-case) capacity bucket; unskewed, the loads fit a smaller one.
  cfg = _cfg(n_experts=8, top_k=2, dispatch=dispatch_kind, capacity_factor=factor,
             router_bias=skewed)
  x = jax.random.normal(jax.random.key(3), (16, 6, cfg.d_model))  # 2 rows a shard
  moe, variables = _moe_apply(cfg, x)
  if skewed:
    variables['moe_bias']['bias'] = jnp.zeros((8,)).at[:2].set(100.0)
  elif dispatch_kind == 'dropless':  # the loads fit the first bucket (8 of 8, 12)
    logits = x.reshape(-1, cfg.d_model) @ variables['params']['router']
    idx = np.asarray(router.route(logits, cfg.ffn)[0])
    assert max(np.bincount(idx[s * 12:(s + 1) * 12].ravel(), minlength=8).max()
               for s in range(8)) <= 8

  def loss(params, x):
    return jnp.sum(moe.apply({**variables, 'params': params}, x) ** 2)

  ref_y = moe.apply(variables, x)
  ref_g = jax.grad(loss)(variables['params'], x)
  mesh = sharding.make_mesh(config_lib.MeshConfig(data=2, expert=4), jax.devices()[:8])
  with sharding.use_mesh(mesh):
    boxed = jax.eval_shape(moe.init, jax.random.key(0), x)
    shard = sharding.logical_to_sharding(boxed, mesh)['params']
    params = jax.device_put(variables['params'], shard)
    xs = jax.device_put(x, sharding.batch_sharding(mesh))
    assert params['wi_0'].sharding.spec[0] == 'expert'
    y = jax.jit(lambda p, x: moe.apply({**variables, 'params': p}, x))(params, xs)
    g = jax.jit(jax.grad(loss))(params, xs)
  np.testing.assert_allclose(y, ref_y, atol=1e-4, rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3), g, ref_g)


def test_dropless_expert_parallel_capacity_buckets():
  # 12 tokens a shard, top-2 of 8 experts: balanced load 3; buckets up to the worst
  # case 12 (every local token on one expert).
  assert parallel.capacity_buckets(12, 2, 8) == (8, 12)
  # 512 tokens, top-2 of 32: balanced 32 -> 40, 48, 64, 128, 256, 512.
  assert parallel.capacity_buckets(512, 2, 32) == (40, 48, 64, 128, 256, 512)
  assert parallel.capacity_buckets(4, 1, 2) == (4,)


def test_bad_moe_configs_are_clear():
  with pytest.raises(config_lib.ConfigError, match='model.ffn.top_k'):
    _cfg(top_k=5)
  with pytest.raises(config_lib.ConfigError, match='model.ffn.n_groups'):
    _cfg(n_groups=3)
  with pytest.raises(config_lib.ConfigError, match='^model.ffn.n_experts: 6 experts'):
    config_lib.build(tiny_config(model={'ffn': {'kind': 'moe', 'n_experts': 6}},
                                 mesh={'expert': 4}))


def test_tokamax_without_the_package_is_a_config_error(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'tokamax' else real(name, *a))
  with pytest.raises(config_lib.ConfigError,
                     match="^model.ffn.dropless_impl: 'tokamax' needs the tokamax package"):
    _cfg(dropless_impl='tokamax')


def test_grouped_dispatch_without_the_native_kernel(monkeypatch):
  # With the extension absent (or OpenBLAS missing), dropless_impl='grouped' runs XLA's
  # sort, gathers and einsum around the windows FFN, and the router's plain dot.
  from kernels.grouped_matmul import native
  monkeypatch.setattr(native, 'available', lambda: False)
  cfg = _cfg()
  x, idx, gate, w = _problem(cfg)
  assert not layer.native_moves(x, cfg)
  y, dropped = layer.DISPATCH['grouped'](x, idx, gate, w, cfg, x.shape[0])
  np.testing.assert_allclose(y, _naive(x, idx, gate, w, cfg), atol=1e-4, rtol=1e-4)
  assert float(dropped) == 0.0
  hlo = jax.jit(lambda x, idx, gate, w: layer.DISPATCH['grouped'](
      x, idx, gate, w, cfg, x.shape[0])[0]).lower(x, idx, gate, w).as_text()
  assert 'lattice_' not in hlo  # no native call left in the graph
