"""Techniques that genuinely need byte ids refuse a subword `data.tokenizer` in one
clear error naming the field (no silent byte ids under a subword vocabulary)."""

import pytest

from lattice import config as config_lib
from lattice.data import interleaved

from conftest import tiny_config

SPM = 'sentencepiece:/nowhere/spm.model'   # never opened: the check comes first


def test_shapes_source_needs_the_byte_tokenizer():
  cfg = config_lib.build(tiny_config(data={'source': 'shapes', 'tokenizer': SPM}))
  with pytest.raises(config_lib.ConfigError, match=r'^data\.tokenizer: .*shapes'):
    interleaved.make_eval_batches(cfg)
  byte = config_lib.build(tiny_config(data={'source': 'shapes', 'eval_batches': 1,
                                            'batch_size': 2, 'seq_len': 32}))
  assert interleaved.make_eval_batches(byte)[0]['segment_ids'].shape == (2, 32)
