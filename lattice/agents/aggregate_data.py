"""Aggregator training data from real proposer samples (Mixture-of-Agents).

An aggregator trained only on synthetic corruptions of the true answer learns a
per-slot vote that does not match what real proposers get wrong. Here it learns
from what the proposers actually write: each training question is answered by
every proposer (sampled, `samples` times each), and each training document is
`fmt(question, candidates) + true answer`, where the candidates are a random subset
(min_candidates..max_candidates, random order) of those real answers. With
min_candidates = 0 some documents hold no candidate at all, so the aggregator keeps
answering on its own (it starts from a proposer's weights, and an aggregator that
only ever saw candidates loses that skill).
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
                 seed: int = 0, min_candidates: int = 1) -> list[str]:
  """One aggregator document per question, built from real sampled answers; each
  holds between min_candidates and max_candidates of them (uniformly drawn).

  Raises ValueError when there is no proposer, samples < 1, max_candidates < 1 or
  min_candidates outside 0..max_candidates.
  """
  if not proposers or samples < 1 or max_candidates < 1:
    raise ValueError(f'sampled_docs: needs proposers, samples >= 1 and '
                     f'max_candidates >= 1, got {len(proposers)}, {samples}, '
                     f'{max_candidates}')
  if not 0 <= min_candidates <= max_candidates:
    raise ValueError(f'sampled_docs: min_candidates must be in 0..{max_candidates}, '
                     f'got {min_candidates}')
  answers = [[] for _ in questions]
  for gen in proposers:
    for _ in range(samples):
      for i, a in enumerate(gen.generate(list(questions), max_tokens, temperature)):
        answers[i].append(a)
  rng = np.random.default_rng(seed)
  docs = []
  for q, cands in zip(questions, answers):
    top = min(max_candidates, len(cands))
    k = int(rng.integers(min(min_candidates, top), top + 1))
    pick = [cands[j] for j in rng.permutation(len(cands))[:k]]
    docs.append(fmt(q, pick) + answer_of(q))
  return docs


def write_jsonl(docs: Sequence[str], path: str | Path, field: str = 'text') -> str:
  """Writes one {field: doc} object per line (a `data.source=jsonl` corpus)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(''.join(json.dumps({field: d}) + '\n' for d in docs))
  return str(path)
