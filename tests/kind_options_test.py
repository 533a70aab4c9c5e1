"""Kinds declare their own fields (`options`); the config keeps them as flat keys."""

import dataclasses

import pytest

from lattice import config as config_lib
from lattice import mtp, multimodal
from lattice.moe import layer as moe_layer
from lattice.moe import options as moe_options
from lattice.nn import ffns
from lattice.quant import linears


def test_dropless_impls_are_the_dispatch_table():
  assert set(moe_options.DROPLESS_IMPLS) - {'auto'} == set(moe_layer.DISPATCH) - {'capacity'}


@pytest.mark.parametrize('table', [linears.LINEARS, ffns.FFNS, mtp.HEADS,
                                   multimodal.FRONTENDS],
                         ids=['linear', 'ffn', 'mtp', 'frontend'])
def test_every_kind_option_block_has_defaults_and_a_check(table):
  for cls in table.values():
    opts = getattr(cls, 'options', None)
    if opts is not None:
      assert dataclasses.is_dataclass(opts) and callable(opts.check)
      opts()  # every field has a default


def test_flat_keys_and_defaults_as_before():
  # The keys (and so config.json and every --config.model.* override) are unchanged.
  cfg = config_lib.build({})
  assert dataclasses.asdict(cfg.model.linear) == {
      'kind': 'float', 'use_bias': False, 'w_bits': 4, 'a_bits': 4, 'hadamard': True,
      'trust': 0.0, 'nq_bits': 1.0, 'nq_rank_multiple': 8}
  ffn = dataclasses.asdict(cfg.model.ffn)
  assert ffn['kind'] == 'dense' and ffn['n_experts'] == 8 and ffn['top_k'] == 2
  assert ffn['dispatch'] == 'dropless' and ffn['router'] == 'softmax'
  assert set(ffn) == {'kind', 'd_ff', 'activation', *(
      f.name for f in dataclasses.fields(moe_options.MoEOptions))}
  assert cfg.model.linear.options is None and cfg.model.ffn.options is None
  moe = config_lib.replace(cfg, **{'model.ffn.kind': 'moe', 'model.ffn.n_experts': 4})
  assert moe.model.ffn.options == moe_options.MoEOptions(n_experts=4)
  # MTP heads and frontends: the keys config.py declared itself before (d32c844).
  assert set(dataclasses.asdict(cfg.model.mtp)) == {
      'kind', 'n', 'depth', 'loss_weights', 'memory_efficient', 'lam', 'lam_late',
      'lam_switch_step'}
  assert set(dataclasses.asdict(cfg.model.frontend)) == {
      'kind', 'image_size', 'patch_size', 'max_images', 'caption_ratio',
      'interleaved_ratio', 'text_ratio', 'enc_d_model', 'enc_layers', 'enc_heads',
      'image_tokens', 'codebook_size', 'image_loss'}
  assert (cfg.model.mtp.n, cfg.model.mtp.lam, cfg.model.frontend.patch_size) == (1, 0.3, 8)
  late = config_lib.replace(cfg, **{'model.frontend.kind': 'late'})
  assert late.model.frontend.options == multimodal.options.Late()


def test_only_the_selected_kind_is_checked():
  # A dense FFN ignores the MoE fields; the same values fail once kind='moe'.
  bad = {'n_experts': 4, 'top_k': 8}
  config_lib.build({'model': {'ffn': bad}})
  with pytest.raises(config_lib.ConfigError, match='^model.ffn.top_k: 8 exceeds'):
    config_lib.build({'model': {'ffn': {'kind': 'moe', **bad}}})
  with pytest.raises(config_lib.ConfigError, match='^model.ffn.n_experts: 6 experts are '
                     'not divisible by mesh.expert=4'):
    config_lib.build({'model': {'ffn': {'kind': 'moe', 'n_experts': 6}},
                      'mesh': {'expert': 4}})
  with pytest.raises(config_lib.ConfigError, match='^model.linear.nq_bits: must be positive'):
    config_lib.build({'model': {'linear': {'kind': 'nanoquant', 'nq_bits': 0.0}}})
  # The same for heads and frontends: sequential ignores n, text the image fields.
  config_lib.build({'model': {'mtp': {'kind': 'sequential', 'n': 0}}})
  with pytest.raises(config_lib.ConfigError, match='^model.mtp.n: must be positive'):
    config_lib.build({'model': {'mtp': {'kind': 'parallel', 'n': 0}}})
  config_lib.build({'model': {'frontend': {'patch_size': 7}}})
  with pytest.raises(config_lib.ConfigError, match='^model.frontend.patch_size: 7 does '):
    config_lib.build({'model': {'frontend': {'kind': 'early', 'patch_size': 7}}})


def test_lattice_config_documents_the_kinds_fields():
  # `lattice config` reads the comments of the kinds' option classes too.
  from lattice.run import config_file
  notes = config_file.field_notes()
  assert notes['model.linear.w_bits'] == 'QuEST weight bits, 1..8'
  assert notes['model.ffn.n_experts'] == 'routed experts per MoE layer'
  assert notes['model.ffn.d_ff'].startswith('0: the Llama rule')
  assert notes['model.mtp.depth'].startswith('modules D')
  assert notes['model.frontend.max_images'] == 'image slots per training sequence'
