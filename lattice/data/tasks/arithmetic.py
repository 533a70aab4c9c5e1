"""Modular arithmetic with in- and out-of-distribution splits (Gloeckle et al. 2024, §4.2).

Gloeckle et al. (arXiv 2404.19737) train on arithmetic with a bounded number of
operations and test on more operations than seen in training: multi-token
prediction helps most out of distribution. We use integer expressions mod a small
prime with `+ - *` and the usual precedence (`*` before `+ -`), e.g.

  question  '3+5*2-4 mod 7 ='      answer  '2'

Splits: 'train' and 'test' draw 1..`max_ops` operations (in distribution, from
independent seed streams: short questions can recur, the space is small);
'ood' draws `max_ops + 1 .. 2 * max_ops` operations.

Public API (also used as a checkable teacher task by lattice/synth):
  generate(n, seed, split) -> [(question, answer)]   deterministic in (n, seed, split)
  check(question, answer) -> bool                    parses the question, recomputes
  format_example(question, answer) -> str            the training text of one pair
The `arithmetic` data source serves 'train' as training documents and 'test' as
validation; `arithmetic_ood` serves 'ood' as its validation split.
"""

from __future__ import annotations

import re

import grain
import numpy as np

SPLITS = ('train', 'test', 'ood')
MODULUS = 7
MAX_OPS = 4
OPS = '+-*'
_QUESTION = re.compile(r'^\s*([0-9+\-* ]+?)\s+mod\s+(\d+)\s*=\s*$')
_TOKEN = re.compile(r'\d+|[+\-*]')


def _rng(seed: int, split: str) -> np.random.Generator:
  if split not in SPLITS:
    raise ValueError(f'arithmetic: split must be one of {SPLITS}, got {split!r}')
  return np.random.default_rng([seed, SPLITS.index(split), 0xA217])


def op_range(split: str, max_ops: int = MAX_OPS) -> tuple[int, int]:
  """Inclusive range of operation counts a split draws from."""
  return (max_ops + 1, 2 * max_ops) if split == 'ood' else (1, max_ops)


def evaluate(expression: str, modulus: int) -> int:
  """Value of `a op b op c ...` (`*` binds tighter than `+ -`) mod `modulus`."""
  tokens = _TOKEN.findall(expression)
  if (not tokens or len(tokens) % 2 == 0
      or ''.join(tokens) != expression.replace(' ', '')):
    raise ValueError(f'arithmetic: malformed expression {expression!r}')
  numbers, ops = tokens[0::2], tokens[1::2]
  if not all(t.isdigit() for t in numbers) or not all(o in OPS for o in ops):
    raise ValueError(f'arithmetic: malformed expression {expression!r}')
  total, term = 0, int(numbers[0])
  sign = 1
  for op, number in zip(ops, numbers[1:]):
    if op == '*':
      term = term * int(number)
    else:
      total += sign * term
      sign, term = (1 if op == '+' else -1), int(number)
  return (total + sign * term) % modulus


def question_of(expression: str, modulus: int) -> str:
  return f'{expression} mod {modulus} ='


def generate(n: int, seed: int, split: str, *, modulus: int = MODULUS,
             max_ops: int = MAX_OPS) -> list[tuple[str, str]]:
  """`n` (question, answer) pairs of `split`, deterministic in (n, seed, split).

  The first k pairs of generate(n) equal generate(k) for k <= n.
  """
  if modulus < 2:
    raise ValueError(f'arithmetic: modulus must be >= 2, got {modulus}')
  if max_ops < 1:
    raise ValueError(f'arithmetic: max_ops must be >= 1, got {max_ops}')
  rng = _rng(seed, split)
  lo, hi = op_range(split, max_ops)
  out = []
  for _ in range(n):
    n_ops = int(rng.integers(lo, hi + 1))
    numbers = rng.integers(0, modulus, n_ops + 1)
    ops = rng.integers(0, len(OPS), n_ops)
    expression = str(numbers[0]) + ''.join(
        OPS[o] + str(x) for o, x in zip(ops, numbers[1:]))
    out.append((question_of(expression, modulus), str(evaluate(expression, modulus))))
  return out


def check(question: str, answer: str) -> bool:
  """True when `answer` is the value of `question` (False for malformed input)."""
  match = _QUESTION.match(question)
  if not match:
    return False
  try:
    want = evaluate(match.group(1), int(match.group(2)))
    return int(answer.strip()) == want
  except ValueError:
    return False


def format_example(question: str, answer: str) -> str:
  """The training document of one pair: 'Q A' (the answer follows '= ')."""
  return f'{question} {answer}'


class _Examples:
  """Lazily generated documents, example i from its own seed: a grain data source."""

  def __init__(self, n: int, seed: int, split: str):
    self._n, self._seed, self._split = n, seed, split

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i: int) -> str:
    (q, a), = generate(1, self._seed * 1_000_003 + int(i), self._split)
    return format_example(q, a)


# Documents per split of the registered sources: the train split is effectively
# unbounded for small runs (each doc is ~20 bytes; 2^20 docs ~ 20 MB of text).
TRAIN_DOCS = 1 << 20
EVAL_DOCS = 4096


def source(split_map: dict[str, str]):
  """A data source (`lattice.data.sources.SOURCES`) serving our splits as train/validation."""

  def fn(data_cfg, split: str) -> grain.MapDataset:
    ours = split_map[split]
    n = TRAIN_DOCS if split == 'train' else EVAL_DOCS
    return grain.MapDataset.source(_Examples(n, data_cfg.shuffle_seed, ours))

  return fn
