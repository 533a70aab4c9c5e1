"""A checkable task for Mixture-of-Agents runs: fixed-width addition, plus its
aggregation data.

A question is `"dd+dd="` (two DIGITS = 2-digit numbers); its exact answer is the
sum as DIGITS + 1 zero-padded digits (`"12+45="` -> `"057"`). Small models get it partly right,
with digit-level (carry) errors, so proposers of different quality and a trained
aggregator have something to combine, and every answer is checked exactly.

Two data sources (`data.source=`, listed in lattice.data.sources.SOURCES):
  moa_arith      documents `question + answer` (proposers learn the task);
  moa_aggregate  documents `question + |cand|...|cand| + > + answer`: the
                 aggregator learns to read [question; candidate answers] and write
                 the answer. Candidates are the true answer with digits corrupted
                 (mostly off by one, like a carry error) at a rate drawn per
                 candidate, so some candidates are right and some are not, and the
                 number of candidates varies (1..MAX_CANDIDATES).

Every prompt of a kind has the same length (candidates are normalized to the answer
width), which suits `sampling.generate`'s equal-length batches.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence

import grain
import numpy as np

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib


DIGITS = 2
ANSWER_WIDTH = DIGITS + 1
MAX_CANDIDATES = 6
N_TRAIN, N_VAL = 6_000, 256
_TRAIN_SEED, _VAL_SEED = 0, 1
# Per-candidate digit corruption rates the aggregator trains on: from perfect to
# mostly wrong, so it learns to weigh agreement rather than trust any one slot.
_CORRUPT_RANGE = (0.0, 0.6)


def question(a: int, b: int) -> str:
  return f'{a:0{DIGITS}d}+{b:0{DIGITS}d}='


def answer_of(q: str) -> str:
  a, b = q.rstrip('=').split('+')
  return f'{int(a) + int(b):0{ANSWER_WIDTH}d}'


def questions(n: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
  """`n` distinct questions drawn with `seed`, none of them in `exclude`."""
  rng = np.random.default_rng(seed)
  out, seen = [], set(exclude)
  lo, hi = 10 ** (DIGITS - 1), 10 ** DIGITS
  while len(out) < n:
    q = question(int(rng.integers(lo, hi)), int(rng.integers(lo, hi)))
    if q not in seen:
      seen.add(q)
      out.append(q)
  return out


def normalize(answer: str) -> str:
  """A candidate as exactly ANSWER_WIDTH ASCII characters: '?' replaces what is
  missing, non-ASCII, or a delimiter of the aggregation prompt (so the prompt's
  byte length never varies)."""
  answer = ''.join(c if c.isascii() and c.isprintable() and c not in '|>' else '?'
                   for c in answer.strip()[:ANSWER_WIDTH])
  return answer + '?' * (ANSWER_WIDTH - len(answer))


EMPTY_SLOT = '-' * ANSWER_WIDTH


def aggregate_prompt(q: str, candidates: Sequence[str]) -> str:
  """The aggregator's input `q|c1|...|c6|>`, answered after '>'. Always
  MAX_CANDIDATES slots (unused ones '----'), so every aggregation prompt has one
  length and one compiled decode serves them all."""
  if len(candidates) > MAX_CANDIDATES:
    raise ValueError(f'aggregate_prompt: at most {MAX_CANDIDATES} candidates, got '
                     f'{len(candidates)}')
  slots = [normalize(c) for c in candidates]
  slots += [EMPTY_SLOT] * (MAX_CANDIDATES - len(slots))
  return q + '|' + '|'.join(slots) + '|>'


def is_correct(q: str, answer: str) -> bool:
  return answer.strip() == answer_of(q)


def corrupt(answer: str, rate: float, rng: np.random.Generator) -> str:
  """Each digit is wrong with probability `rate` (off by one 70%, else random)."""
  out = []
  for ch in answer:
    if rng.random() < rate:
      d = int(ch)
      if rng.random() < 0.7:
        d = (d + (1 if rng.random() < 0.5 else -1)) % 10
      else:
        d = (d + int(rng.integers(1, 10))) % 10
      ch = str(d)
    out.append(ch)
  return ''.join(out)


def aggregate_doc(q: str, rng: np.random.Generator) -> str:
  ans = answer_of(q)
  k = int(rng.integers(1, MAX_CANDIDATES + 1))
  cands = [corrupt(ans, float(rng.uniform(*_CORRUPT_RANGE)), rng) for _ in range(k)]
  return aggregate_prompt(q, cands) + ans


def train_questions(n: int) -> list[str]:
  """The first `n` questions of the training source (the proposers' training set)."""
  return questions(min(n, N_TRAIN), _TRAIN_SEED)


def eval_questions(n: int, seed: int = 2) -> list[str]:
  """Held-out questions: none appears in either training source."""
  return questions(n, seed, frozenset(questions(N_TRAIN, _TRAIN_SEED)))


def _docs(kind: str, split: str) -> list[str]:
  n, seed = (N_TRAIN, _TRAIN_SEED) if split == 'train' else (N_VAL, _VAL_SEED)
  qs = questions(n, seed)
  if kind == 'moa_arith':
    return [q + answer_of(q) for q in qs]
  rng = np.random.default_rng(seed + 100)
  return [aggregate_doc(q, rng) for q in qs]


_CACHE: dict[tuple[str, str], list[str]] = {}


def source(kind: str):
  """The data source of `kind` ('moa_arith' | 'moa_aggregate'): (config, split) -> docs."""
  def fn(data_cfg: config_lib.DataConfig, split: str) -> grain.MapDataset:
    del data_cfg
    if (kind, split) not in _CACHE:
      _CACHE[(kind, split)] = _docs(kind, split)
    return grain.MapDataset.source(_CACHE[(kind, split)])
  return fn

