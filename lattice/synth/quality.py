"""Quality control for synthetic data: verifiers, rejection sampling, dedup.

A verifier is any `(question, answer) -> bool`. `exact` wraps a task's checker;
`NoisyVerifier` flips a base verifier's verdicts at set rates, deterministically
per sample (Feng et al. 2024, arXiv 2406.07515: even an imperfect selector of
synthetic data prevents collapse). Near-duplicates are found with MinHash over
byte n-gram shingles and LSH banding (Broder 1997).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence

import numpy as np

Verifier = Callable[[str, str], bool]
_MERSENNE = (1 << 31) - 1  # MinHash family (a*x + b) mod p; a*x + b < 2**62 fits uint64.


def exact(check: Callable[[str, str], bool]) -> Verifier:
  """The task's own exact checker as a verifier."""
  return lambda q, a: bool(check(q, a))


def _unit(*parts: object) -> float:
  h = hashlib.sha256('\x1f'.join(map(str, parts)).encode()).digest()
  return int.from_bytes(h[:8], 'little') / 2**64


@dataclasses.dataclass(frozen=True)
class NoisyVerifier:
  """`base` with its verdicts flipped: a correct sample is rejected with
  probability `false_reject`, a wrong one accepted with `false_accept`.

  The coin for a sample is a hash of (seed, question, answer), so the verdict on a
  given sample never changes between calls (like a fixed, imperfect model).
  """
  base: Verifier
  false_reject: float = 0.2
  false_accept: float = 0.2
  seed: int = 0

  def __post_init__(self):
    for name in ('false_reject', 'false_accept'):
      v = getattr(self, name)
      if not 0.0 <= v <= 1.0:
        raise ValueError(f'NoisyVerifier.{name} must lie in [0, 1], got {v}')

  def __call__(self, question: str, answer: str) -> bool:
    truth = self.base(question, answer)
    u = _unit(self.seed, question, answer)
    return (u >= self.false_reject) if truth else (u < self.false_accept)


@dataclasses.dataclass
class RejectionStats:
  proposed: int = 0
  accepted: int = 0
  rounds: int = 0

  @property
  def accept_rate(self) -> float:
    return self.accepted / self.proposed if self.proposed else 0.0


def rejection_sample(propose: Callable[[int], Sequence[tuple[str, str]]],
                     verifier: Verifier | None, n_target: int, max_rounds: int = 10,
                     ) -> tuple[list[tuple[str, str]], RejectionStats]:
  """Calls `propose(round)` until `n_target` samples pass `verifier` (None: all pass).

  Returns the first `n_target` accepted (question, answer) pairs (fewer if
  `max_rounds` ran out) and the counts behind the acceptance rate.
  """
  kept: list[tuple[str, str]] = []
  stats = RejectionStats()
  while len(kept) < n_target and stats.rounds < max_rounds:
    batch = propose(stats.rounds)
    stats.rounds += 1
    stats.proposed += len(batch)
    for q, a in batch:
      if verifier is None or verifier(q, a):
        kept.append((q, a))
    if not batch:
      break
  stats.accepted = len(kept)
  return kept[:n_target], stats


def exact_dedup(texts: Sequence[str | bytes]) -> list[int]:
  """Indices of the first occurrence of each text after whitespace normalization."""
  seen, keep = set(), []
  for i, t in enumerate(texts):
    b = t.encode('utf-8') if isinstance(t, str) else bytes(t)
    h = hashlib.sha1(b' '.join(b.split())).digest()
    if h not in seen:
      seen.add(h)
      keep.append(i)
  return keep


def shingles(text: str | bytes, n: int = 5) -> np.ndarray:
  """uint64 hashes (< 2**31 - 1) of the distinct byte n-grams of `text`."""
  b = text.encode('utf-8') if isinstance(text, str) else bytes(text)
  grams = {b[i:i + n] for i in range(max(len(b) - n + 1, 1))}
  return np.fromiter(
      (int.from_bytes(hashlib.blake2b(g, digest_size=8).digest(), 'little') % _MERSENNE
       for g in grams), np.uint64, len(grams))


@dataclasses.dataclass(frozen=True)
class MinHasher:
  """`num_perm` MinHash functions; signatures agree in a fraction ~= Jaccard."""
  num_perm: int = 64
  ngram: int = 5
  seed: int = 0

  def _ab(self) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(self.seed)
    a = rng.integers(1, _MERSENNE, self.num_perm, dtype=np.uint64)
    b = rng.integers(0, _MERSENNE, self.num_perm, dtype=np.uint64)
    return a, b

  def signature(self, text: str | bytes) -> np.ndarray:
    a, b = self._ab()
    x = shingles(text, self.ngram)
    return ((a[:, None] * x[None, :] + b[:, None]) % np.uint64(_MERSENNE)).min(axis=1)


def jaccard(a: str | bytes, b: str | bytes, n: int = 5) -> float:
  """Exact Jaccard similarity of two texts' byte n-gram sets."""
  sa, sb = set(shingles(a, n).tolist()), set(shingles(b, n).tolist())
  return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def minhash_dedup(texts: Sequence[str | bytes], threshold: float = 0.7,
                  hasher: MinHasher = MinHasher(), bands: int = 16) -> list[int]:
  """Indices of texts to keep: each is kept unless an earlier kept text shares an
  LSH band with it and their MinHash-estimated Jaccard is >= `threshold`."""
  if hasher.num_perm % bands:
    raise ValueError(f'minhash_dedup: bands ({bands}) must divide num_perm '
                     f'({hasher.num_perm})')
  rows = hasher.num_perm // bands
  buckets: dict[tuple[int, bytes], list[int]] = {}
  sigs: dict[int, np.ndarray] = {}
  keep = []
  for i, t in enumerate(texts):
    sig = hasher.signature(t)
    keys = [(j, sig[j * rows:(j + 1) * rows].tobytes()) for j in range(bands)]
    candidates = {k for key in keys for k in buckets.get(key, ())}
    if any(np.mean(sigs[k] == sig) >= threshold for k in candidates):
      continue
    keep.append(i)
    sigs[i] = sig
    for key in keys:
      buckets.setdefault(key, []).append(i)
  return keep
