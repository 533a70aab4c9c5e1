"""data.packing=first_fit: whole documents per window, never split (one example per
row), padded with segment id 0; truncation, eval batches and resume."""

import dataclasses
import json
import os

import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import pipeline
from lattice.data import tokenizer as tokenizer_lib

TOK = tokenizer_lib.ByteTokenizer()


def _corpus(folder, lengths):
  os.makedirs(folder, exist_ok=True)
  for i, n in enumerate(lengths):
    with open(os.path.join(folder, f'd{i:03d}.txt'), 'w') as f:
      f.write(chr(ord('a') + i % 26) * n)
  return str(folder)


def _cfg(folder, **kw):
  return dataclasses.replace(config_lib.DataConfig(), source='text', paths=folder,
                             val_fraction=0.0, seq_len=24, batch_size=2,
                             packing='first_fit', **kw)


def _rows(batches):
  """(tokens of row incl. last target, segment ids) of every row."""
  out = []
  for b in batches:
    for i in range(b['inputs'].shape[0]):
      tokens = np.append(b['inputs'][i], b['targets'][i, -1])
      out.append((tokens, b['segment_ids'][i]))
  return out


def test_documents_are_never_split(tmp_path):
  # 5-20 letters + BOS/EOS: several fit a 25-token window, none spans two.
  folder = _corpus(tmp_path / 'c', [5, 12, 20, 7, 3, 18, 9, 14, 6, 11])
  it = pipeline.make_train_iterator(_cfg(folder), TOK, seed=0, process_index=0,
                                    process_count=1)
  batches = [next(it) for _ in range(6)]
  for tokens, segments in _rows(batches):
    for s in set(segments[segments > 0].tolist()):
      doc = tokens[:-1][segments == s]
      assert doc[0] == TOK.bos_id, 'a window starts mid-document'
      text = TOK.decode(doc[1:])
      assert len(set(text)) == 1 and len(text) in {5, 12, 20, 7, 3, 18, 9, 14, 6, 11}
  # No loss across documents or on padding: weights are 0 where the target is pad.
  for b in batches:
    assert np.all(b['weights'][b['targets'] == TOK.pad_id] == 0)
    assert b['weights'].sum() > 0


def test_concat_packing_does_split_the_same_corpus(tmp_path):
  """The control: the default packing cuts documents at window edges."""
  folder = _corpus(tmp_path / 'c', [5, 12, 20, 7, 3, 18, 9, 14, 6, 11])
  it = pipeline.make_train_iterator(
      dataclasses.replace(_cfg(folder), packing='concat'), TOK, seed=0,
      process_index=0, process_count=1)
  starts = [tokens[0] for tokens, _ in _rows([next(it) for _ in range(6)])]
  assert any(t != TOK.bos_id for t in starts)


def test_long_documents_are_truncated_and_eval_pads(tmp_path):
  folder = _corpus(tmp_path / 'c', [40, 4, 4])
  cfg = _cfg(folder, eval={'source': 'text', 'paths': folder})
  (b,) = pipeline.make_eval_batches(cfg, TOK, 1, process_index=0, process_count=1)
  rows = _rows([b])
  assert rows[0][1].tolist() == [1] * 24      # 42 tokens cut to the 25-token window
  assert b['inputs'].shape == (2, 24)
  # More eval batches asked than the split holds: the rest are weight-0 padding.
  out = pipeline.make_eval_batches(cfg, TOK, 4, process_index=0, process_count=1)
  assert len(out) == 4 and out[-1]['weights'].sum() == 0


def test_resume_gives_the_same_batches(tmp_path):
  folder = _corpus(tmp_path / 'c', [5, 12, 20, 7, 3, 18, 9, 14, 6, 11])
  make = lambda: pipeline.make_train_iterator(  # pylint: disable=g-long-lambda
      _cfg(folder), TOK, seed=1, process_index=0, process_count=1)
  it = make()
  for _ in range(5):
    next(it)
  state = json.loads(json.dumps(it.get_state()))   # Orbax stores it as JSON
  expected = [next(it) for _ in range(4)]
  fresh = make()
  fresh.set_state(state)
  for want, got in zip(expected, [next(fresh) for _ in range(4)]):
    for k in want:
      np.testing.assert_array_equal(want[k], got[k])


def test_unknown_packing_is_one_line():
  with pytest.raises(config_lib.ConfigError, match='data.packing'):
    config_lib.build({'data': {'packing': 'best'}})
