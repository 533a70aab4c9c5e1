"""Known-word rate: a sample-quality measure that needs more than a few bytes of context.

A byte n-gram of order n strings together n-byte pieces it has seen, so its short
words are real but its long words are often blends of two ("assertRaisesRegex" ->
"assertRaisesult"). The known-word rate of a text is the share of its long words
(identifier-like runs of letters, digits and `_` starting with a letter or `_`, of
at least `min_len` characters; default 6, longer than a 4-gram's 3-byte context)
that occur in a reference vocabulary, the long words of the training text. Real
held-out text scores near 1, and a model scores above its n-gram baseline only when
it carries context across whole words.
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np


def long_words(text: str, min_len: int = 6, *, whole: bool = False) -> list[str]:
  """The identifier-like words of `text` with at least `min_len` characters; with
  `whole`, only those that touch neither end of `text` (a window cut from longer
  text, or a sample cut at its length limit, may end mid-word)."""
  if min_len < 1:
    raise ValueError(f'long_words min_len: must be >= 1, got {min_len}')
  found = re.finditer(r'[A-Za-z_][A-Za-z0-9_]{%d,}' % (min_len - 1), text)
  return [m.group() for m in found
          if not whole or (m.start() > 0 and m.end() < len(text))]


def vocabulary(texts: Iterable[str], min_len: int = 6) -> frozenset[str]:
  """Every long word of `texts` (the reference vocabulary)."""
  out: set[str] = set()
  for t in texts:
    out.update(long_words(t, min_len))
  return frozenset(out)


def known_rates(texts: Iterable[str], vocab: frozenset[str], min_len: int = 6
                ) -> np.ndarray:
  """float64[n_texts]: per text, the share of its whole long words (`long_words`
  with `whole=True`) found in `vocab` (NaN for a text with none)."""
  rates = []
  for t in texts:
    words = long_words(t, min_len, whole=True)
    rates.append(sum(w in vocab for w in words) / len(words) if words else np.nan)
  return np.asarray(rates, np.float64)


def difference_ci(a: np.ndarray, b: np.ndarray, *, level: float = 0.95,
                  n_resamples: int = 2000, seed: int = 0) -> dict[str, float]:
  """Mean of `a` minus mean of `b` (NaNs dropped) with a percentile bootstrap CI,
  resampling the texts of each group independently (Efron & Tibshirani 1993, "An
  Introduction to the Bootstrap", ch. 13). Returns {'diff', 'lo', 'hi', 'n_a', 'n_b'}.

  Raises:
    ValueError: a group with fewer than 2 non-NaN values.
  """
  a, b = (np.asarray(x, np.float64) for x in (a, b))
  a, b = a[~np.isnan(a)], b[~np.isnan(b)]
  if len(a) < 2 or len(b) < 2:
    raise ValueError(f'difference_ci: need >= 2 texts with long words per group, got '
                     f'{len(a)} and {len(b)}')
  rng = np.random.default_rng(seed)
  diffs = (a[rng.integers(0, len(a), (n_resamples, len(a)))].mean(1)
           - b[rng.integers(0, len(b), (n_resamples, len(b)))].mean(1))
  tail = 100 * (1 - level) / 2
  return {'diff': float(a.mean() - b.mean()), 'lo': float(np.percentile(diffs, tail)),
          'hi': float(np.percentile(diffs, 100 - tail)), 'n_a': len(a), 'n_b': len(b)}
