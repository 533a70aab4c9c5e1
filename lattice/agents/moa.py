"""Mixture-of-Agents and its variants, over the `Generator` interface.

  single         one generator answers (the best-single baseline)
  majority_vote  agents answer; the most common answer wins (ties: first seen)
  moa            layers of proposers, each layer reading the previous layer's
                 answers, then an aggregator (Wang et al. 2024, arXiv 2406.04692)
  self_moa       n samples of one proposer, then the aggregator (Li et al. 2025,
                 arXiv 2502.00674)
  self_moa_seq   Self-MoA with a sliding window: the aggregator reads `window`
                 answers at a time, carrying its synthesis forward (same paper)
  rmoa           residual MoA (arXiv 2505.24442): keep k diverse answers per layer
                 (greedy max-min distance), carry them forward with each layer's
                 residual (the new answers), stop a question once its residual is
                 empty
  attention_moa  each agent critiques its own and the others' answers, then refines
                 its answer from that critique, its own answer (the residual path)
                 and the others'; a question stops once no agent changes its answer
                 (arXiv 2601.16596)

How answers are shown to an agent is a `Format` (question, answers) -> prompt, so
the same code drives chat models (`numbered_format`, the MoA paper's prompt) and
small trained aggregators with their own compact format.

Batching: in a layer, a generator that appears r times is called once, with each
prompt repeated r times consecutively ([p0, p0, p1, p1, ...]); at temperature > 0
the copies are independent samples, which is how Self-MoA samples one model.
Every method returns a `Trace`: the final answers, each layer's answers, how many
completions were generated (the cost) and how many layers each question used.

Blank answers (empty or whitespace only) are abstentions: they are kept in
`Trace.layers` and counted in `Trace.abstained`, but left out of votes, of diversity
selection and of every prompt that lists answers, so a generator that says nothing
neither wins a vote nor shows up as an empty `1. ` line for the aggregator.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence

from lattice.agents.generator import Generator

Format = Callable[[str, Sequence[str]], str]
Distance = Callable[[str, str], float]

# The aggregate-and-synthesize instruction of the MoA paper (Table 1, arXiv 2406.04692).
AGGREGATE_INSTRUCTION = (
    'You have been provided with a set of responses from various models to the '
    'latest user query. Your task is to synthesize these responses into a single, '
    'high-quality response. Critically evaluate the information provided in these '
    'responses, recognizing that some of it may be biased or incorrect. Your '
    'response should not simply replicate the given answers but should offer a '
    'refined, accurate, and comprehensive reply to the instruction.')


def numbered_format(question: str, answers: Sequence[str]) -> str:
  """The MoA paper's layout: instruction, numbered responses, then the query."""
  listed = '\n'.join(f'{i + 1}. {a}' for i, a in enumerate(answers))
  return (f'{AGGREGATE_INSTRUCTION}\n\nResponses from models:\n{listed}\n\n'
          f'Query: {question}\nAnswer:')


@dataclasses.dataclass
class Trace:
  answers: list[str]                 # final answer per question
  layers: list[list[list[str]]]      # [layer][question][agent] answers (None: stopped)
  calls: int                         # completions generated in all
  layers_used: list[int]             # per question
  abstained: int = 0                 # completions that came back blank

  @property
  def mean_layers(self) -> float:
    return sum(self.layers_used) / max(len(self.layers_used), 1)


def voiced(answers: Sequence[str]) -> list[str]:
  """The answers that say something: blank ones (abstentions) left out, order kept."""
  return [a for a in answers if a.strip()]


class _Counter:
  def __init__(self):
    self.calls = 0
    self.abstained = 0

  def run(self, gen: Generator, prompts: list[str], max_tokens: int,
          temperature: float) -> list[str]:
    if not prompts:
      return []
    self.calls += len(prompts)
    out = gen.generate(prompts, max_tokens, temperature)
    if len(out) != len(prompts):
      raise ValueError(f'generator returned {len(out)} texts for {len(prompts)} prompts')
    self.abstained += sum(not a.strip() for a in out)
    return list(out)

  def layer(self, agents: Sequence[Generator], prompts: list[str], max_tokens: int,
            temperature: float) -> list[list[str]]:
    """answers[q][i] of agent i on prompt q; repeated agents batched in one call."""
    slots: dict[int, list[int]] = {}
    objs: dict[int, Generator] = {}
    for i, g in enumerate(agents):
      slots.setdefault(id(g), []).append(i)
      objs[id(g)] = g
    answers = [[''] * len(agents) for _ in prompts]
    for key, idx in slots.items():
      r = len(idx)
      out = self.run(objs[key], [p for p in prompts for _ in range(r)], max_tokens,
                     temperature)
      for q in range(len(prompts)):
        for j, i in enumerate(idx):
          answers[q][i] = out[q * r + j]
    return answers


def majority(answers: Sequence[str]) -> str:
  """The most common non-blank answer (stripped); ties go to the one seen first.

  Blank answers are abstentions and get no vote; '' only when every answer is blank.
  """
  answers = [a.strip() for a in voiced(answers)]
  if not answers:
    return ''
  counts = collections.Counter(answers)
  best = max(counts.values())
  return next(a for a in answers if counts[a] == best)


def single(questions: Sequence[str], gen: Generator, *, max_tokens: int,
           temperature: float = 0.0) -> Trace:
  c = _Counter()
  out = c.run(gen, list(questions), max_tokens, temperature)
  return Trace(out, [[[a] for a in out]], c.calls, [1] * len(out), c.abstained)


def majority_vote(questions: Sequence[str], agents: Sequence[Generator], *,
                  max_tokens: int, temperature: float = 0.0) -> Trace:
  c = _Counter()
  ans = c.layer(agents, list(questions), max_tokens, temperature)
  return Trace([majority(a) for a in ans], [ans], c.calls, [1] * len(ans), c.abstained)


def moa(questions: Sequence[str], layers: Sequence[Sequence[Generator]],
        aggregator: Generator, *, fmt: Format = numbered_format, max_tokens: int,
        temperature: float = 0.7, agg_temperature: float = 0.0) -> Trace:
  """Layer 0 answers the questions; layer l reads fmt(question, layer l-1's answers);
  the aggregator reads fmt(question, the last layer's answers)."""
  if not layers or not all(layers):
    raise ValueError('moa: needs at least one layer, each with at least one agent')
  c = _Counter()
  qs = list(questions)
  prompts, history = qs, []
  for agents in layers:
    ans = c.layer(agents, prompts, max_tokens, temperature)
    history.append(ans)
    prompts = [fmt(q, voiced(a)) for q, a in zip(qs, ans)]
  final = c.run(aggregator, prompts, max_tokens, agg_temperature)
  return Trace(final, history, c.calls, [len(layers)] * len(qs), c.abstained)


def self_moa(questions: Sequence[str], proposer: Generator, aggregator: Generator, *,
             n: int, fmt: Format = numbered_format, max_tokens: int,
             temperature: float = 0.7, agg_temperature: float = 0.0) -> Trace:
  """n samples of one proposer, aggregated once."""
  return moa(questions, [[proposer] * n], aggregator, fmt=fmt, max_tokens=max_tokens,
             temperature=temperature, agg_temperature=agg_temperature)


def self_moa_seq(questions: Sequence[str], proposer: Generator, aggregator: Generator,
                 *, n: int, window: int, fmt: Format = numbered_format,
                 max_tokens: int, temperature: float = 0.7,
                 agg_temperature: float = 0.0) -> Trace:
  """Self-MoA-Seq: aggregate samples [0, window), then repeatedly the running
  synthesis plus the next window-1 samples, until all n samples are read."""
  if window < 2:
    raise ValueError(f'self_moa_seq: window must be at least 2, got {window}')
  c = _Counter()
  qs = list(questions)
  samples = c.layer([proposer] * n, qs, max_tokens, temperature)
  history = [samples]
  synth = c.run(aggregator, [fmt(q, voiced(s[:window])) for q, s in zip(qs, samples)],
                max_tokens, agg_temperature)
  history.append([[a] for a in synth])
  start = window
  while start < n:
    stop = start + window - 1
    synth = c.run(aggregator, [fmt(q, voiced([a] + s[start:stop]))
                               for q, a, s in zip(qs, synth, samples)],
                  max_tokens, agg_temperature)
    history.append([[a] for a in synth])
    start = stop
  return Trace(synth, history, c.calls, [len(history)] * len(qs), c.abstained)


def ngram_distance(a: str, b: str, n: int = 2) -> float:
  """1 - Jaccard similarity of the character n-gram sets (0 for equal strings)."""
  grams = lambda s: {s[i:i + n] for i in range(max(len(s) - n + 1, 1))}
  ga, gb = grams(a.strip()), grams(b.strip())
  return 1.0 - len(ga & gb) / len(ga | gb)


def diverse_select(answers: Sequence[str], k: int,
                   distance: Distance = ngram_distance) -> list[str]:
  """Greedy max-min diversity: start from the majority answer, then repeatedly add
  the answer farthest (by its nearest chosen answer) from those chosen; ties go to
  the earliest. Exact duplicates are never chosen twice, blank answers never."""
  pool = list(dict.fromkeys(a.strip() for a in voiced(answers)))
  if not pool:
    return []
  chosen = [majority(answers)]
  pool.remove(chosen[0])
  while pool and len(chosen) < k:
    gaps = [min(distance(p, c) for c in chosen) for p in pool]
    chosen.append(pool.pop(gaps.index(max(gaps))))
  return chosen


def rmoa(questions: Sequence[str], proposers: Sequence[Generator],
         refiners: Sequence[Generator], aggregator: Generator, *, k: int,
         max_layers: int, fmt: Format = numbered_format, max_tokens: int,
         temperature: float = 0.7, agg_temperature: float = 0.0,
         distance: Distance = ngram_distance) -> Trace:
  """Residual MoA. Layer 0: proposers answer; carry C = k diverse answers.
  Layer t: refiners read fmt(q, C); S = their k diverse answers; the residual
  R = S minus C; if R is empty the question stops, else C = diverse(R + C).
  The aggregator reads fmt(q, C)."""
  if max_layers < 1 or k < 1:
    raise ValueError(f'rmoa: max_layers and k must be positive, got {max_layers}, {k}')
  c = _Counter()
  qs = list(questions)
  first = c.layer(proposers, qs, max_tokens, temperature)
  carry = [diverse_select(a, k, distance) for a in first]
  history, used, active = [first], [1] * len(qs), list(range(len(qs)))
  for _ in range(1, max_layers):
    if not active:
      break
    out = c.layer(refiners, [fmt(qs[i], carry[i]) for i in active], max_tokens,
                  temperature)
    layer: list = [None] * len(qs)
    still = []
    for i, ans in zip(active, out):
      layer[i] = ans
      used[i] += 1
      residual = [a for a in diverse_select(ans, k, distance) if a not in carry[i]]
      if residual:
        carry[i] = diverse_select(residual + carry[i], k, distance)
        still.append(i)
    history.append(layer)
    active = still
  final = c.run(aggregator, [fmt(q, cs) for q, cs in zip(qs, carry)], max_tokens,
                agg_temperature)
  return Trace(final, history, c.calls, used, c.abstained)


CritiqueFormat = Callable[[str, str, Sequence[str]], str]
RefineFormat = Callable[[str, str, Sequence[str], str], str]


def critique_format(question: str, own: str, others: Sequence[str]) -> str:
  listed = '\n'.join(f'- {a}' for a in others)
  return (f'Query: {question}\nYour answer: {own}\nOther answers:\n{listed}\n'
          'Critique each answer, your own included: what is right, what is wrong?\n'
          'Critique:')


def refine_format(question: str, own: str, others: Sequence[str], critique: str) -> str:
  listed = '\n'.join(f'- {a}' for a in others)
  return (f'Query: {question}\nYour answer: {own}\nOther answers:\n{listed}\n'
          f'Critique: {critique}\nGiven the critique, write your improved answer.\n'
          'Answer:')


def attention_moa(questions: Sequence[str], agents: Sequence[Generator], *,
                  max_layers: int, critique_fmt: CritiqueFormat = critique_format,
                  refine_fmt: RefineFormat = refine_format,
                  aggregator: Generator | None = None, fmt: Format = numbered_format,
                  proposers: Sequence[Generator] | None = None,
                  max_tokens: int, temperature: float = 0.7,
                  agg_temperature: float = 0.0) -> Trace:
  """Attention-MoA. Layer 0: each agent answers. Layer t: agent i critiques
  (critique_fmt(q, own, others)), then refines (refine_fmt(q, own, others,
  critique)); an empty refinement keeps its previous answer (the residual). A
  question stops when no agent changed its answer. The final answer is the
  aggregator's on fmt(q, answers), or the majority when there is no aggregator.
  `proposers` (default: the agents) give layer 0's answers, one per agent."""
  if max_layers < 1:
    raise ValueError(f'attention_moa: max_layers must be positive, got {max_layers}')
  proposers = agents if proposers is None else proposers
  if len(proposers) != len(agents):
    raise ValueError(f'attention_moa: {len(proposers)} proposers for {len(agents)} agents')
  c = _Counter()
  qs = list(questions)
  n = len(agents)
  answers = c.layer(proposers, qs, max_tokens, temperature)
  history, used, active = [answers], [1] * len(qs), list(range(len(qs)))
  answers = [list(a) for a in answers]
  for _ in range(1, max_layers):
    if not active:
      break
    others = lambda i, j: voiced([answers[i][m] for m in range(n) if m != j])
    crit = [[''] * n for _ in qs]
    new = [[''] * n for _ in qs]
    # Agent j writes its critique of question i, then its refinement.
    for j, g in enumerate(agents):
      cs = c.run(g, [critique_fmt(qs[i], answers[i][j], others(i, j)) for i in active],
                 max_tokens, temperature)
      for i, ci in zip(active, cs):
        crit[i][j] = ci
    for j, g in enumerate(agents):
      rs = c.run(g, [refine_fmt(qs[i], answers[i][j], others(i, j), crit[i][j])
                     for i in active], max_tokens, temperature)
      for i, r in zip(active, rs):
        new[i][j] = r if r.strip() else answers[i][j]
    layer: list = [None] * len(qs)
    still = []
    for i in active:
      layer[i] = new[i]
      used[i] += 1
      changed = [a.strip() for a in new[i]] != [a.strip() for a in answers[i]]
      answers[i] = new[i]
      if changed:
        still.append(i)
    history.append(layer)
    active = still
  if aggregator is None:
    final = [majority(a) for a in answers]
  else:
    final = c.run(aggregator, [fmt(q, voiced(a)) for q, a in zip(qs, answers)],
                  max_tokens, agg_temperature)
  return Trace(final, history, c.calls, used, c.abstained)
