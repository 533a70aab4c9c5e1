"""Packed ternary inference: a trained BitNet checkpoint packs, its logits match the
fake-quantized model, and greedy decoding with it gives the same tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import ternary_cpu
from kernels import ternary_matmul as tm
from lattice import config as config_lib
from lattice.decode import sampling
from lattice.nn import transformer
from lattice.quant import inference
from lattice.train import artifacts, loop


@pytest.fixture(autouse=True)
def _exact_matmuls():
  # The fake-quantized model's float matmuls must not use TF32 on GPUs.
  with jax.default_matmul_precision('highest'):
    yield


def _config(**model):
  return config_lib.build({
      'model': dict(d_model=64, n_layers=2, max_len=48, attention=dict(n_heads=4, n_kv_heads=2),
                    linear=dict(kind='bitnet'), **model),
      'data': dict(seq_len=32, batch_size=8, eval_batches=1),
      'optimizer': dict(warmup_steps=1),
      'train': dict(steps=4, log_every=2, progress=False),
      'checkpoint': dict(every=4)})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('bitnet')
  loop.train_and_evaluate(_config(subln=True, ffn=dict(activation='relu2_glu')), workdir)
  return artifacts.load_run(workdir)


def test_packed_logits_match_fake_quant(trained):
  cfg, params = trained
  assert cfg.model.subln and cfg.train.steps == 4  # config.json round trip
  packed_cfg, packed = inference.pack_model(cfg.model, params)
  tokens = jax.random.randint(jax.random.key(1), (2, 24), 0, 256)
  want = transformer.Transformer(cfg.model).apply({'params': params}, tokens)
  got = transformer.Transformer(packed_cfg).apply({'params': packed}, tokens)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
  # Projections really are 2-bit: 16x fewer bytes than float32 up to the scales.
  flat = jax.tree_util.tree_leaves_with_path(packed)
  assert any(l.dtype == jnp.uint8 for _, l in flat)
  before, after = inference.weight_bytes(params), inference.weight_bytes(packed)
  assert after['projection_bytes'] < before['projection_bytes'] / 15


def test_packed_greedy_decode_matches(trained):
  cfg, params = trained
  packed_cfg, packed = inference.pack_model(cfg.model, params)
  prompt = jax.random.randint(jax.random.key(2), (2, 5), 0, 256)
  kw = dict(max_new_tokens=8, sampling=sampling.SamplingConfig(temperature=0.0))
  want = sampling.generate({'params': params}, prompt, jax.random.key(0),
                           model_cfg=cfg.model, **kw)
  got = sampling.generate({'params': packed}, prompt, jax.random.key(0),
                          model_cfg=packed_cfg, **kw)
  np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(jax.default_backend() != 'cpu' or not ternary_cpu.available(),
                    reason='native CPU kernel not built or not on CPU')
def test_native_and_xla_cpu_paths_give_the_same_tokens(trained):
  cfg, params = trained
  packed_cfg, packed = inference.pack_model(cfg.model, params)
  prompt = jax.random.randint(jax.random.key(3), (2, 5), 0, 256)
  kw = dict(max_new_tokens=8, sampling=sampling.SamplingConfig(temperature=0.0))
  tokens, logits = {}, {}
  for impl in ('native', 'xla'):
    jax.clear_caches()  # the CPU path is chosen when generate is traced
    with tm.cpu_auto(impl):
      tokens[impl] = sampling.generate({'params': packed}, prompt, jax.random.key(0),
                                       model_cfg=packed_cfg, **kw)
      logits[impl] = transformer.Transformer(packed_cfg).apply({'params': packed}, prompt)
  np.testing.assert_array_equal(tokens['native'], tokens['xla'])
  np.testing.assert_allclose(logits['native'], logits['xla'], atol=1e-5, rtol=1e-5)


def test_scanned_layers_pack_per_layer():
  cfg = loop.resolve(_config(scan_layers=True)).model
  variables = transformer.Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
  packed_cfg, packed = inference.pack_model(cfg, variables['params'])
  w = packed['layers']['ffn']['wo']['w_packed']
  assert w.shape[0] == 2 and w.dtype == jnp.uint8
  tokens = jnp.arange(16)[None] % 256
  np.testing.assert_allclose(
      transformer.Transformer(packed_cfg).apply({'params': packed}, tokens),
      transformer.Transformer(cfg).apply(variables, tokens), atol=1e-4, rtol=1e-4)


def test_pack_rejects_non_bitnet_models():
  cfg = config_lib.replace(config_lib.Config(), **{'model.vocab_size': 384}).model
  with pytest.raises(config_lib.ConfigError, match='model.linear.kind'):
    inference.pack_model(cfg, {})
