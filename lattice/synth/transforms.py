"""Phi-4-style programmatic transformations (arXiv 2412.08905, section 2).

- `augment_arithmetic`: templated rewrite-and-augment of seed questions (replace
  one number, or append an identity operation '+0' / '*1'), producing new questions
  whose answers a model must supply and a verifier must accept.
- `self_revise`: a draft that fails the verifier is revised (re-sampled) up to
  `rounds` times; returns the final answers and the pass rate after each round.
- `instruction_reversal`: for code, generate an instruction (docstring) from a
  function, regenerate the function from the instruction, and keep only pairs that
  round-trip (the regenerated signature matches the original's).

Models enter as plain callables (`answer(questions, round) -> answers`,
`describe(codes) -> docs`, `implement(docs, names) -> codes`), so these work with
any sampler: the experiments pass `lattice.synth.generate.sample` closures.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np

from lattice.synth import quality

_NUMBER = re.compile(r'\d+')
_MOD = re.compile(r'\bmod\s+(\d+)')


def _expression_end(q: str) -> int:
  """Index where the expression part of a question ends (before 'mod' or '=')."""
  m = _MOD.search(q)
  return m.start() if m else q.index('=') if '=' in q else len(q)


def _perturb_number(q: str, rng: np.random.Generator) -> str | None:
  """Replaces one number of the expression by another in the same range."""
  end = _expression_end(q)
  spans = [m.span() for m in _NUMBER.finditer(q[:end])]
  if not spans:
    return None
  a, b = spans[int(rng.integers(len(spans)))]
  mod = _MOD.search(q)
  hi = int(mod.group(1)) if mod else 10 ** (b - a)
  return f'{q[:a]}{int(rng.integers(0, hi))}{q[b:]}'


def _append_identity(q: str, rng: np.random.Generator) -> str | None:
  """'E mod m =' -> 'E+0 mod m =' or 'E*1 mod m =' ('*1' binds to the last term
  only, which keeps the value too): a new question with the same answer."""
  end = _expression_end(q)
  expr = q[:end].rstrip()
  if not expr or not expr[-1].isdigit():
    return None
  return f'{expr}{"+0" if rng.random() < 0.5 else "*1"}{q[len(expr):]}'


TEMPLATES: dict[str, Callable[[str, np.random.Generator], str | None]] = {
    'perturb_number': _perturb_number, 'append_identity': _append_identity}


def augment_arithmetic(seeds: Sequence[str], n: int, seed: int,
                       templates: Sequence[str] = tuple(TEMPLATES)) -> list[str]:
  """`n` new questions made from random seeds by random templates; seeds that a
  template cannot parse are skipped (returns fewer if none parse)."""
  rng = np.random.default_rng(seed)
  out: list[str] = []
  tries = 0
  while len(out) < n and tries < 20 * n:
    tries += 1
    q = seeds[int(rng.integers(len(seeds)))]
    new = TEMPLATES[templates[int(rng.integers(len(templates)))]](q, rng)
    if new is not None:
      out.append(new)
  return out


def self_revise(questions: Sequence[str],
                answer: Callable[[Sequence[str], int], Sequence[str]],
                verifier: quality.Verifier, rounds: int = 3,
                ) -> tuple[list[str], list[float]]:
  """Drafts answers, then re-asks only the questions whose answer fails `verifier`.

  Returns the final answers (the last attempt where none passed) and the fraction
  passing after the draft and after each revision round.
  """
  answers = list(answer(questions, 0))
  ok = [verifier(q, a) for q, a in zip(questions, answers)]
  pass_rates = [float(np.mean(ok)) if ok else 0.0]
  for r in range(1, rounds + 1):
    todo = [i for i, good in enumerate(ok) if not good]
    if not todo:
      pass_rates.append(pass_rates[-1])
      continue
    redo = answer([questions[i] for i in todo], r)
    for i, a in zip(todo, redo):
      answers[i] = a
      ok[i] = verifier(questions[i], a)
    pass_rates.append(float(np.mean(ok)))
  return answers, pass_rates


@dataclasses.dataclass(frozen=True)
class Function:
  name: str
  signature: str  # 'def name(args):'
  body: str       # the source without its docstring
  doc: str


def extract_functions(source: str, max_lines: int = 12) -> list[Function]:
  """Top-level functions of `source` with at most `max_lines` lines; unparsable
  sources give none."""
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return []
  lines = source.splitlines()
  out = []
  for node in tree.body:
    if not isinstance(node, ast.FunctionDef) or node.end_lineno is None:
      continue
    if node.end_lineno - node.lineno + 1 > max_lines:
      continue
    code = '\n'.join(lines[node.lineno - 1:node.end_lineno])
    sig = lines[node.lineno - 1].strip()
    if not sig.endswith(':'):
      continue
    doc = ast.get_docstring(node) or ''
    out.append(Function(node.name, sig, code, doc))
  return out


def signature_of(code: str) -> str | None:
  """The first 'def name(...):' line of generated code, whitespace-normalized."""
  for line in code.splitlines():
    line = line.strip()
    if line.startswith('def ') and line.endswith(':'):
      return ' '.join(line.split())
  return None


@dataclasses.dataclass
class ReversalResult:
  kept: list[tuple[str, Function]]  # (generated docstring, function)
  tried: int

  @property
  def keep_rate(self) -> float:
    return len(self.kept) / self.tried if self.tried else 0.0


def instruction_reversal(functions: Sequence[Function],
                         describe: Callable[[Sequence[Function]], Sequence[str]],
                         implement: Callable[[Sequence[str]], Sequence[str]],
                         ) -> ReversalResult:
  """Keeps (instruction, function) pairs whose regeneration round-trips.

  `describe` writes an instruction per function; `implement` writes code from each
  instruction alone. A pair is kept when the instruction is non-empty and the
  regenerated code's signature equals the original's (names and arguments: a
  check a tiny model rarely passes, which is the honest point of the filter).
  """
  docs = list(describe(functions))
  codes = list(implement(docs))
  kept = []
  for fn, doc, code in zip(functions, docs, codes):
    if doc.strip() and signature_of(code) == ' '.join(fn.signature.split()):
      kept.append((doc, fn))
  return ReversalResult(kept, len(functions))
