"""Hard modality routing as the MoE router 'modality' (lattice/moe/modality_router.py).

It replaced `model.frontend.modality_routing='hard'`, which the MoE layer read from
the frontend's config; the golden numbers below were recorded with that code (commit
f6d3f3e, scripts in the #15 arch report), so the router variant is checked to give
the same outputs for a fixed seed.
"""

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.moe import layer, modality_router, router
from lattice.run import config_file

FFN = {'d_ff': 32, 'kind': 'moe', 'n_experts': 4, 'top_k': 1, 'norm_topk': False,
       'aux_loss': 0.01, 'z_loss': 1e-3}
FRONTEND = {'kind': 'early', 'image_size': 16, 'patch_size': 8, 'max_images': 1}


def _cfg(ffn=None, frontend=None) -> config_lib.Config:
  return config_lib.build({
      'model': {'d_model': 16, 'n_layers': 1, 'max_len': 64, 'attention': {'n_heads': 2},
                'ffn': {**FFN, 'router': 'modality', **(ffn or {})},
                'frontend': {**FRONTEND, **(frontend or {})}},
      'data': {'seq_len': 32, 'source': 'shapes'}})


def _apply(cfg, modality_BxL):
  """The MoE layer's output and sown statistics on fixed inputs (seeds 0, 1)."""
  moe = layer.MoE(cfg.model)
  x_BxLxD = jax.random.normal(jax.random.key(1), (2, 8, 16))
  variables = jax.jit(moe.init)(jax.random.key(0), x_BxLxD, modality_BxL)
  y_BxLxD, state = jax.jit(lambda v, x, m: moe.apply(v, x, m, mutable=['intermediates']))(
      variables, x_BxLxD, modality_BxL)
  return y_BxLxD, {k: v[0] for k, v in state['intermediates'].items()}


MODALITY_BxL = jnp.array([[0, 0, 1, 0, 1, 1, 0, 1], [0, 0, 0, 1, 0, 1, 0, 0]])


def test_same_outputs_as_frontend_hard_routing_for_a_fixed_seed():
  # Recorded with the normalized top-1 gate (always 1), which configs now refuse
  # (lattice/moe/options.py); route() is unchanged, so it is set here directly.
  cfg = _cfg()
  cfg = dataclasses.replace(cfg, model=dataclasses.replace(
      cfg.model, ffn=dataclasses.replace(cfg.model.ffn, norm_topk=True)))
  y_BxLxD, inter = _apply(cfg, MODALITY_BxL)
  # Recorded with model.frontend.modality_routing='hard' before the move (f6d3f3e).
  np.testing.assert_allclose(float(jnp.sum(y_BxLxD)), -1.0584819316864014, rtol=1e-5)
  np.testing.assert_allclose(float(jnp.sum(jnp.abs(y_BxLxD))), 134.784912109375,
                             rtol=1e-5)
  np.testing.assert_allclose(y_BxLxD[0, 0, :4], [0.0057814717292785645,
                                                 -0.5026592016220093, 0.187069833278656,
                                                 -0.05093178153038025], rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(float(inter['aux_loss']), 0.011162144131958485, rtol=1e-5)
  np.testing.assert_array_equal(inter['expert_load'], [2, 4, 6, 4])
  np.testing.assert_array_equal(inter['expert_load_image'], [2, 4, 0, 0])


@pytest.mark.parametrize('image_experts', [0, 3])
def test_image_tokens_reach_only_image_experts(image_experts):
  cfg = _cfg({'image_experts': image_experts})
  n_image = image_experts or 2  # 0: half of the 4 experts
  modality_BxL = (jax.random.uniform(jax.random.key(3), (2, 8)) < 0.5).astype(jnp.int32)
  _, inter = _apply(cfg, modality_BxL)
  image_E = np.asarray(inter['expert_load_image'])
  text_E = np.asarray(inter['expert_load']) - image_E
  assert image_E[n_image:].sum() == 0 and text_E[:n_image].sum() == 0
  assert image_E.sum() == int(modality_BxL.sum()) > 0  # every image token was routed
  assert text_E.sum() == modality_BxL.size - int(modality_BxL.sum()) > 0


def test_learned_routing_ignores_modality_and_text_only_forwards_are_text():
  logits_TxE = jax.random.normal(jax.random.key(4), (6, 4))
  modality_T = jnp.array([1, 0, 1, 1, 0, 0])
  soft = _cfg({'router': 'softmax'}).model.ffn
  assert router.restrict(logits_TxE, soft, modality_T) is logits_TxE
  hard = _cfg().model.ffn
  masked_TxE = router.restrict(logits_TxE, hard, modality_T)
  # The same choices as the old inline mask on the softmax router's route().
  old_TxE = jnp.where(modality_router.modality_mask(modality_T, 4, 2), logits_TxE, -1e9)
  for got, want in zip(router.route(masked_TxE, hard), router.route(old_TxE, soft)):
    np.testing.assert_array_equal(got, want)
  # No modality ids (text-only decoding): every token is text, so text experts only.
  idx_TxK = router.route(router.restrict(logits_TxE, hard, None), hard)[0]
  assert bool(jnp.all(idx_TxK >= 2))


def test_config_errors_name_the_field():
  with pytest.raises(config_lib.ConfigError, match=r"^model.ffn.router: 'modality' "
                     r'routes image and text tokens apart'):
    _cfg(frontend={'kind': 'text'})
  with pytest.raises(config_lib.ConfigError, match=r'^model.ffn.image_experts: 4 image '
                     r'experts of 4 leave a modality fewer experts than model.ffn.top_k=1'):
    _cfg({'image_experts': 4})
  with pytest.raises(config_lib.ConfigError, match=r'^model.ffn.image_experts: 2 image '
                     r'experts of 4 leave a modality fewer experts than model.ffn.top_k=3'):
    _cfg({'top_k': 3})
  with pytest.raises(config_lib.ConfigError, match=r'^model.ffn.image_experts: must be '
                     r'non-negative'):
    _cfg({'image_experts': -1})
  # A dense FFN ignores the MoE fields, the router's included.
  _cfg({'kind': 'dense'}, {'kind': 'text'})
  # `lattice config` documents the router's field.
  assert config_file.field_notes()['model.ffn.image_experts'].startswith('router=modality')


def test_old_frontend_keys_are_one_line_errors_and_old_records_load():
  cfg = _cfg()
  with pytest.raises(config_lib.ConfigError, match=r"^model.frontend.modality_routing: "
                     r"moved: hard modality routing is the MoE router "
                     r"model.ffn.router='modality'$"):
    config_lib.replace(cfg, **{'model.frontend.modality_routing': 'hard'})
  config = config_lib.to_config_dict(cfg)
  with pytest.raises(config_lib.ConfigError, match=r'^--config.model.frontend.'
                     r'image_experts: moved: now model.ffn.image_experts$'):
    config_file.apply(config, [('model.frontend.image_experts', '1')])
  # A config.json written before the move (frontend keys) loads as the router.
  record = config_lib.to_config_dict(_cfg({'router': 'softmax'})).to_dict()
  record['model']['frontend'].update(modality_routing='hard', image_experts=1)
  loaded = config_lib.build(record)
  assert (loaded.model.ffn.router, loaded.model.ffn.image_experts) == ('modality', 1)
  record['model']['frontend'].update(modality_routing='learned', image_experts=0)
  assert config_lib.build(record).model.ffn.router == 'softmax'


def test_the_readme_worked_example_is_the_code():
  # README "Adding a technique" shows this router as one file plus one table line.
  root = pathlib.Path(__file__).resolve().parents[1]
  line = "'modality': Router(_softmax, modality_router.restrict, modality_router.check),"
  assert line in (root / 'README.md').read_text()
  assert line in (root / 'lattice' / 'moe' / 'router.py').read_text()
  assert 'modality' in router.ROUTERS and (root / 'lattice' / 'moe' /
                                          'modality_router.py').is_file()
