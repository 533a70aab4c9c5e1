"""A byte-level interpolated Kneser-Ney n-gram model: the baseline an LM must beat.

A model's validation bits per byte mean little alone; below a unigram model they
only show that it learned byte frequencies. A byte 4-gram with Kneser-Ney smoothing,
fitted on the same training text, is the classical baseline (Chen & Goodman 1999,
"An Empirical Study of Smoothing Techniques for Language Modeling", Computer Speech
and Language 13(4), sec. 3 "interpolated Kneser-Ney", eq. 17-18; the per-order
discount D = n1 / (n1 + 2 n2) is Ney, Essen & Kneser 1994, eq. 13, with n_r the
number of n-grams seen exactly r times at that order):

  P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h .) + D_k N1+(h .) / c_k(h .) P_{k-1}(w | h')

where h' drops h's first byte, c_k is the raw count at the highest order and the
continuation count N1+(. h w) (distinct bytes seen before h w) at every lower order,
and P_0 is uniform over the 256 bytes. A context never seen at order k passes the
lower order's distribution through unchanged. Near the start of a text the context
is shorter than n - 1 bytes and the model of that length is used.

Hand-written (about a page) because the libraries that fit KN models either need a
compiled toolkit and on-disk ARPA files (KenLM) or are far too slow for millions of
bytes (nltk.lm); everything here is plain dicts and numpy.
"""

from __future__ import annotations

import collections
from typing import Iterable

import numpy as np

N_BYTES = 256


class ByteKneserNey:
  """An interpolated Kneser-Ney model over bytes of order `order` (>= 1).

  Use: `ByteKneserNey(4).fit(texts)`, then `bits(text)` (per-byte -log2 p),
  `distribution(context)` (float64[256]) or `sample(prompt, n, rng)`.

  Raises:
    ValueError: order < 1, fitting on no bytes, or using the model before `fit`.
  """

  def __init__(self, order: int = 4):
    if order < 1:
      raise ValueError(f'ngram order: must be >= 1, got {order}')
    self.order = order
    # tables[k][h] = (counts {next byte: count}, total, distinct next bytes), for
    # contexts h of length k (k = 0 .. order - 1); discounts[k] is D for that order.
    self.tables: list[dict[bytes, tuple[dict[int, int], int, int]]] = []
    self.discounts: list[float] = []

  def fit(self, texts: Iterable[bytes]) -> 'ByteKneserNey':
    """Counts every n-gram (n <= order) inside each text (none cross texts)."""
    n = self.order
    top: collections.Counter[bytes] = collections.Counter()
    for t in texts:
      t = bytes(t)
      top.update(t[i:i + n] for i in range(len(t) - n + 1))
      # Shorter prefixes: the n-grams that start a text, so lower orders see them.
      top.update(t[:k] for k in range(1, min(n, len(t) + 1)))
    if not top:
      raise ValueError('ngram fit: no bytes to count')
    grams = [collections.Counter() for _ in range(n + 1)]   # by length
    for g, c in top.items():
      grams[len(g)][g] = c
    # Continuation counts: each distinct (k+1)-gram x h w adds 1 to the k-gram h w.
    for k in range(n - 1, 0, -1):
      cont: collections.Counter[bytes] = collections.Counter()
      for g in grams[k + 1]:
        cont[g[1:]] += 1
      # Text-initial k-grams have no byte before them: count them once too.
      for g in grams[k]:
        if g not in cont:
          cont[g] = 1
      grams[k] = cont
    self.tables, self.discounts = [], []
    for k in range(1, n + 1):
      table: dict[bytes, tuple[dict[int, int], int, int]] = {}
      for g, c in grams[k].items():
        nxt = table.setdefault(g[:-1], ({}, 0, 0))[0]
        nxt[g[-1]] = c
      self.tables.append({h: (d, sum(d.values()), len(d)) for h, (d, _, _) in table.items()})
      r = collections.Counter(grams[k].values())
      n1, n2 = r.get(1, 0), r.get(2, 0)
      self.discounts.append(n1 / (n1 + 2 * n2) if n1 + n2 else 0.5)
    return self

  def _check(self):
    if not self.tables:
      raise ValueError('ngram: call fit() before using the model')

  def prob(self, context: bytes, byte: int) -> float:
    """P(byte | the last order - 1 bytes of context)."""
    self._check()
    p = 1.0 / N_BYTES
    for k in range(min(len(context), self.order - 1) + 1):
      entry = self.tables[k].get(context[len(context) - k:] if k else b'')
      if entry is None:
        break   # unseen at order k, so unseen at every longer context too
      counts, total, types = entry
      d = self.discounts[k]
      p = (max(counts.get(byte, 0) - d, 0.0) + d * types * p) / total
    return p

  def distribution(self, context: bytes) -> np.ndarray:
    """float64[256]: P(. | the last order - 1 bytes of context); sums to 1."""
    self._check()
    p = np.full(N_BYTES, 1.0 / N_BYTES)
    for k in range(min(len(context), self.order - 1) + 1):
      entry = self.tables[k].get(context[len(context) - k:] if k else b'')
      if entry is None:
        break
      counts, total, types = entry
      d = self.discounts[k]
      c = np.zeros(N_BYTES)
      c[list(counts)] = list(counts.values())
      p = (np.maximum(c - d, 0.0) + d * types * p) / total
    return p

  def bits(self, text: bytes) -> np.ndarray:
    """float64[len(text)]: -log2 P(text[i] | text[:i]) for every byte of `text`."""
    text = bytes(text)
    return np.asarray([-np.log2(self.prob(text[max(0, i - self.order + 1):i], b))
                       for i, b in enumerate(text)])

  def bits_per_byte(self, texts: Iterable[bytes]) -> float:
    """Total -log2 p over every byte of `texts` / their byte count (each text scored
    from its own start). Raises ValueError when the texts hold no bytes."""
    total = n = 0.0
    for t in texts:
      b = self.bits(t)
      total, n = total + float(b.sum()), n + len(b)
    if not n:
      raise ValueError('ngram bits_per_byte: no bytes to score')
    return total / n

  def sample(self, prompt: bytes, n_new: int, rng: np.random.Generator, *,
             temperature: float = 1.0, top_k: int = 0) -> bytes:
    """`n_new` bytes continuing `prompt`, drawn from p^(1/temperature) restricted to
    the `top_k` most likely bytes (0: all), as `lattice.decode.sampling` treats a
    model's distribution; temperature 0 is greedy."""
    out = bytearray(prompt)
    for _ in range(n_new):
      p = self.distribution(bytes(out[-(self.order - 1):]) if self.order > 1 else b'')
      if temperature <= 0:
        out.append(int(np.argmax(p)))
        continue
      logits = np.log(np.maximum(p, 1e-300)) / temperature
      if 0 < top_k < N_BYTES:
        logits[np.argsort(logits)[:-top_k]] = -np.inf
      q = np.exp(logits - logits.max())
      out.append(int(rng.choice(N_BYTES, p=q / q.sum())))
    return bytes(out[len(prompt):])
