"""Aggregator training data from real proposer samples (Mixture-of-Agents).

An aggregator trained only on synthetic corruptions of the true answer learns a
per-slot vote that does not match what real proposers get wrong. Here it learns
from what the proposers actually write: each training question is answered by
every proposer (sampled, `samples` times each), and each training document is
`fmt(question, candidates) + true answer`, where the candidates are a random subset
(1..max_candidates, random order) of those real answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lattice.agents.generator import Generator


def sampled_docs(questions: Sequence[str], proposers: Sequence[Generator], *,
                 answer_of: Callable[[str], str],
                 fmt: Callable[[str, list[str]], str], samples: int,
                 max_candidates: int, temperature: float, max_tokens: int,
                 seed: int = 0) -> list[str]:
  """One aggregator document per question, built from real sampled answers.

  Raises ValueError when there is no proposer, samples < 1 or max_candidates < 1.
  """
  if not proposers or samples < 1 or max_candidates < 1:
    raise ValueError(f'sampled_docs: needs proposers, samples >= 1 and '
                     f'max_candidates >= 1, got {len(proposers)}, {samples}, '
                     f'{max_candidates}')
  answers = [[] for _ in questions]
  for gen in proposers:
    for _ in range(samples):
      for i, a in enumerate(gen.generate(list(questions), max_tokens, temperature)):
        answers[i].append(a)
  rng = np.random.default_rng(seed)
  docs = []
  for q, cands in zip(questions, answers):
    k = int(rng.integers(1, min(max_candidates, len(cands)) + 1))
    pick = [cands[j] for j in rng.permutation(len(cands))[:k]]
    docs.append(fmt(q, pick) + answer_of(q))
  return docs


def write_jsonl(docs: Sequence[str], path: str | Path, field: str = 'text') -> str:
  """Writes one {field: doc} object per line (a `data.source=jsonl` corpus)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(json.dumps({field: d}) + '\n' for d in docs))
  return str(path)
