"""Generated tasks: arithmetic (ID/OOD splits, checker) and induction stories."""

import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import sources, tokenizer
from lattice.data.tasks import arithmetic, induction


# --- arithmetic -------------------------------------------------------------------

def test_arithmetic_is_deterministic_and_prefix_stable():
  a = arithmetic.generate(50, seed=3, split='train')
  assert a == arithmetic.generate(50, seed=3, split='train')
  assert a[:10] == arithmetic.generate(10, seed=3, split='train')
  assert a != arithmetic.generate(50, seed=4, split='train')
  assert a != arithmetic.generate(50, seed=3, split='test')


def test_arithmetic_answers_match_python_and_check():
  for split in arithmetic.SPLITS:
    for q, a in arithmetic.generate(300, seed=0, split=split):
      expression, modulus = q[:-len(' =')].split(' mod ')
      assert eval(expression) % int(modulus) == int(a), q  # pylint: disable=eval-used
      assert arithmetic.check(q, a)
      assert not arithmetic.check(q, str((int(a) + 1) % int(modulus)))
  assert not arithmetic.check('not a question', '1')
  assert not arithmetic.check('1+2 mod 7 =', 'three')


@pytest.mark.parametrize('split', arithmetic.SPLITS)
def test_arithmetic_splits_draw_their_operation_counts(split):
  lo, hi = arithmetic.op_range(split)
  counts = [sum(q.count(o) for o in arithmetic.OPS)
            for q, _ in arithmetic.generate(400, seed=1, split=split)]
  assert min(counts) == lo and max(counts) == hi
  if split == 'ood':  # strictly more operations than any training question
    assert lo > arithmetic.op_range('train')[1]


# --- induction --------------------------------------------------------------------

def test_induction_is_deterministic():
  assert induction.generate(20, seed=5) == induction.generate(20, seed=5)
  assert induction.generate(20, seed=5) != induction.generate(20, seed=6)


def test_induction_offsets_are_second_letters_of_repeated_names():
  for text, offsets in induction.generate(50, seed=0):
    assert offsets
    names = [text[o - 1:o + 1] for o in offsets]
    for o, name in zip(offsets, names):
      assert name[0] in induction.FIRST_LETTERS and name[1].islower()
      assert text.find(name) < o - 1  # the name appeared earlier in the story
    # Characters' first letters differ, so the first letter determines the name.
    assert len({n[0] for n in names}) == len(set(names))


def test_induction_eval_arrays_mask_targets_the_second_letter():
  inputs, targets, mask = induction.eval_arrays(8, seed=2, seq_len=96)
  assert inputs.shape == targets.shape == mask.shape == (8, 96)
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
  rows, cols = np.nonzero(mask)
  assert len(rows) > 0
  assert np.all((targets[rows, cols] >= ord('a')) & (targets[rows, cols] <= ord('z')))
  assert np.all((inputs[rows, cols] >= ord('A')) & (inputs[rows, cols] <= ord('Z')))


def test_induction_eval_arrays_go_through_the_given_tokenizer():
  byte = tokenizer.ByteTokenizer()
  for a, b in zip(induction.eval_arrays(4, seed=3, seq_len=64),
                  induction.eval_arrays(4, seed=3, seq_len=64, tok=byte)):
    np.testing.assert_array_equal(a, b)

  class Pairs(tokenizer.ByteTokenizer):
    """Two bytes per token where possible (ids 300 + ...), a stand-in for subwords:
    a name split at its second letter still gets a target, one kept whole does not."""
    vocab_size = 300 + 256 * 256

    def encode(self, text, bos=False, eos=False):
      raw = text.encode()
      ids = [300 + raw[i] * 256 + raw[i + 1] if i + 1 < len(raw) else raw[i]
             for i in range(0, len(raw), 2)]
      return np.asarray([self.bos_id] * bos + ids + [self.eos_id] * eos, np.int32)

    def token_bytes(self):
      table = super().token_bytes() + [b''] * (300 - tokenizer.VOCAB_SIZE)
      return table + [bytes([i // 256, i % 256]) for i in range(256 * 256)]

  inputs, targets, mask = induction.eval_arrays(8, seed=2, seq_len=200, tok=Pairs())
  table = Pairs().token_bytes()
  rows, cols = np.nonzero(mask)
  assert len(rows) > 0
  # Every masked target starts with a name's lowercase second letter.
  assert all(table[t][:1].islower() for t in targets[rows, cols])


def test_induction_eval_arrays_refuse_a_tokenizer_that_rewrites_text():
  class Lower(tokenizer.ByteTokenizer):
    def encode(self, text, bos=False, eos=False):
      return super().encode(text.lower(), bos, eos)

  with pytest.raises(config_lib.ConfigError, match='data.tokenizer'):
    induction.eval_arrays(2, seed=0, seq_len=32, tok=Lower())


@pytest.mark.parametrize('name', ['induction', 'arithmetic', 'arithmetic_ood'])
def test_task_sources_are_registered(name):
  cfg = config_lib.build({'data': {'source': name}})
  train, val = sources.get_source(cfg.data, 'train'), sources.get_source(cfg.data,
                                                                         'validation')
  assert len(train) > len(val) > 0
  assert isinstance(train[0], bytes) and train[0] == train[0]
  assert train[0] != val[0]
