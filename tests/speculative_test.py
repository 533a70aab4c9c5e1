"""Self-speculative decoding: greedy output identical to plain greedy, KV rollback,
and speculative sampling keeps the main model's distribution."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.decode import sampling, speculative
from lattice.nn import transformer

from conftest import tiny_config

V = 16  # a small vocabulary: random heads are sometimes right, exact marginals are cheap
ALPHABET = np.arange(V)


@jax.jit
def _lively(variables, seed=3):
  """Perturbed random weights: a random model whose greedy continuations vary, so
  verification accepts some drafts and rejects others (a bare init tends to emit
  one token forever)."""
  leaves, tdef = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tdef, [x + 0.3 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


def _model(ffn=None, **mtp):
  cfg = config_lib.build(tiny_config(model={'vocab_size': V, 'mtp': mtp,
                                            **({'ffn': ffn} if ffn else {})})).model
  model = model_lib.make_model(cfg, False)
  prompt = jnp.asarray(np.random.default_rng(0).choice(ALPHABET, (4, 5)), jnp.int32)
  return cfg, _lively(nn.unbox(model.init(jax.random.key(0), prompt))), prompt


@pytest.fixture(scope='module', params=[dict(kind='parallel', n=3),
                                        dict(kind='sequential', depth=1)],
                ids=['parallel', 'sequential'])
def mtp_model(request):
  return _model(**request.param)


def test_speculative_greedy_equals_plain_greedy(mtp_model):
  cfg, variables, prompt = mtp_model
  N = 24
  plain = speculative.generate_plain(variables, prompt, jax.random.key(0), model_cfg=cfg,
                                     max_new_tokens=N)
  spec, stats = speculative.generate(variables, prompt, jax.random.key(0), model_cfg=cfg,
                                     max_new_tokens=N)
  np.testing.assert_array_equal(spec, plain)
  # The plain decoder of the same family is step-by-step argmax of the full forward.
  model = model_lib.make_model(cfg, False)
  full = jax.jit(model.apply)(variables, jnp.concatenate([prompt, plain[:, :-1]], axis=1))
  np.testing.assert_array_equal(jnp.argmax(full[:, prompt.shape[1] - 1:], -1), plain)
  apf = np.asarray(stats['accepted_per_forward'])
  assert np.all(stats['emitted'] >= N - 1)
  assert np.all((apf >= 1.0) & (apf <= speculative.n_drafts(cfg) + 1))
  if cfg.mtp.kind == 'parallel':  # rows accept different numbers: per-row caches
    assert apf.max() > 1.0 and len(set(np.asarray(stats['forwards']).tolist())) > 1


def test_speculative_stops_at_eos_like_plain(mtp_model):
  cfg, variables, prompt = mtp_model
  if cfg.mtp.kind != 'parallel':
    pytest.skip('EOS handling is family-independent; one family keeps the test short')
  plain = speculative.generate_plain(variables, prompt, jax.random.key(0), model_cfg=cfg,
                                     max_new_tokens=12)
  eos = int(plain[0, 3])  # a token row 0 emits early
  kw = dict(model_cfg=cfg, max_new_tokens=12, eos_id=eos, pad_id=-1)
  a = speculative.generate_plain(variables, prompt, jax.random.key(0), **kw)
  b, _ = speculative.generate(variables, prompt, jax.random.key(0), **kw)
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a[0, 4:]) == -1).all() or eos in np.asarray(plain[0, :3])


def test_plain_decoder_family_matches_sampling_generate():
  cfg = config_lib.build(tiny_config(model={'vocab_size': V})).model
  prompt = jnp.asarray(np.random.default_rng(1).choice(ALPHABET, (2, 4)), jnp.int32)
  variables = nn.unbox(transformer.Transformer(cfg).init(jax.random.key(1), prompt))
  a = speculative.generate_plain(variables, prompt, jax.random.key(0), model_cfg=cfg,
                                 max_new_tokens=6)
  b = sampling.generate(variables, prompt, jax.random.key(0), model_cfg=cfg,
                        max_new_tokens=6, sampling=sampling.SamplingConfig(0.0))
  np.testing.assert_array_equal(a, b)
  with pytest.raises(config_lib.ConfigError, match='model.mtp.kind'):
    speculative.n_drafts(cfg)


def test_kv_rollback_forgets_rejected_tokens(mtp_model):
  cfg, variables, prompt = mtp_model
  model = model_lib.make_model(cfg, True)
  B = prompt.shape[0]
  apply = jax.jit(
      lambda cache, t: model.apply({**variables, 'cache': cache}, t, mutable=['cache']))
  _, mut = apply(transformer.init_cache(model, B), prompt)
  good = jnp.asarray(np.random.default_rng(2).choice(ALPHABET, (B, 2)), jnp.int32)
  bad = jnp.full((B, 3), 7, jnp.int32)
  # Write [good0, bad, bad, bad] then roll rows back to keep 1 (row 0: 2) token.
  keep = jnp.asarray([2, 1, 1, 1])
  start = speculative.cache_index(mut['cache'])
  _, mut2 = apply(mut['cache'], jnp.concatenate([good[:, :1], bad], axis=1))
  cache = speculative.rollback(mut2['cache'], start + keep)
  np.testing.assert_array_equal(speculative.cache_index(cache), start + keep)
  out, _ = apply(cache, good[:, 1:])
  # Reference: the sequence without the rejected tokens, run from scratch.
  full = model.clone(decode=False).apply(variables, jnp.concatenate(
      [prompt, good[:, :1], good[:, 1:]], axis=1))
  np.testing.assert_allclose(out[1:, 0], full[1:, -1], atol=1e-4)
  # Row 0 kept one rejected token (position P+1 holds `bad`).
  full0 = model.clone(decode=False).apply(variables, jnp.concatenate(
      [prompt[:1], good[:1, :1], bad[:1, :1], good[:1, 1:]], axis=1))
  np.testing.assert_allclose(out[0, 0], full0[0, -1], atol=1e-4)


def test_speculative_sampling_keeps_the_main_distribution():
  cfg, variables, prompt = _model(kind='parallel', n=3)
  s = sampling.SamplingConfig(temperature=1.0, top_k=4)
  R = 3000
  prompt_R = jnp.tile(prompt[:1], (R, 1))
  out, stats = speculative.generate(variables, prompt_R, jax.random.key(7), model_cfg=cfg,
                                    max_new_tokens=3, sampling=s)
  assert float(np.mean(stats['accepted_per_forward'])) > 1.0  # drafts were used
  # Exact marginals of tokens 1 and 2 under the main model with the same filter.
  model = model_lib.make_model(cfg, False)
  probs = lambda logits: np.asarray(jax.nn.softmax(speculative.filtered_logits(logits, s)))
  p1 = probs(model.apply(variables, prompt[:1])[:, -1])[0]
  support = np.flatnonzero(p1)
  seqs = jnp.concatenate([jnp.tile(prompt[:1], (len(support), 1)),
                          jnp.asarray(support)[:, None]], axis=1)
  p2_given = probs(model.apply(variables, seqs)[:, -1])
  p2 = (p1[support, None] * p2_given).sum(0)
  tv = lambda counts, p: 0.5 * np.abs(counts / counts.sum() - p).sum()
  out = np.asarray(out)
  tv1 = tv(np.bincount(out[:, 0], minlength=V), p1)
  tv2 = tv(np.bincount(out[:, 1], minlength=V), p2)
  assert tv1 < 0.05 and tv2 < 0.05, (tv1, tv2)


def test_capacity_dispatch_rows_never_change_each_other():
  # Issue 19: with capacity dispatch, slots were handed out in flattened-batch order,
  # so the same prompt decoded differently in row 0 and row 1, and speculative
  # decoding differed from plain on 3 of 4 rows. A capacity this small drops most
  # assignments of any forward over more than one token, had inference used it.
  cfg, variables, prompt = _model(
      ffn={'kind': 'moe', 'n_experts': 4, 'top_k': 2, 'dispatch': 'capacity',
           'capacity_factor': 0.25}, kind='parallel', n=3)
  kw = dict(model_cfg=cfg, max_new_tokens=10)
  plain = np.asarray(speculative.generate_plain(variables, prompt, jax.random.key(0),
                                                **kw))
  swapped = speculative.generate_plain(variables, prompt[::-1], jax.random.key(0), **kw)
  np.testing.assert_array_equal(np.asarray(swapped)[::-1], plain)
  same = speculative.generate_plain(variables, jnp.tile(prompt[1:2], (4, 1)),
                                    jax.random.key(0), **kw)
  np.testing.assert_array_equal(np.asarray(same), np.tile(plain[1:2], (4, 1)))
  spec, _ = speculative.generate(variables, prompt, jax.random.key(0), **kw)
  np.testing.assert_array_equal(np.asarray(spec), plain)
  assert len({tuple(r) for r in plain.tolist()}) > 1  # the rows do differ


def test_split_index_rebuilds_the_cache_with_one_shared_index(mtp_model):
  cfg, _, prompt = mtp_model
  model = model_lib.make_model(cfg, True)
  cache = transformer.init_cache(model, prompt.shape[0])
  cache = jax.tree.map(lambda x: x + 1, cache)  # index leaves 1, key/value leaves 1
  kv, with_index = speculative.split_index(cache)
  assert len(kv) == len(jax.tree.leaves(cache)) - sum(
      1 for p, _ in jax.tree_util.tree_flatten_with_path(cache)[0]
      if speculative._is_index(p))
  index_B = jnp.arange(prompt.shape[0], dtype=jnp.int32) + 5
  rebuilt = with_index([x * 2 for x in kv], index_B)
  assert jax.tree.structure(rebuilt) == jax.tree.structure(cache)
  np.testing.assert_array_equal(speculative.cache_index(rebuilt), index_B)
  assert all(float(x.max()) == 2.0 for x in speculative.kv_leaves(rebuilt))


def test_parallel_fast_path_drafts_match_the_generic_forward():
  # The stacked-heads path unembeds draft heads only at the selected row of each
  # batch row; the generic path unembeds every position and gathers afterwards.
  cfg, variables, prompt = _model(kind='parallel', n=3)
  model = model_lib.make_model(cfg, True)
  B = prompt.shape[0]
  cache = transformer.init_cache(model, B)
  choose = lambda main: (jnp.argmax(main, -1),)
  pos_B = jnp.asarray([4, 0, 2, 3], jnp.int32)
  outs = []
  for make in (lambda: speculative._parallel_forward(model, variables, cache, cfg.mtp.n),
               lambda: speculative._generic_forward(model, variables, cache)):
    kv, forward = make()
    main, (tok,), drafts_BxKxV, _ = jax.jit(forward, static_argnums=(3, 4))(
        kv, jnp.zeros((B,), jnp.int32), prompt, choose, lambda _: pos_B)
    assert drafts_BxKxV.shape == (B, speculative.n_drafts(cfg), main.shape[-1])
    outs.append((main, tok, drafts_BxKxV))
  np.testing.assert_array_equal(outs[0][1], outs[1][1])
  np.testing.assert_allclose(outs[0][0], outs[1][0], atol=1e-5)
  np.testing.assert_allclose(outs[0][2], outs[1][2], atol=1e-5)


def test_benchmark_weight_ratio_counts_the_extra_head_blocks_and_unembedding():
  from benchmarks import speculative_decode  # pylint: disable=g-import-not-at-top
  cfg = config_lib.build(tiny_config(model={'vocab_size': V, 'mtp': dict(
      kind='parallel', n=3)})).model
  params = nn.unbox(jax.eval_shape(model_lib.make_model(cfg).init, jax.random.key(0),
                                   jnp.zeros((1, 4), jnp.int32)))['params']
  size = lambda t: sum(x.size for x in jax.tree.leaves(t))
  head = size(params['heads_0'])
  table = params['decoder']['embed']['embedding'].size  # tied embeddings
  total = size(params)
  assert cfg.tie_embeddings and size(params['heads_1']) == head
  # plain: everything but heads 2 and 3; verify: everything, plus the table again.
  np.testing.assert_allclose(speculative_decode.weight_ratio(params, 3),
                             (total + table) / (total - 2 * head))


def test_speculative_benchmark_times_gpus_at_highest_precision():
  # Greedy identity holds under exact float32 matmuls; off CPU the benchmark asks for
  # them ('auto'), on CPU it keeps the backend default (already exact).
  from benchmarks import speculative_decode  # pylint: disable=g-import-not-at-top
  assert speculative_decode.matmul_precision('auto', 'gpu') == 'highest'
  assert speculative_decode.matmul_precision('auto', 'tpu') == 'highest'
  assert speculative_decode.matmul_precision('auto', 'cpu') is None
  assert speculative_decode.matmul_precision('high', 'gpu') == 'high'
  with pytest.raises(SystemExit, match='--matmul_precision'):
    speculative_decode.matmul_precision('tf32', 'gpu')
