"""Multimodal: patches, interleaved batches, text-only loss, FLOPs, one train step each."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.data import interleaved as data
from lattice.data import tokenizer as tok_lib
from lattice.data.tasks import shapes
from lattice.multimodal import codebook, early, patches
from lattice.nn import flops as nn_flops
from lattice.train import loop

from conftest import tiny_config

P = 4  # patches per image: 32x32 images in 16x16 patches


def _cfg(kind='early', ffn=None, **frontend):
  c = tiny_config(
      model={'d_model': 16, 'n_layers': 1, 'attention': {'n_heads': 2},
             'frontend': {'kind': kind, 'patch_size': 16, 'max_images': 2,
                          'enc_d_model': 16, 'enc_heads': 2, **frontend},
             **({'ffn': ffn} if ffn else {})},
      data={'seq_len': 48, 'batch_size': 8, 'source': 'shapes'},
      optimizer={'warmup_steps': 0})
  return loop.resolve(config_lib.build(c))


@pytest.fixture(scope='module')
def batch():
  return data.make_eval_batches(_cfg(), None, 1)[0]


def test_patchify_round_trip():
  x = np.random.default_rng(0).random((2, 3, 32, 32, 3)).astype(np.float32)
  p = patches.patchify(x, 8)
  assert p.shape == (2, 3, 16, 8 * 8 * 3)
  # Patch 5 is row 1, column 1 of the 4x4 grid, flattened as (row, col, channel).
  np.testing.assert_array_equal(p[1, 2, 5], x[1, 2, 8:16, 8:16].reshape(-1))
  np.testing.assert_array_equal(patches.unpatchify(p, 8, 32, 32), x)
  with pytest.raises(ValueError, match='patch_size'):
    patches.patchify(x, 5)


def test_positions_and_modality_line_up(batch):
  cfg = _cfg()
  rng = np.random.default_rng([cfg.data.shuffle_seed, 1, 0, 3])  # row 3 of eval batch 0
  row = data.pack_row(rng, cfg, data.text_corpus(cfg, 'validation'),
                      tok_lib.ByteTokenizer())
  inputs, pidx, mod = batch['inputs'][3], batch['patch_index'][3], batch['modality'][3]
  np.testing.assert_array_equal(inputs, row['tokens'][:-1])
  assert np.array_equal(mod == 1, inputs == tok_lib.IMG_ID)
  assert np.array_equal(pidx >= 0, mod == 1)
  for b in range(batch['inputs'].shape[0]):
    starts = np.nonzero(batch['inputs'][b] == tok_lib.BOI_ID)[0]
    for k, s in enumerate(starts):  # image k: BOI, its P slots in order, EOI
      np.testing.assert_array_equal(batch['patch_index'][b, s + 1:s + 1 + P],
                                    np.arange(k * P, (k + 1) * P))
      assert batch['inputs'][b, s + 1 + P] == tok_lib.EOI_ID
    used = np.any(batch['images'][b] != 0, axis=(1, 2, 3))
    assert used.sum() == len(starts)
  for k, scene in enumerate(row['scenes']):
    np.testing.assert_array_equal(batch['images'][3, k], shapes.render(scene))
  # Answer ids mark whole answers: the targets of answer 0 decode to a valid answer.
  tok = tok_lib.ByteTokenizer()
  ids = batch['answer_id']
  b = np.nonzero((ids == 0).any(axis=1))[0][0]
  answer = tok.decode(batch['targets'][b][ids[b] == 0])
  valid = {*shapes.SHAPES, *shapes.COLORS, *shapes.SIZES, *shapes.COUNT_WORDS,
           'yes', 'no', 'nothing'}
  assert answer in valid


def test_scatter_images_places_patch_slots():
  x = jnp.zeros((1, 5, 2))
  img = jnp.arange(6.0).reshape(1, 3, 2) + 1
  out = early.scatter_images(x, img, jnp.array([[-1, 2, 0, -1, 1]]))
  np.testing.assert_array_equal(out[0], [[0, 0], [5, 6], [1, 2], [0, 0], [3, 4]])


@pytest.fixture(scope='module')
def setups():
  out = {}
  # Early fusion with a hard-routed MoE (covers the dense path's code too) and late
  # fusion; one device keeps compiles short.
  for name, cfg in (('late', _cfg('late')),
                    ('early_moe', _cfg('early', ffn={'kind': 'moe', 'n_experts': 4,
                                                     'top_k': 1, 'norm_topk': False,
                                                     'router': 'modality'}))):
    setup = loop.build(cfg, devices=jax.devices()[:1])
    out[name] = (setup, setup.init(jax.random.key(0)))
  return out


def test_image_tokens_get_no_text_loss(setups, batch):
  setup, state = setups['early_moe']
  assert np.all(batch['weights'][batch['targets'] == tok_lib.IMG_ID] == 0)
  assert np.all(batch['weights'][batch['targets'] == tok_lib.EOI_ID] == 0)
  loss = jax.jit(lambda b: model_lib.loss_fn(setup.model, state.variables, b, [])[0])
  scrambled = dict(batch, targets=np.where(batch['targets'] == tok_lib.IMG_ID, 7,
                                           batch['targets']))
  assert float(loss(batch)) == pytest.approx(float(loss(scrambled)), rel=1e-6)
  text = dict(batch, targets=np.where(batch['weights'] > 0, 7, batch['targets']))
  assert float(loss(text)) != pytest.approx(float(loss(batch)), rel=1e-3)


def test_late_fusion_flops_count_the_encoder(setups):
  setup, state = setups['late']
  cfg = setup.cfg
  flat = traverse_util.flatten_dict(state.params)
  encoder = sum(v.size for k, v in flat.items()
                if k[0] in ('encoder', 'adapter') and v.ndim == 2 and k[-1] == 'kernel')
  encoder += sum(v.size for k, v in flat.items() if k[0] == 'encoder' and v.ndim == 3)
  assert encoder > 0
  frac = cfg.model.frontend.max_images * P / cfg.data.seq_len
  enc_attn = 12 * cfg.model.frontend.enc_layers * P * cfg.model.frontend.enc_d_model
  axes = setup.param_axes
  decoder = nn_flops.train_flops_per_token(state.params['lm'], cfg.model, cfg.data.seq_len,
                                           axes['lm'])
  got = model_lib.train_flops_per_token(state.params, cfg.model, cfg.data.seq_len, axes)
  assert got == pytest.approx(decoder + frac * (6 * encoder + enc_attn))
  assert loop.flops.train_flops_per_token is model_lib.train_flops_per_token


def test_one_train_step_each(setups, batch):
  from lattice import sharding
  for name, (setup, state) in setups.items():
    before = jax.device_get(state.params)  # the step donates the state
    with sharding.use_mesh(setup.mesh):
      new, metrics = setup.train_step(state, sharding.global_batch(batch, setup.mesh))
      assert bool(metrics['finite']), name
      assert float(metrics['loss']) > 0
      changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), new.params,
                             before)
      assert all(jax.tree.leaves(changed)), name  # image path and decoder both learn
    setups[name] = (setup, new)
  setup, state = setups['early_moe']
  ev = model_lib.summarize_eval(loop.eval_sums(setup, state, [batch]), detail=True)
  share = np.asarray(ev['image_share'])
  # Hard routing: experts 0-1 see only image tokens, 2-3 only text.
  np.testing.assert_array_equal(share[:, 2:], 0.0)
  assert np.all(share[:, :2][share[:, :2] > 0] == 1.0) and share[:, :2].sum() > 0
  assert 0.0 <= ev['qa_accuracy'] <= 1.0 and ev['qa_answers'] > 0


def test_discrete_tokens_codebook_and_loss():
  c = codebook.kmeans(codebook.training_patches(_cfg().model.frontend, 16), 8, iters=5)
  assert c.shape == (8, 16 * 16 * 3)
  x = c[[3, 1, 5]] + 1e-3
  np.testing.assert_array_equal(codebook.nearest(jnp.asarray(x), jnp.asarray(c)), [3, 1, 5])
  batch = data.make_eval_batches(_cfg(image_tokens='discrete'), None, 1)[0]
  seen = jnp.where(batch['modality'] > 0, codebook.FIRST_CODE_ID + 2, batch['inputs'])
  t, w = early.image_targets(batch, seen, 0.5)
  img = batch['targets'] == tok_lib.IMG_ID
  assert np.all(np.asarray(t)[img] == codebook.FIRST_CODE_ID + 2)
  assert np.all(np.asarray(w)[img] == 0.5)
  with pytest.raises(config_lib.ConfigError, match='image_tokens'):
    _cfg('late', image_tokens='discrete')


def test_iterator_resumes_from_state():
  it = data.make_train_iterator(_cfg())
  next(it)
  state = it.get_state()
  want = next(it)
  it2 = data.make_train_iterator(_cfg())
  it2.set_state(state)
  got = next(it2)
  for k in want:
    np.testing.assert_array_equal(got[k], want[k])


def test_config_errors_at_build():
  # Each frontend kind checks its own fields once, when the config is built.
  with pytest.raises(config_lib.ConfigError, match='model.frontend.patch_size'):
    _cfg(patch_size=12)
  # Hard modality routing is the MoE router 'modality' (tests/modality_router_test.py).
  with pytest.raises(config_lib.ConfigError, match='^model.ffn.image_experts'):
    _cfg(ffn={'kind': 'moe', 'n_experts': 4, 'top_k': 1, 'norm_topk': False,
              'router': 'modality', 'image_experts': 4})
  with pytest.raises(config_lib.ConfigError, match='model.frontend.enc_heads'):
    _cfg('late', enc_heads=3)
  with pytest.raises(config_lib.ConfigError, match='^data.seq_len'):
    _cfg('late', patch_size=4)
  with pytest.raises(config_lib.ConfigError, match='model.vocab_size'):
    _cfg(image_tokens='discrete', codebook_size=200)
  # The text frontend reads none of the image fields; early fusion no encoder field.
  assert _cfg('text', patch_size=12).model.frontend.options is None
  assert _cfg(enc_heads=3).model.frontend.kind == 'early'
