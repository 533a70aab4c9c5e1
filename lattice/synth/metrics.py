"""Diversity and tail metrics of a text dataset, over byte tokens.

Model collapse shows first in the tails (Shumailov et al. 2024): rare tokens lose
mass, n-gram diversity falls, and the distribution drifts from the real one. These
measure that on datasets (lists of str/bytes), comparing to real data where asked.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import numpy as np

Text = str | bytes


def _bytes(t: Text) -> bytes:
  return t.encode('utf-8') if isinstance(t, str) else bytes(t)


def ngram_counts(texts: Iterable[Text], n: int) -> collections.Counter:
  """Counts of byte n-grams within each text (n-grams never span two texts)."""
  if n < 1:
    raise ValueError(f'ngram_counts: n must be >= 1, got {n}')
  counts: collections.Counter = collections.Counter()
  for t in texts:
    b = _bytes(t)
    counts.update(b[i:i + n] for i in range(len(b) - n + 1))
  return counts


def distinct_n(texts: Sequence[Text], n: int) -> float:
  """Unique n-grams / all n-grams (Li et al. 2016's distinct-n); 0 for no n-grams."""
  counts = ngram_counts(texts, n)
  total = sum(counts.values())
  return len(counts) / total if total else 0.0


def entropy_bits(counts: collections.Counter | dict) -> float:
  """Shannon entropy (bits) of the empirical distribution `counts`."""
  c = np.asarray([v for v in counts.values() if v > 0], np.float64)
  if c.size == 0:
    return 0.0
  p = c / c.sum()
  return float(-(p * np.log2(p)).sum())


def unigram_entropy(texts: Sequence[Text]) -> float:
  return entropy_bits(ngram_counts(texts, 1))


def bigram_entropy(texts: Sequence[Text]) -> float:
  """Joint entropy (bits) of byte bigrams."""
  return entropy_bits(ngram_counts(texts, 2))


def rare_tokens(real_texts: Sequence[Text], tail_mass: float = 0.05) -> frozenset:
  """The least frequent real unigrams that together hold at most `tail_mass`.

  Tokens are added rarest first (ties broken by byte value) while the cumulative
  real mass stays <= tail_mass; the set is the 'tail' whose mass collapse erodes.
  """
  counts = ngram_counts(real_texts, 1)
  total = sum(counts.values())
  if not total:
    raise ValueError('rare_tokens: the real texts hold no tokens')
  tail, mass = set(), 0.0
  for tok, c in sorted(counts.items(), key=lambda kv: (kv[1], kv[0])):
    if mass + c / total > tail_mass:
      break
    mass += c / total
    tail.add(tok)
  return frozenset(tail)


def rare_token_mass(texts: Sequence[Text], rare: frozenset) -> float:
  """Fraction of the unigrams of `texts` that lie in the `rare` set."""
  counts = ngram_counts(texts, 1)
  total = sum(counts.values())
  return sum(c for t, c in counts.items() if t in rare) / total if total else 0.0


def kl_to_real(texts: Sequence[Text], real_texts: Sequence[Text], n: int = 1,
               alpha: float = 0.5) -> float:
  """KL(real || generated) in bits over n-grams, add-`alpha` smoothed.

  This direction penalizes generated data that lost real mass (the tails), which
  is what collapse does; smoothing keeps it finite when an n-gram vanishes.
  """
  p_c, q_c = ngram_counts(real_texts, n), ngram_counts(texts, n)
  keys = sorted(set(p_c) | set(q_c))
  p = np.asarray([p_c.get(k, 0) for k in keys], np.float64) + alpha
  q = np.asarray([q_c.get(k, 0) for k in keys], np.float64) + alpha
  p, q = p / p.sum(), q / q.sum()
  return float((p * np.log2(p / q)).sum())


def diversity_report(texts: Sequence[Text], real_texts: Sequence[Text] | None = None,
                     rare: frozenset | None = None) -> dict[str, float]:
  """distinct-1/2/4, unigram/bigram entropy, and (given real data) rare mass and KL."""
  out = {'n_texts': float(len(texts)),
         'mean_bytes': float(np.mean([len(_bytes(t)) for t in texts])) if texts else 0.0,
         'distinct_1': distinct_n(texts, 1), 'distinct_2': distinct_n(texts, 2),
         'distinct_4': distinct_n(texts, 4),
         'unigram_entropy': unigram_entropy(texts),
         'bigram_entropy': bigram_entropy(texts)}
  if real_texts is not None:
    rare = rare if rare is not None else rare_tokens(real_texts)
    out['rare_mass'] = rare_token_mass(texts, rare)
    out['kl_to_real'] = kl_to_real(texts, real_texts, 1)
    out['kl2_to_real'] = kl_to_real(texts, real_texts, 2)
  return out
