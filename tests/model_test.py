"""The composed model: every linear x ffn x mtp x frontend combination composes.

The full cross product (3 x 2 x 3 x 3 = 54) is built and its train step traced
abstractly (`jax.eval_shape`: shapes, named outputs, a finite-typed loss, gradients
for every parameter; nothing compiles). Rows of a pairwise-covering subset (every pair of
kinds appears in some row) are run for real: init, one train step, eval,
checkpoint round trip, and greedy decoding (self-speculative for MTP models, equal
to plain greedy). Each row compiles four programs (~35 s of CPU on 2 cores), so
the suite runs the three rows of `QUICK` (every kind at least once);
LATTICE_FULL_PRODUCT=1 runs all nine.
"""

import itertools
import os

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice import model as model_lib
from lattice import mtp, multimodal, sharding
from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import speculative
from lattice.nn import transformer
from lattice.quant import linears
from lattice.train import loop

from conftest import tiny_config

LINEARS = ('float', 'bitnet', 'quest')
FFNS = ('dense', 'moe')
MTPS = ('none', 'parallel', 'sequential')
FRONTENDS = ('text', 'early', 'late')
# Every pair of kinds of two concerns appears in some row (a covering array).
COVERING = [
    ('float', 'dense', 'none', 'text'), ('float', 'moe', 'parallel', 'early'),
    ('float', 'dense', 'sequential', 'late'), ('bitnet', 'moe', 'none', 'late'),
    ('bitnet', 'dense', 'parallel', 'text'), ('bitnet', 'moe', 'sequential', 'early'),
    ('quest', 'dense', 'none', 'early'), ('quest', 'moe', 'parallel', 'late'),
    ('quest', 'moe', 'sequential', 'text'),
]
QUICK = [('bitnet', 'moe', 'parallel', 'early'), ('quest', 'dense', 'sequential', 'late'),
         ('float', 'moe', 'none', 'text')]  # each kind of every concern at least once
RUN_ROWS = COVERING if os.environ.get('LATTICE_FULL_PRODUCT') else QUICK


def _cfg(linear, ffn, heads, frontend, n_layers=2) -> config_lib.Config:
  model = {'d_model': 16, 'n_layers': n_layers, 'max_len': 64, 'vocab_size': 384,
           'attention': {'n_heads': 2, 'n_kv_heads': 1},
           'linear': {'kind': linear}, 'ffn': {'kind': ffn, 'n_experts': 4, 'top_k': 2},
           'mtp': {'kind': heads, 'n': 2, 'depth': 1},
           'frontend': {'kind': frontend, 'image_size': 16, 'patch_size': 8,
                        'max_images': 1, 'enc_d_model': 8, 'enc_heads': 2}}
  data = {'seq_len': 32, 'batch_size': 2, 'eval_batches': 1}
  if frontend != 'text':
    data['source'] = 'shapes'
  return config_lib.build(tiny_config(model=model, data=data))


def test_covering_rows_cover_every_pair():
  for (i, a), (j, b) in itertools.combinations(
      enumerate((LINEARS, FFNS, MTPS, FRONTENDS)), 2):
    pairs = {(row[i], row[j]) for row in COVERING}
    assert pairs == set(itertools.product(a, b)), (i, j)


def test_config_kinds_are_the_tables():
  tables = config_lib._TABLES  # pylint: disable=protected-access
  assert tables['linear'] is linears.LINEARS and tables['ffn'] is transformer.FFNS
  assert tables['mtp'] is mtp.HEADS and tables['frontend'] is multimodal.FRONTENDS
  for concern, table in tables.items():
    with pytest.raises(config_lib.ConfigError, match=f'^model.{concern}.kind: '):
      config_lib.build({'model': {concern: {'kind': 'no_such_kind'}}})


@pytest.mark.parametrize('linear', LINEARS)
def test_every_combination_builds_and_traces_a_train_step(linear):
  for ffn, heads, frontend in itertools.product(FFNS, MTPS, FRONTENDS):
    # Tracing is the cost here (it grows with the unrolled layers), and one block
    # composes every kind; parallel MTP keeps 2 so its shared trunk is not empty.
    cfg = _cfg(linear, ffn, heads, frontend, n_layers=2 if heads == 'parallel' else 1)
    model = model_lib.make_model(cfg.model)
    batch = model_lib.init_batch(cfg)
    variables = jax.eval_shape(lambda b: nn.unbox(model.init(jax.random.key(0), b)), batch)
    out = jax.eval_shape(lambda v, b: model.apply(v, b, method='outputs'), variables, batch)
    V = cfg.model.vocab_size
    assert out['logits'].shape == (1, cfg.data.seq_len, V)
    assert len(out['mtp_logits']) == model_lib.n_drafts(cfg.model)
    extra = [k for k in variables if k not in ('params', 'cache', 'intermediates')]

    def loss(params, b):
      return model_lib.loss_fn(model, {'params': params, **{k: variables[k] for k in extra}},
                               b, extra)[0]

    l, grads = jax.eval_shape(jax.value_and_grad(loss), variables['params'], batch)
    assert l.shape == () and l.dtype == jnp.float32
    assert jax.tree.structure(grads) == jax.tree.structure(variables['params'])


@pytest.mark.parametrize('kinds', RUN_ROWS, ids=lambda k: '-'.join(k))
def test_covering_combinations_train_eval_restore_and_decode(kinds):
  cfg = _cfg(*kinds)
  setup = loop.build(cfg, devices=jax.devices()[:1])
  train_iter, eval_batches = loop.make_data(setup.cfg, tokenizer_lib.ByteTokenizer())
  with sharding.use_mesh(setup.mesh):
    state = setup.init(jax.random.key(0))
    restored = flax.serialization.from_bytes(state, flax.serialization.to_bytes(state))
    # from_bytes gives host arrays; placed like `state`, the second step reuses the
    # compiled train step instead of compiling it again for other input shardings.
    restored = jax.device_put(restored, jax.tree.map(lambda x: x.sharding, state))
    batch = sharding.global_batch(next(train_iter), setup.mesh)
    state, m = setup.train_step(state, batch)
    again, m2 = setup.train_step(restored, batch)
  assert bool(m['finite']) and float(m['loss']) > 0
  assert float(m2['loss']) == float(m['loss'])  # the checkpoint round trip is exact
  ev = loop.evaluate(setup, state, eval_batches)
  assert np.isfinite(ev['val_loss']) and (kinds[1] != 'moe' or 'maxvio_global' in ev)
  prompt = jnp.asarray(np.random.default_rng(0).integers(0, 256, (1, 4)), jnp.int32)
  plain = speculative.generate_plain(state.variables, prompt, jax.random.key(0),
                                     model_cfg=setup.cfg.model, max_new_tokens=4)
  assert plain.shape == (1, 4)
  if kinds[2] != 'none':
    spec = speculative.generate(state.variables, prompt, jax.random.key(0),
                                model_cfg=setup.cfg.model, max_new_tokens=4)
    np.testing.assert_array_equal(np.asarray(spec[0] if isinstance(spec, tuple) else spec),
                                  np.asarray(plain))
