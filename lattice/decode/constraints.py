"""Grammar-constrained decoding: JSON schemas and regexes -> per-state token tables.

Shape legend: S automaton states (padded), V vocabulary (the model's logits width).

The approach is Outlines' (Willard & Louf 2023, arXiv 2307.09702): a JSON schema
becomes a regular expression over bytes under a fixed whitespace policy (none:
`json.dumps(separators=(',', ':'))`, object keys in schema order, optional keys
may be left out), the regex a minimal DFA (`lattice.decode.automaton`), and the
DFA an index: for every state s and token v, walking v's bytes from s gives the
next state or a rejection. `TokenIndex` stores that as two dense tables that the
jitted sampler gathers one row of per step (`lattice.decode.sampling.generate`,
argument `constraint`):

  next_SxV  int32  state after emitting v in s (-1: v not allowed; EOS stays)
  need_SxV  int32  fewest tokens still needed after v to reach an accepting state
                   (INF: not allowed). EOS has need 0, and only in accepting states.

A token is allowed at a step when its `need` fits in the steps left after it, so a
generation of `max_new_tokens` always ends in an accepting state, with EOS or at
the last step: every constrained output matches, for any model and sampling
settings. States from which no accepting state is reachable in this vocabulary
never appear (the DFA drops byte-dead states; `need` is INF into token-dead ones).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import flax.struct
import numpy as np

from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import automaton
from lattice.decode import schema as schema_lib
from lattice.decode.automaton import alt, cat, lit, one, rep

INF = 2**30
# JSON text: a string character is printable ASCII except `"` and `\`, any valid
# non-ASCII UTF-8 character, or a short escape. \uXXXX is left out: a surrogate
# pair would count as one character for minLength/maxLength but two here.
_JSON_CHAR = alt(one(automaton.byte_set((0x20, 0x7E)) & ~(1 << 0x22) & ~(1 << 0x5C)),
                 automaton.NON_ASCII,
                 cat(lit('\\'), one(sum(1 << ord(c) for c in '"\\/bfnrt'))))
_DIGITS = rep(one(automaton.byte_set((48, 57))), 1, None)
_INT = cat(rep(lit('-'), 0, 1),
           alt(lit('0'), cat(one(automaton.byte_set((49, 57))), rep(_DIGITS, 0, 1))))
_NUMBER = cat(_INT, rep(cat(lit('.'), _DIGITS), 0, 1),
              rep(cat(one((1 << ord('e')) | (1 << ord('E'))),
                      rep(one((1 << ord('+')) | (1 << ord('-'))), 0, 1), _DIGITS), 0, 1))
_TYPES = {'integer': _INT, 'number': _NUMBER, 'boolean': alt(lit('true'), lit('false')),
          'null': lit('null')}


def _dumps(value: Any) -> str:
  return json.dumps(value, ensure_ascii=False, separators=(',', ':'))


def schema_regex(schema: dict) -> automaton.Node:
  """The byte-regex AST of `schema`'s compact JSON texts (see the module docstring)."""
  schema_lib.check_supported(schema)
  return _node(schema)


def _node(s: dict) -> automaton.Node:
  if 'anyOf' in s:
    # Keywords beside anyOf would have to hold in every branch: not supported.
    if set(s) - {'anyOf'} - schema_lib._ANNOTATIONS:  # pylint: disable=protected-access
      raise schema_lib.SchemaError('anyOf: combine it with no other keyword')
    return alt(*(_node(b) for b in s['anyOf']))
  values = [s['const']] if 'const' in s else s.get('enum')
  if values is not None:
    # Enum members must also satisfy the rest of the schema (e.g. its type).
    values = [v for v in values if schema_lib.validate(v, s)]
    if not values:
      raise schema_lib.SchemaError('enum/const: no member satisfies the schema')
    return alt(*(lit(_dumps(v)) for v in values))
  types = s['type']
  if isinstance(types, list):
    return alt(*(_node({**s, 'type': t}) for t in types))
  if types in _TYPES:
    return _TYPES[types]
  if types == 'string':
    return cat(lit('"'), rep(_JSON_CHAR, s.get('minLength', 0), s.get('maxLength')),
               lit('"'))
  if types == 'array':
    item = _node(s.get('items', {'type': ['string', 'number', 'boolean', 'null']}))
    lo, hi = s.get('minItems', 0), s.get('maxItems')
    if hi == 0:
      return lit('[]')
    more = rep(cat(lit(','), item), max(lo - 1, 0), None if hi is None else hi - 1)
    body = cat(item, more)
    return cat(lit('['), body if lo > 0 else rep(body, 0, 1), lit(']'))
  return _object(s)


def _object(s: dict) -> automaton.Node:
  """Properties in schema order; optional ones may be absent, commas between."""
  props = list(s.get('properties', {}).items())
  required = set(s.get('required', []))
  members = [(cat(lit(_dumps(k) + ':'), _node(v)), k in required) for k, v in props]

  # tail(i, first): members i.. given whether nothing was written yet. Optional
  # members branch, so the size is exponential in consecutive optional members;
  # tool schemas have a handful.
  memo: dict[tuple[int, bool], automaton.Node] = {}

  def tail(i: int, first: bool) -> automaton.Node:
    if i == len(members):
      return automaton.EPS
    if (i, first) not in memo:
      node, req = members[i]
      take = cat(automaton.EPS if first else lit(','), node, tail(i + 1, False))
      memo[i, first] = take if req else alt(take, tail(i + 1, first))
    return memo[i, first]

  return cat(lit('{'), tail(0, True), lit('}'))


def compile_schema(schema: dict) -> automaton.Dfa:
  return automaton.to_dfa(schema_regex(schema))


@flax.struct.dataclass
class TokenIndex:
  """Per-state token tables (a pytree: pass it to jitted code as an argument)."""
  next_SxV: Any
  need_SxV: Any
  start: int = flax.struct.field(pytree_node=False, default=0)
  eos_id: int = flax.struct.field(pytree_node=False, default=tokenizer_lib.EOS_ID)
  # Fewest tokens, EOS excluded, of any match: generate needs at least this many.
  min_tokens: int = flax.struct.field(pytree_node=False, default=0)

  @property
  def n_states(self) -> int:
    return self.next_SxV.shape[0]

  def allowed(self, state: int) -> np.ndarray:
    return np.asarray(self.need_SxV[state]) < INF

  def accepts(self, tokens: Sequence[int]) -> bool:
    """Whether `tokens` (up to an optional EOS) spell a match, token by token."""
    state = self.start
    for t in tokens:
      if t == self.eos_id:
        return bool(self.need_SxV[state, t] == 0)
      if self.need_SxV[state, t] >= INF:
        return False
      state = int(self.next_SxV[state, t])
    return bool(self.need_SxV[state, self.eos_id] == 0)


def byte_vocab(vocab_size: int = tokenizer_lib.VOCAB_SIZE) -> list[bytes | None]:
  """The byte tokenizer's vocabulary: id i < 256 is byte i, the rest are specials."""
  return [bytes([i]) for i in range(tokenizer_lib.N_BYTES)] + [None] * (
      vocab_size - tokenizer_lib.N_BYTES)


def _walk_tokens(dfa: automaton.Dfa, vocab: Sequence[bytes | None]) -> np.ndarray:
  """int32[S, T]: the state after each token's bytes from each state (-1: rejected)."""
  S, T = dfa.n_states, len(vocab)
  lens = np.array([len(v) if v else 0 for v in vocab])
  width = max(int(lens.max()), 1)
  bytes_TxL = np.zeros((T, width), np.int64)
  for i, v in enumerate(vocab):
    if v:
      bytes_TxL[i, :len(v)] = np.frombuffer(v, np.uint8)
  cur_SxT = np.broadcast_to(np.arange(S, dtype=np.int32)[:, None], (S, T)).copy()
  cur_SxT[:, lens == 0] = -1  # Specials and empty tokens spell nothing.
  for j in range(width):
    cls_T = dfa.byte_class[bytes_TxL[:, j]]
    nxt = dfa.delta_SxC[np.maximum(cur_SxT, 0), cls_T[None, :]]
    cur_SxT = np.where((lens > j)[None, :], np.where(cur_SxT < 0, -1, nxt), cur_SxT)
  return cur_SxT


def build_index(dfa: automaton.Dfa, vocab: Sequence[bytes | None] | None = None, *,
                eos_id: int = tokenizer_lib.EOS_ID, vocab_size: int | None = None,
                state_multiple: int = 64) -> TokenIndex:
  """The TokenIndex of `dfa` for `vocab` (byte strings; None for specials).

  `vocab_size` (default len(vocab)) is the logits width; ids past the vocabulary
  are never allowed. Rows are padded to a multiple of `state_multiple` so schemas
  of similar size share one compiled sampler.
  """
  vocab = list(vocab if vocab is not None else byte_vocab())
  V = vocab_size or len(vocab)
  if len(vocab) > V or not 0 <= eos_id < V:
    raise ValueError(f'build_index: vocab ({len(vocab)}) and eos_id ({eos_id}) must '
                     f'fit in vocab_size {V}')
  if vocab[eos_id] is not None:
    raise ValueError(f'build_index: eos_id {eos_id} is a text token {vocab[eos_id]!r}')
  S = dfa.n_states
  next_SxT = _walk_tokens(dfa, vocab)
  # Fewest tokens from each state to an accepting state (Bellman-Ford over tokens).
  dist = np.where(dfa.accepting, 0, INF).astype(np.int64)
  while True:
    via = np.where(next_SxT >= 0, dist[np.maximum(next_SxT, 0)], INF).min(axis=1)
    new = np.minimum(dist, via + 1)
    if (new == dist).all():
      break
    dist = new
  if dist[0] >= INF:
    raise ValueError('build_index: no token sequence of this vocabulary spells a match')
  S_pad = -(-S // state_multiple) * state_multiple
  next_SxV = np.full((S_pad, V), -1, np.int32)
  need_SxV = np.full((S_pad, V), INF, np.int32)
  ok = next_SxT >= 0
  ok &= dist[np.maximum(next_SxT, 0)] < INF
  next_SxV[:S, :len(vocab)] = np.where(ok, next_SxT, -1)
  need_SxV[:S, :len(vocab)] = np.where(ok, dist[np.maximum(next_SxT, 0)], INF)
  need_SxV[:S, eos_id] = np.where(dfa.accepting, 0, INF)
  next_SxV[:S, eos_id] = np.where(dfa.accepting, np.arange(S), -1)
  return TokenIndex(next_SxV=next_SxV, need_SxV=need_SxV, start=0, eos_id=eos_id,
                    min_tokens=int(dist[0]))


def for_schema(schema: dict, vocab: Sequence[bytes | None] | None = None,
               **kwargs: Any) -> TokenIndex:
  """Schema -> regex -> DFA -> TokenIndex (byte vocabulary by default)."""
  return build_index(compile_schema(schema), vocab, **kwargs)


def for_regex(pattern: str, vocab: Sequence[bytes | None] | None = None,
              **kwargs: Any) -> TokenIndex:
  return build_index(automaton.compile_regex(pattern), vocab, **kwargs)
