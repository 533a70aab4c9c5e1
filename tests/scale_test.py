"""`lattice.run.scale`: medium/full modes name a streamed corpus and a subword
tokenizer, and `lattice plan` prices them offline (nothing is downloaded)."""

import pytest

from lattice import chips, config as config_lib, experiment, plan
from lattice.run import scale


def _medium():
  return scale.scale_config(d_model=64, n_layers=2, n_heads=2, seq_len=64, batch=8,
                            tokens=10_000_000, lr=1e-3, corpus='fineweb-edu',
                            tokenizer='gpt2')


def test_scale_config_streams_a_real_corpus_with_a_subword_tokenizer():
  c = experiment.pick_mode('medium', {'medium': _medium})
  cfg = config_lib.build(c)
  assert cfg.data.source == 'hf' and cfg.data.hf_streaming
  assert cfg.data.hf_name == 'HuggingFaceFW/fineweb-edu'
  assert cfg.data.tokenizer == 'hf:gpt2'
  assert cfg.data.eval['hf_name'] == 'allenai/c4'
  assert cfg.model.vocab_size == 50_304          # 50,257 rounded up to 128
  assert cfg.model.scan_layers and cfg.model.remat == 'dots'
  assert cfg.train.steps == -(-10_000_000 // (8 * 64))


def test_plan_prices_a_medium_mode_offline():
  cfg = config_lib.build(experiment.pick_mode('medium', {'medium': _medium}))
  p = plan.plan_arm('baseline', cfg, *chips.parse_slice('h100x1'), 0.4)
  assert p.tokens == cfg.train.steps * 8 * 64
  assert p.epochs == pytest.approx(p.tokens / 10_000_000_000)
  assert p.tokens_per_param == pytest.approx(p.tokens / p.active_params)


def test_unknown_corpus_is_one_line():
  with pytest.raises(config_lib.ConfigError, match="scale corpus: unknown 'c5'"):
    scale.data_fields('c5', 'gpt2')
