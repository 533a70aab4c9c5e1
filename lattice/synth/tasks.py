"""A checkable arithmetic task for verified-synthesis experiments.

Uses `lattice.data.tasks.arithmetic` (`generate(n, seed, split)`,
`check(question, answer)`, `format_example`: modular expressions such as
'3+5*2-4 mod 7 =' -> '2') when that module exists; otherwise this small fallback:
'a+b=' questions over `digits`-digit operands, the answer the decimal sum. Train
and test questions are disjoint: a question belongs to 'test' when a hash of it is
below `TEST_FRACTION`.
"""

from __future__ import annotations

import hashlib
import importlib
import re

import numpy as np

TEST_FRACTION = 0.2
_QUESTION = re.compile(r'^\s*(\d+)\s*([+\-*])\s*(\d+)\s*=\s*$')


def is_test(question: str) -> bool:
  """Whether `question` belongs to the held-out split (a hash of its text, so of its
  operands and operator, is below TEST_FRACTION): a held-out question never occurs
  in 'train', whatever the seed."""
  h = int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], 'little')
  return h / 2**64 < TEST_FRACTION



def fallback_generate(n: int, seed: int, split: str = 'train',
                      digits: int = 2) -> list[tuple[str, str]]:
  """`n` (question, answer) pairs of `split` ('train' | 'test'), deterministic."""
  if split not in ('train', 'test'):
    raise ValueError(f'split must be train or test, got {split!r}')
  rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
  out = []
  while len(out) < n:
    a, b = rng.integers(0, 10**digits, size=2)
    q = f'{a}+{b}='
    if is_test(q) == (split == 'test'):
      out.append((q, str(a + b)))
  return out


def solve(question: str) -> str | None:
  """The exact answer of an 'a+b=' / 'a-b=' / 'a*b=' question, or None if malformed."""
  m = _QUESTION.match(question)
  if m is None:
    return None
  a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
  return str(a + b if op == '+' else a - b if op == '-' else a * b)


def fallback_check(question: str, answer: str) -> bool:
  want = solve(question)
  return want is not None and answer.strip() == want


# The held-out addition task (verified_synthetic): 'a+b=' over `digits`-digit
# operands, test operand pairs disjoint from train ones, used whichever backend
# `generate`/`check` pick.
held_out_generate = fallback_generate
held_out_check = fallback_check


def _backend():
  try:
    mod = importlib.import_module('lattice.data.tasks.arithmetic')
  except ImportError:
    return None
  if hasattr(mod, 'generate') and hasattr(mod, 'check'):
    return mod
  return None


def generate(n: int, seed: int, split: str = 'train', **kwargs) -> list[tuple[str, str]]:
  """`kwargs` (e.g. max_ops) go to lattice.data.tasks.arithmetic; the fallback
  takes `digits`."""
  mod = _backend()
  return mod.generate(n, seed, split, **kwargs) if mod else fallback_generate(
      n, seed, split, **kwargs)


def check(question: str, answer: str) -> bool:
  mod = _backend()
  return bool(mod.check(question, answer)) if mod else fallback_check(question, answer)


def source_name() -> str:
  return 'lattice.data.tasks.arithmetic' if _backend() else 'lattice.synth.tasks fallback'


def format_example(question: str, answer: str) -> str:
  """The training document of one pair: 'Q A'."""
  mod = _backend()
  if mod is not None and hasattr(mod, 'format_example'):
    return mod.format_example(question, answer)
  return f'{question} {answer}'


def prompt_of(question: str) -> str:
  """What a model is prompted with to answer `question` (the document up to A)."""
  doc = format_example(question, '\x00')
  return doc[:doc.index('\x00')]


def answer_of(question: str, document: str) -> str | None:
  """The answer part of a generated document for `question` (None if it does not
  start with the prompt)."""
  prompt = prompt_of(question)
  return document[len(prompt):] if document.startswith(prompt) else None
