"""lattice.eval.ngram (byte Kneser-Ney) and lattice.eval.words (known-word rate)."""

import math

import numpy as np
import pytest

from lattice.eval import ngram, words


def test_kneser_ney_matches_the_formula_by_hand():
  lm = ngram.ByteKneserNey(2).fit([b'abab'])
  # Bigrams ab x2, ba x1: n1 = n2 = 1 at order 2, so D2 = 1/3; unigram continuation
  # counts a: 1, b: 1 (n1 = 2, n2 = 0: D1 = 1, so P1 is uniform).
  assert lm.discounts == pytest.approx([1.0, 1 / 3])
  p1 = 1 / 256
  assert lm.prob(b'', ord('b')) == pytest.approx(p1)
  assert lm.prob(b'a', ord('b')) == pytest.approx((2 - 1 / 3 + 1 / 3 * p1) / 2)
  # An unseen context passes the lower order through.
  assert lm.prob(b'z', ord('b')) == pytest.approx(p1)


def test_distributions_sum_to_one_and_bits_agree_with_prob():
  text = b'def f(x):\n    return x + 1\n' * 20
  lm = ngram.ByteKneserNey(4).fit([text, b'import os\nimport sys\n'])
  for ctx in (b'', b'd', b're', b'ret', b'xyz', b'zzzz'):
    p = lm.distribution(ctx)
    assert p.sum() == pytest.approx(1.0) and (p > 0).all()
    assert p[ord('u')] == pytest.approx(lm.prob(ctx, ord('u')))
  probe = b'def g(x):\n    return x\n'
  bits = lm.bits(probe)
  assert bits[5] == pytest.approx(-math.log2(lm.prob(probe[2:5], probe[5])))
  # Seen text is far more predictable than uniform bytes (8 bits).
  assert lm.bits_per_byte([probe]) < 3


def test_sampling_greedy_and_top_k():
  lm = ngram.ByteKneserNey(3).fit([b'abcabcabcabc'])
  rng = np.random.default_rng(0)
  assert lm.sample(b'ab', 6, rng, temperature=0) == b'cabcab'
  out = lm.sample(b'ab', 50, rng, temperature=1.0, top_k=1)
  assert out == b'cab' * 16 + b'ca'


def test_errors_name_the_problem():
  with pytest.raises(ValueError, match='order'):
    ngram.ByteKneserNey(0)
  with pytest.raises(ValueError, match='fit'):
    ngram.ByteKneserNey(2).prob(b'a', 1)
  with pytest.raises(ValueError, match='no bytes'):
    ngram.ByteKneserNey(2).fit([b''])


def test_known_word_rate_counts_whole_long_words_only():
  vocab = words.vocabulary(['assertEqual(result, expected)'])
  assert vocab == {'assertEqual', 'result', 'expected'}
  # 'assertEqual' and 'resultant' are whole; 'expect' touches the end, 'self' is short.
  rates = words.known_rates(['x assertEqual resultant self expect', 'a b'], vocab)
  assert rates[0] == pytest.approx(0.5) and np.isnan(rates[1])
  ci = words.difference_ci(np.array([1.0, 0.9, 1.0, 0.95]), np.array([0.1, 0.2, 0.0, 0.1]))
  assert 0 < ci['lo'] < ci['diff'] < ci['hi']
  with pytest.raises(ValueError, match='>= 2'):
    words.difference_ci(np.array([1.0]), np.array([0.0, 1.0]))
