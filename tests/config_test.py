"""Tests for lattice.config: typed build, clear errors naming the field, replace."""

import dataclasses

import ml_collections
import pytest

from lattice import config as config_lib
from lattice.config import ConfigError


def test_build_from_dict_and_config_dict_agree():
  sections = {'model': {'d_model': 64, 'attention': {'n_heads': 2}},
              'data': {'batch_size': 4}, 'eval': {'samples': 3}}  # eval: not ours.
  from_dict = config_lib.build(sections)
  from_cd = config_lib.build(ml_collections.ConfigDict(sections))
  assert from_dict == from_cd
  assert from_dict.model.d_model == 64 and from_dict.model.n_heads == 2
  assert from_dict.data.batch_size == 4
  # Untouched fields keep the dataclass defaults.
  assert from_dict.optimizer == config_lib.OptimizerConfig()
  assert from_dict.model.ffn == config_lib.FFNConfig()


def test_build_empty_is_the_defaults():
  assert config_lib.build({}) == config_lib.Config()


def test_configs_are_frozen():
  cfg = config_lib.build({})
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.model.d_model = 3  # type: ignore[misc]


def test_to_config_dict_round_trips():
  cfg = config_lib.build({'model': {'d_model': 96, 'attention': {'n_heads': 3,
                                                                 'head_dim': 32}}})
  assert config_lib.build(config_lib.to_config_dict(cfg)) == cfg


@pytest.mark.parametrize('sections, path', [
    ({'model': {'d_modle': 3}}, 'model.d_modle'),
    ({'model': {'attention': {'n_head': 3}}}, 'model.attention.n_head'),
    ({'mesh': {'tensr': 2}}, 'mesh.tensr'),
    ({'checkpoint': {'enabled': True, 'evry': 3}}, 'checkpoint.evry'),
])
def test_unknown_key_names_its_path_and_the_known_keys(sections, path):
  with pytest.raises(ConfigError, match=rf'^{path}: unknown config key') as e:
    config_lib.build(sections)
  section = path.rsplit('.', 1)[0]
  known = {f.name for f in dataclasses.fields(_section_class(section))}
  assert all(k in str(e.value) for k in known)


def _section_class(path):
  cls = config_lib.Config
  for part in path.split('.'):
    cls = {f.name: f.type for f in dataclasses.fields(cls)}[part]
    cls = getattr(config_lib, cls) if isinstance(cls, str) else cls
  return cls


@pytest.mark.parametrize('sections, message', [
    ({'model': {'d_model': True}}, 'model.d_model: expected an integer, got True'),
    ({'model': {'d_model': 32.0}}, 'model.d_model: expected an integer, got 32.0'),
    ({'model': {'d_model': '32'}}, "model.d_model: expected an integer, got '32'"),
    ({'optimizer': {'lr': '3e-3'}}, "optimizer.lr: expected a number, got '3e-3'"),
    ({'optimizer': {'lr': True}}, 'optimizer.lr: expected a number, got True'),
    ({'model': {'tie_embeddings': 1}},
     'model.tie_embeddings: expected true/false, got 1'),
    ({'data': {'paths': None}}, 'data.paths: expected a string, got None'),
    ({'data': {'source': 3}}, 'data.source: expected a string, got 3'),
    ({'model': 3}, 'model: expected a section, got 3'),
    ({'model': {'attention': 'gqa'}}, "model.attention: expected a section, got 'gqa'"),
])
def test_type_errors_name_the_field(sections, message):
  with pytest.raises(ConfigError) as e:
    config_lib.build(sections)
  assert str(e.value) == message


def test_int_is_accepted_for_float():
  cfg = config_lib.build({'optimizer': {'lr': 1, 'weight_decay': 0}})
  assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
  assert isinstance(cfg.optimizer.weight_decay, float)


# (dotted override on the defaults, substring the ConfigError must contain). The
# message starts with the field a user has to change.
VALIDATION = [
    ('model.remat', 'some', 'model.remat: '),
    ('model.dtype', 'float64', 'model.dtype: '),
    ('model.param_dtype', 'float16', 'model.param_dtype: '),
    ('model.attention.implementation', 'flash', 'model.attention.implementation: '),
    ('model.ffn.activation', 'tanh', 'model.ffn.activation: '),
    ('data.source', 'csv', 'data.source: '),
    ('optimizer.schedule', 'linear', 'optimizer.schedule: '),
    ('train.nonfinite', 'ignore', 'train.nonfinite: '),
    ('model.linear.kind', 'int3', 'model.linear.kind: '),
    ('model.ffn.kind', 'moe_typo', 'model.ffn.kind: '),
    ('model.mtp.kind', 'many', 'model.mtp.kind: '),
    ('model.frontend.kind', 'audio', 'model.frontend.kind: '),
    ('model.d_model', 0, 'model.d_model: must be positive'),
    ('model.n_layers', -1, 'model.n_layers: must be positive'),
    ('model.max_len', 0, 'model.max_len: must be positive'),
    ('model.norm_eps', 0.0, 'model.norm_eps: must be positive'),
    ('model.vocab_size', -1, 'model.vocab_size: must be non-negative'),
    ('model.attention.n_heads', 0, 'model.attention.n_heads: must be positive'),
    ('model.attention.n_heads', 5, 'model.attention.n_heads: 5 heads do not divide '
                                   'model.d_model=128'),
    ('model.attention.n_kv_heads', -1, 'model.attention.n_kv_heads: must be non-neg'),
    ('model.attention.n_kv_heads', 3, 'model.attention.n_kv_heads: 3 must divide '
                                      'n_heads=4'),
    ('model.attention.head_dim', -2, 'model.attention.head_dim: must be non-negative'),
    ('model.attention.head_dim', 7, 'model.attention.head_dim: RoPE needs an even'),
    ('model.attention.rope_theta', 0.0, 'model.attention.rope_theta: must be positive'),
    ('model.ffn.d_ff', -64, 'model.ffn.d_ff: must be non-negative'),
    ('data.seq_len', 0, 'data.seq_len: must be positive'),
    ('data.seq_len', 512, 'data.seq_len: 512 exceeds model.max_len=256'),
    ('data.batch_size', 0, 'data.batch_size: must be positive'),
    ('data.num_workers', -1, 'data.num_workers: must be non-negative'),
    ('data.eval_batches', -1, 'data.eval_batches: must be non-negative'),
    ('data.val_fraction', 1.0, 'data.val_fraction: must be in [0, 1)'),
    ('data.val_fraction', -0.1, 'data.val_fraction: must be in [0, 1)'),
    ('data.source', 'text', "data.paths: data.source='text' needs files"),
    ('data.source', 'jsonl', "data.paths: data.source='jsonl' needs files"),
    ('data.source', 'arrayrecord', "data.paths: data.source='arrayrecord' needs"),
    ('data.source', 'hf', "data.hf_name: data.source='hf' needs a dataset name"),
    ('optimizer.lr', 0.0, 'optimizer.lr: must be positive'),
    ('optimizer.warmup_steps', -1, 'optimizer.warmup_steps: must be non-negative'),
    ('optimizer.warmup_steps', 2000, 'optimizer.warmup_steps: 2000 exceeds '
                                     'train.steps=1000'),
    ('optimizer.weight_decay', -0.1, 'optimizer.weight_decay: must be non-negative'),
    ('optimizer.clip_norm', -1.0, 'optimizer.clip_norm: must be non-negative'),
    ('optimizer.eps', 0.0, 'optimizer.eps: must be positive'),
    ('optimizer.b1', 1.0, 'optimizer.b1: must be in [0, 1)'),
    ('optimizer.b2', -0.5, 'optimizer.b2: must be in [0, 1)'),
    ('optimizer.stage2_lr_ratio', -1.0, 'optimizer.stage2_lr_ratio: must be non-neg'),
    ('optimizer.stage2_weight_decay', -1.0, 'optimizer.stage2_weight_decay: must be'),
    ('optimizer.min_lr_ratio', 1.5, 'optimizer.min_lr_ratio: must be in [0, 1]'),
    ('optimizer.decay_fraction', 0.0, 'optimizer.decay_fraction: must be in (0, 1]'),
    ('train.steps', 0, 'train.steps: must be positive'),
    ('train.log_every', 0, 'train.log_every: must be positive'),
    ('train.eval_every', -1, 'train.eval_every: must be non-negative'),
    ('train.flops_peak', -1.0, 'train.flops_peak: must be non-negative'),
    ('mesh.data', 0, 'mesh.data: must be positive'),
    ('mesh.data', -2, 'mesh.data: must be positive'),
    ('mesh.fsdp', 0, 'mesh.fsdp: must be positive'),
    ('mesh.expert', -1, 'mesh.expert: must be positive'),
    ('mesh.tensor', 0, 'mesh.tensor: must be positive'),
    ('checkpoint.every', 0, 'checkpoint.every: must be positive'),
    ('checkpoint.keep', 0, 'checkpoint.keep: must be positive'),
]


def _nested(path, value):
  *parents, leaf = path.split('.')
  out = node = {}
  for part in parents:
    node = node.setdefault(part, {})
  node[leaf] = value
  return out


@pytest.mark.parametrize('path, value, expected', VALIDATION,
                         ids=[f'{p}={v}' for p, v, _ in VALIDATION])
def test_every_validation_names_its_field(path, value, expected):
  with pytest.raises(ConfigError) as e:
    config_lib.build(_nested(path, value))
  assert str(e.value).startswith(expected), str(e.value)
  # The same check runs when a typed config is changed with replace().
  with pytest.raises(ConfigError, match=expected.split(':')[0]):
    config_lib.replace(config_lib.Config(), **{path: value})


def test_boundary_values_are_accepted():
  cfg = config_lib.build({
      'model': {'vocab_size': 0, 'attention': {'n_kv_heads': 0, 'head_dim': 0},
                'ffn': {'d_ff': 0}},
      'data': {'val_fraction': 0.0, 'num_workers': 0, 'eval_batches': 0,
               'seq_len': 256},
      'optimizer': {'warmup_steps': 1000, 'min_lr_ratio': 1.0, 'decay_fraction': 1.0,
                    'clip_norm': 0.0, 'b1': 0.0},
      'train': {'eval_every': 0},
      'mesh': {'data': -1},
  })
  assert cfg.data.seq_len == cfg.model.max_len


def test_head_dim_set_explicitly_skips_the_divisibility_rule():
  cfg = config_lib.build({'model': {'d_model': 96, 'attention': {'n_heads': 5,
                                                                 'head_dim': 16}}})
  assert cfg.model.head_dim == 16


def test_replace_dotted_paths():
  cfg = config_lib.build({})
  new = config_lib.replace(cfg, **{'model.d_model': 64, 'model.attention.n_heads': 2,
                                   'train.seed': 3, 'mesh.tensor': 2})
  assert (new.model.d_model, new.model.n_heads, new.train.seed, new.mesh.tensor) == (
      64, 2, 3, 2)
  assert cfg.model.d_model == 128  # The original is unchanged.
  assert new.data == cfg.data and new.optimizer == cfg.optimizer


@pytest.mark.parametrize('path', ['model.d_modle', 'modle.d_model',
                                  'model.attention.n_head', 'model.d_model.x'])
def test_replace_unknown_path(path):
  with pytest.raises(ConfigError, match=rf'^{path}: unknown config key'):
    config_lib.replace(config_lib.Config(), **{path: 1})


def test_replace_checks_types():
  with pytest.raises(ConfigError, match='^model.d_model: expected an integer'):
    config_lib.replace(config_lib.Config(), **{'model.d_model': '64'})


def test_unknown_kind_names_the_field_and_the_table_kinds():
  with pytest.raises(ConfigError, match="^model.ffn.kind: 'test_moe' is not one of dense, moe$"):
    config_lib.build({'model': {'ffn': {'kind': 'test_moe'}}})


def test_derived_heads():
  m = config_lib.build({'model': {'d_model': 96, 'attention': {'n_heads': 6}}}).model
  assert (m.n_heads, m.n_kv_heads, m.head_dim) == (6, 6, 16)
  gqa = config_lib.build({'model': {'d_model': 96, 'attention': {
      'n_heads': 6, 'n_kv_heads': 2, 'head_dim': 8}}}).model
  assert (gqa.n_heads, gqa.n_kv_heads, gqa.head_dim) == (6, 2, 8)


@pytest.mark.parametrize('d_model', [32, 64, 96, 128, 200, 512, 4096])
def test_d_ff_llama_rule(d_model):
  """0 means 8/3 * d_model rounded up to a multiple of 64 (LLaMA, arXiv 2302.13971)."""
  d_ff = config_lib.build({'model': {'d_model': d_model, 'attention': {
      'n_heads': 1, 'head_dim': 64}}}).model.d_ff
  assert d_ff % 64 == 0
  assert 8 * d_model / 3 <= d_ff < 8 * d_model / 3 + 64


def test_d_ff_rule_examples_and_override():
  build = lambda **m: config_lib.build({'model': m}).model
  assert build(d_model=128).d_ff == 384    # 341.3 -> 384
  assert build(d_model=96, attention={'n_heads': 4}).d_ff == 256  # exactly 256
  assert build(d_model=128, ffn={'d_ff': 100}).d_ff == 100


def test_init_from_step_is_checked():
  with pytest.raises(config_lib.ConfigError, match='train.init_from_step: set train.init_from'):
    config_lib.build({'train': {'init_from_step': 5}})
  with pytest.raises(config_lib.ConfigError, match='train.init_from_step: must be non-negative'):
    config_lib.build({'train': {'init_from': 'runs/x', 'init_from_step': -1}})
  assert config_lib.build({'train': {'init_from': 'runs/x', 'init_from_step': 5}}
                          ).train.init_from_step == 5


def test_splash_needs_whole_kernel_blocks():
  with pytest.raises(ConfigError, match="^model.attention.implementation: 'splash' needs "
                                        'data.seq_len a multiple of 128'):
    config_lib.build({'model': {'attention': {'implementation': 'splash'}},
                      'data': {'seq_len': 64}})
  config_lib.build({'model': {'attention': {'implementation': 'splash'}},
                    'data': {'seq_len': 256}})
