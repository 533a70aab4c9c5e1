"""lattice.convert of BitNet b1.58 2B4T: tiny random transformers BitNet models in the
release's layouts, imported into `linear.kind=bitnet`, same logits, same greedy
tokens, and (packed layout) the same logits after `quant.inference.pack_model`.

Nothing is downloaded: the reference is transformers' own BitNetForCausalLM with its
BitNet linears (transformers/integrations/bitnet.py) swapped in here.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch', reason='the test extra (torch) is not installed')
transformers = pytest.importorskip('transformers',
                                   reason='the test extra (transformers) is not installed')
pytest.importorskip('safetensors', reason='the test extra (safetensors) is not installed')

from convert_test import (ATOL, COMMON, _check_logits_and_greedy, _hf_logits,  # noqa: E402
                          _randomize, _restore, _tokens)
from lattice.convert import ConvertError, import_hf  # noqa: E402
from lattice.nn import transformer  # noqa: E402


# BitNet b1.58 2B4T: transformers' BitNetForCausalLM with its BitNet linears in every
# projection (float embedding / norms / head), written as the release's safetensors:
# 'packed' is the released layout (offline BitLinear: uint8 ternary codes + a
# per-tensor weight_scale), 'latent' float master weights (online AutoBitLinear).
BITNET_QUANT = {'packed': {'quant_method': 'bitnet', 'linear_class': 'bitlinear',
                           'quantization_mode': 'offline'},
                'latent': {'quant_method': 'bitnet', 'linear_class': 'autobitlinear',
                           'quantization_mode': 'online'}}


def _bitnet_linear(hf_bitnet, module, layout, g):
  if layout == 'latent':
    bit = hf_bitnet.AutoBitLinear(module.in_features, module.out_features, bias=False,
                                  online_quant=True, dtype=torch.float32)
    with torch.no_grad():
      bit.weight.copy_(torch.randn(bit.weight.shape, generator=g) / module.in_features ** 0.5)
    return bit
  bit = hf_bitnet.BitLinear(module.in_features, module.out_features, bias=False,
                            dtype=torch.float32)
  codes = torch.randint(-1, 2, (module.out_features, module.in_features), generator=g)
  bit.weight.copy_(hf_bitnet.pack_weights(codes))
  # 1/mean|W| of a N(0, 1/in) weight is ~1.25 sqrt(in): scales around that.
  bit.weight_scale.fill_(module.in_features ** 0.5 * (1.0 + torch.rand(1, generator=g).item()))
  return bit


@pytest.fixture
def eager_torch():
  """transformers' BitNet unpack_weights, activation_quant, WeightQuant and ActQuant
  are torch.compile'd; eager runs the same math without a C++ toolchain."""
  with torch._dynamo.config.patch(disable=True):
    yield


def _bitnet_release(tmp_path, layout='packed', seed=0):
  """(transformers reference model, its checkpoint dir in the release's layout)."""
  import safetensors.torch
  from transformers.integrations import bitnet as hf_bitnet
  config = transformers.BitNetConfig(**COMMON, tie_word_embeddings=True,
                                     bos_token_id=1, eos_token_id=2)
  model = transformers.BitNetForCausalLM(config).eval()
  _randomize(model, seed)
  g = torch.Generator().manual_seed(seed + 1)
  for name, module in list(model.named_modules()):
    if isinstance(module, torch.nn.Linear) and name != 'lm_head':
      model.set_submodule(name, _bitnet_linear(hf_bitnet, module, layout, g))
  hf_dir = tmp_path / 'bitnet'
  hf_dir.mkdir()
  tensors = {k: v.contiguous() for k, v in model.state_dict().items() if k != 'lm_head.weight'}
  assert (tensors['model.layers.0.mlp.down_proj.weight'].dtype == torch.uint8) == (
      layout == 'packed')
  safetensors.torch.save_file(tensors, hf_dir / 'model.safetensors', metadata={'format': 'pt'})
  (hf_dir / 'config.json').write_text(json.dumps(
      {**config.to_dict(), 'architectures': ['BitNetForCausalLM'],
       'quantization_config': BITNET_QUANT[layout]}))
  return model, hf_dir


def test_bitnet_release_imports_as_linear_bitnet_and_packs(tmp_path, eager_torch):
  from lattice.quant import inference
  model, hf_dir = _bitnet_release(tmp_path)
  run = tmp_path / 'run'
  cfg = import_hf(hf_dir, run)
  m = cfg.model
  assert (m.linear.kind, m.subln, m.ffn.activation) == ('bitnet', True, 'relu2_glu')
  _check_logits_and_greedy(model, run)

  # pack_model recovers the released codes: the packed model gives the same logits.
  tokens = _tokens(COMMON['vocab_size'], seed=2)
  _, variables = _restore(run)
  packed_cfg, packed = inference.pack_model(m, variables['params'])
  got = jax.jit(transformer.Transformer(packed_cfg).apply)({'params': packed}, tokens)
  diff = np.abs(np.asarray(got) - _hf_logits(model, tokens)).max()
  assert diff <= ATOL, diff


def test_bitnet_latent_weights_import_as_linear_bitnet(tmp_path, eager_torch):
  model, hf_dir = _bitnet_release(tmp_path, layout='latent')
  run = tmp_path / 'run'
  assert import_hf(hf_dir, run).model.linear.kind == 'bitnet'
  tokens = _tokens(COMMON['vocab_size'])
  cfg, variables = _restore(run)
  got = jax.jit(transformer.Transformer(cfg.model).apply)(variables, tokens)
  diff = np.abs(np.asarray(got) - _hf_logits(model, tokens)).max()
  assert diff <= ATOL, diff


def test_bitnet_quantization_config_it_cannot_read_is_named(tmp_path):
  src = tmp_path / 'bitnet'
  src.mkdir()
  hf = {**transformers.BitNetConfig(**COMMON).to_dict(), 'architectures': ['BitNetForCausalLM']}
  packed = BITNET_QUANT['packed']
  for quant, field in (({**packed, 'linear_class': 'autobitlinear'}, 'linear_class'),
                       ({**packed, 'use_rms_norm': True}, 'use_rms_norm'),
                       (None, 'quantization_config')):
    (src / 'config.json').write_text(json.dumps({**hf, 'quantization_config': quant}))
    with pytest.raises(ConvertError, match=f'quantization_config.*{field}|{field}.*missing'):
      import_hf(src, tmp_path / 'out')
