"""Grammar-constrained decoding: JSON schemas and regexes -> per-state token tables.

Shape legend: S automaton states (padded), V vocabulary (the model's logits width).

The approach is Outlines' (Willard & Louf 2023, arXiv 2307.09702): a JSON schema
becomes a regular expression over bytes under a fixed whitespace policy (none:
`json.dumps(separators=(',', ':'))`, object keys in schema order, optional keys
may be left out; coverage in `lattice.decode.jsonschema`), the regex a DFA
(`lattice.decode.automaton`, linear in its size: counted repetition unrolled at
the DFA level, optional members as a chain), and the DFA an index: for every state s and token v, walking v's bytes from s gives the
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

For the byte tokenizer's vocabulary (every byte a one-byte token) `for_schema`
builds a `lattice.decode.counted.CountedIndex` instead: counted loops (a long
`maxLength`, a pattern's `{lo,hi}`) stay one loop of states plus a counter that
the decode loop carries next to the state, and the tables are over byte classes
(S x C, gathered to V per step), not S x V. The same masks and needs as the
unrolled tables (`tests/counted_test.py`); both kinds share one interface
(`Index`: `start_state`, `need_row`, `step` on the host; `init_state`,
`need_rows`, `advance` in jitted code).

A schema past a state cap is compiled again with a quarter of
`Options.max_object_states` (more optional members left out, each reported), down
to 1000. `compile_schema` caches per (schema, Options); below it `automaton.to_dfa` caches
per AST node and interns DFAs, so pieces shared by schemas (a string, a number,
a format) are built once per process. The DFA and table steps run in C++ when
`lattice.decode.dfa_native` is built (numpy/scipy otherwise; same tables).
`Options.limits` caps DFA states and seconds. Every unsupported, malformed or over-cap schema raises `SchemaError`
(a ValueError naming the keyword and JSON pointer) — the server's 400.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import json
from collections.abc import Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import automaton
from lattice.decode import counted as counted_lib
from lattice.decode import dfa_native
from lattice.decode import jsonschema as jsonschema_lib

INF = counted_lib.INF  # 2**30
SchemaError = jsonschema_lib.SchemaError
Options = jsonschema_lib.Options


def schema_regex(schema: Any, options: Options = Options()) -> automaton.Node:
  """The byte-regex AST of `schema`'s compact JSON texts (`lattice.decode.jsonschema`).

  Raises SchemaError (keyword + JSON pointer) for unsupported or malformed schemas.
  """
  return schema_regex_report(schema, options)[0]


# Warning lines kept per schema (the rest counted in one more line).
MAX_WARNINGS = 32


def schema_regex_report(schema: Any, options: Options = Options()
                        ) -> tuple[automaton.Node, tuple[str, ...]]:
  """(`schema_regex`, the compiler's warnings): one line per place where valid
  instances are left out beyond the documented policy (optional members shed by
  `Options.max_object_states`; optional members and anyOf/oneOf branches the
  compiler cannot enforce), naming the JSON pointer; past `MAX_WARNINGS` lines,
  one line counts the rest. Raises as `schema_regex`.
  """
  try:
    compiler = jsonschema_lib.Compiler(schema, options)
    node = compiler.node(compiler.root)
  except SchemaError:
    raise
  except RecursionError as e:
    raise SchemaError('/', 'schema', 'nested too deeply') from e
  except (TypeError, AttributeError, KeyError, ValueError) as e:
    raise SchemaError('/', 'schema', f'malformed schema: {type(e).__name__}: {e}') from e
  if node is None:
    raise SchemaError('/', 'schema', 'no instance can be written (false, empty enum, '
                      'contradictory bounds, or recursion beyond max_ref_depth)')
  warnings = tuple(dict.fromkeys(compiler.warnings))
  if len(warnings) > MAX_WARNINGS:  # (A recursive definition repeats them per place.)
    warnings = warnings[:MAX_WARNINGS] + (
        f'... and {len(warnings) - MAX_WARNINGS} more places where valid instances are '
        f'left out',)
  return node, warnings


@contextlib.contextmanager
def _gc_paused():
  """Python's cyclic garbage collector off while a schema compiles, then one
  young-generation pass. The compiler allocates hundreds of thousands of small
  acyclic objects (AST tuples, NFA lists) that reference counting frees; the
  collector's passes over them were ~25% of JSONSchemaBench compile times
  (measured with the closing pass included)."""
  was = gc.isenabled()
  gc.disable()
  try:
    yield
  finally:
    if was:
      gc.enable()
      gc.collect(0)


@functools.lru_cache(maxsize=256)
def _compile_cached(key: str, options: Options, counted: bool = False
                    ) -> tuple[automaton.Dfa | automaton.CountedDfa, tuple[str, ...]]:
  with _gc_paused():
    try:
      return _compile(key, options, counted)
    except SchemaError as e:
      # Past a state cap: again with a quarter of the object budget, so more optional
      # members are left out (each reported), down to _MIN_OBJECT_STATES.
      if 'Limits.max_states' not in str(e) or options.max_object_states < 4 * _MIN_OBJECT_STATES:
        raise
      smaller = dataclasses.replace(options, max_object_states=options.max_object_states // 4)
  return _compile_cached(key, smaller, counted)


def _compile(key: str, options: Options, counted: bool
             ) -> tuple[automaton.Dfa | automaton.CountedDfa, tuple[str, ...]]:
  """`_compile_cached`'s one attempt. Its own frame, so the parsed schema and the
  AST are freed when it returns, before `_gc_paused`'s closing pass (which
  otherwise walked them: that pass went from ~0.44 to ~0.30 ms a schema on
  JsonSchemaStore's middle half, ~1.3 to ~0.95 ms on Github_ultra; cProfile,
  informal)."""
  node, warnings = schema_regex_report(json.loads(key), options)
  try:
    to_dfa = automaton.to_counted_dfa if counted else automaton.to_dfa
    return to_dfa(node, options.limits), warnings
  except automaton.RegexError as e:
    raise SchemaError('/', 'schema', str(e)) from e


# The smallest object budget `_compile_cached` retries with after a state cap.
_MIN_OBJECT_STATES = 1000


def compile_schema(schema: Any, options: Options = Options()) -> automaton.Dfa:
  """The DFA of `schema` (cached per schema and options). Raises SchemaError."""
  return compile_schema_report(schema, options)[0]


def compile_schema_report(schema: Any, options: Options = Options(), counted: bool = False
                          ) -> tuple[automaton.Dfa | automaton.CountedDfa, tuple[str, ...]]:
  """(`compile_schema`, its warnings: see `schema_regex_report`). Raises SchemaError.

  `counted`: counted loops (long `maxLength`, a pattern's `{lo,hi}`) kept as
  counters (`automaton.to_counted_dfa`: a `CountedDfa` where any remain, its
  `unrolled` the DFA `compile_schema` gives) for `build_index`'s counted tables.
  """
  try:
    key = json.dumps(schema, allow_nan=False)  # Key order matters: members are written in it.
  except (TypeError, ValueError) as e:
    raise SchemaError('/', 'schema', f'not JSON: {e}') from e
  return _compile_cached(key, options, counted)


@flax.struct.dataclass
class TokenIndex:
  """Per-state token tables (a pytree: pass it to jitted code as an argument)."""
  next_SxV: Any
  need_SxV: Any
  start: int = flax.struct.field(pytree_node=False, default=0)
  eos_id: int = flax.struct.field(pytree_node=False, default=tokenizer_lib.EOS_ID)
  # Fewest tokens, EOS excluded, of any match: generate needs at least this many.
  min_tokens: int = flax.struct.field(pytree_node=False, default=0)
  # The schema compiler's warnings (`schema_regex_report`): valid texts left out.
  warnings: tuple[str, ...] = flax.struct.field(pytree_node=False, default=())

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

  # The interface shared with `counted.CountedIndex` (whose state is a pair).
  @property
  def vocab_size(self) -> int:
    return self.need_SxV.shape[1]

  @property
  def start_state(self) -> int:
    return self.start

  def need_row(self, state: int) -> np.ndarray:
    """int32[V] (host): fewest tokens after each token to acceptance (INF: rejected)."""
    return np.asarray(self.need_SxV[state])

  def step(self, state: int, token: int) -> int:
    return int(self.next_SxV[state, token])

  def init_state(self, batch: int) -> jax.Array:
    return jnp.full((batch,), self.start, jnp.int32)

  def need_rows(self, state_B: jax.Array) -> jax.Array:
    """int32[B, V] (in-graph): `need_row` of each row's state."""
    return self.need_SxV[state_B]

  def advance(self, state_B: jax.Array, token_B: jax.Array) -> jax.Array:
    return self.next_SxV[state_B, token_B]


# Either kind of token tables (the same interface; see `build_index`).
Index = TokenIndex | counted_lib.CountedIndex


def byte_vocab(vocab_size: int = tokenizer_lib.VOCAB_SIZE) -> list[bytes | None]:
  """The byte tokenizer's vocabulary: id i < 256 is byte i, the rest are specials."""
  return [bytes([i]) for i in range(tokenizer_lib.N_BYTES)] + [None] * (
      vocab_size - tokenizer_lib.N_BYTES)


def _walk_tokens(dfa: automaton.Dfa, vocab: Sequence[bytes | None]) -> np.ndarray:
  """int32[S, T]: the state after each token's bytes from each state (-1: rejected)."""
  T = len(vocab)
  lens = np.array([len(v) if v else 0 for v in vocab])
  width = max(int(lens.max()), 1)
  bytes_TxL = np.zeros((T, width), np.int64)
  for i, v in enumerate(vocab):
    if v:
      bytes_TxL[i, :len(v)] = np.frombuffer(v, np.uint8)
  # First byte: one column gather; later bytes only for the tokens that have them.
  cur_SxT = dfa.delta_SxC[:, dfa.byte_class[bytes_TxL[:, 0]]]
  cur_SxT[:, lens == 0] = -1  # Specials and empty tokens spell nothing.
  for j in range(1, width):
    idx = np.flatnonzero(lens > j)
    sub = cur_SxT[:, idx]
    nxt = dfa.delta_SxC[np.maximum(sub, 0), dfa.byte_class[bytes_TxL[idx, j]][None, :]]
    cur_SxT[:, idx] = np.where(sub < 0, -1, nxt)
  return cur_SxT


def _unique_columns(next_SxT: np.ndarray) -> np.ndarray:
  """The distinct columns of `next_SxT`: grouped on a sample of rows, then checked
  exactly (on a mismatch, all columns)."""
  S = next_SxT.shape[0]
  rows = np.unique(np.random.default_rng(0).integers(0, S, min(S, 256)))
  sample_TxR = np.ascontiguousarray(next_SxT[rows].T)
  _, first, inverse = np.unique(
      sample_TxR.view(np.dtype((np.void, sample_TxR.itemsize * sample_TxR.shape[1])))
      .reshape(-1), return_index=True, return_inverse=True)
  cols = next_SxT[:, first]
  if (cols[:, inverse.reshape(-1)] == next_SxT).all():
    return cols
  return next_SxT


def _distances(next_SxT: np.ndarray, accepting: np.ndarray) -> np.ndarray:
  """int64[S]: fewest tokens from each state to an accepting state (INF: none).

  Breadth-first search backwards from the accepting states over the token edges;
  tokens with identical columns (for a byte vocabulary, bytes of one class) are
  one edge, so the cost is O(S x distinct columns), not O(S x V x longest path).
  """
  dist = automaton.distances_to_accept(_unique_columns(next_SxT), accepting)
  return np.where(dist >= 0, dist, INF)


def _byte_tables(dfa: automaton.Dfa, vocab: list, S_pad: int, V: int):
  """(next_SxV, need_SxV, dist) for a vocabulary of one-byte tokens (and specials).

  A token edge is then a byte edge: the fewest tokens to acceptance are the fewest
  bytes over the classes the vocabulary holds (an S x C search), and each table is
  its S x C form gathered once by the tokens' classes (no walk over S x V).
  Raises ValueError when no token sequence spells a match.
  """
  S = dfa.n_states
  tok = np.array([i for i, v in enumerate(vocab) if v], np.int64)
  cls_T = dfa.byte_class[np.array([vocab[i][0] for i in tok], np.int64)] if len(tok) else (
      np.zeros(0, np.int64))
  held = np.unique(cls_T)
  dist = automaton.distances_to_accept(dfa.delta_SxC[:, held], dfa.accepting)
  dist = np.where(dist >= 0, dist, INF)
  if dist[0] >= INF:
    raise ValueError('build_index: no token sequence of this vocabulary spells a match')
  # Per token its class; C (an appended column: -1 / INF) for the specials.
  C = dfa.delta_SxC.shape[1]
  cls_V = np.full(V, C, np.int64)
  cls_V[tok] = cls_T
  if dfa_native.LIB is not None:
    next_SxV, need_SxV = dfa_native.token_tables(dfa.delta_SxC, dist, cls_V, S_pad, INF)
    return next_SxV, need_SxV, dist
  need_SxC = np.empty((S, C + 1), np.int32)
  # Index -1 (rejected) reads the appended INF.
  np.take(np.append(dist, INF).astype(np.int32), dfa.delta_SxC, out=need_SxC[:, :C])
  need_SxC[:, C] = INF
  next_SxC = np.where(need_SxC < INF, np.append(dfa.delta_SxC, np.full((S, 1), -1, np.int32),
                                                axis=1), -1).astype(np.int32)
  next_SxV = np.empty((S_pad, V), np.int32)
  need_SxV = np.empty((S_pad, V), np.int32)
  np.take(next_SxC, cls_V, axis=1, out=next_SxV[:S], mode='clip')
  np.take(need_SxC, cls_V, axis=1, out=need_SxV[:S], mode='clip')
  next_SxV[S:], need_SxV[S:] = -1, INF
  return next_SxV, need_SxV, dist


def build_index(dfa: automaton.Dfa | automaton.CountedDfa,
                vocab: Sequence[bytes | None] | None = None, *,
                eos_id: int = tokenizer_lib.EOS_ID, vocab_size: int | None = None,
                state_multiple: int = 64, classes: bool = False) -> Index:
  """The token tables of `dfa` for `vocab` (byte strings; None for specials).

  `vocab_size` (default len(vocab)) is the logits width; ids past the vocabulary
  are never allowed. Rows are padded to a multiple of `state_multiple` so schemas
  of similar size share one compiled sampler.

  A `TokenIndex` (S x V tables), except for a vocabulary of one-byte tokens
  holding every byte (the byte tokenizer's) when `dfa` is a `CountedDfa` or
  `classes` is set: then a `counted.CountedIndex` (tables over byte classes,
  counted loops as a counter in the decode loop). A `CountedDfa` with any other
  vocabulary is unrolled first. Raises ValueError when eos_id is a text token or
  past vocab_size, or when no token sequence spells a match.
  """
  vocab = list(vocab if vocab is not None else byte_vocab())
  V = vocab_size or len(vocab)
  if len(vocab) > V or not 0 <= eos_id < V:
    raise ValueError(f'build_index: vocab ({len(vocab)}) and eos_id ({eos_id}) must '
                     f'fit in vocab_size {V}')
  if vocab[eos_id] is not None:
    raise ValueError(f'build_index: eos_id {eos_id} is a text token {vocab[eos_id]!r}')
  if classes or isinstance(dfa, automaton.CountedDfa):
    byte_T = counted_lib.byte_tokens(vocab)
    if byte_T is not None:
      return counted_lib.build(dfa, byte_T, eos_id=eos_id, vocab_size=V,
                               state_multiple=state_multiple)
  if isinstance(dfa, automaton.CountedDfa):
    dfa = dfa.unrolled
  S = dfa.n_states
  S_pad = -(-S // state_multiple) * state_multiple
  T = len(vocab)
  if all(v is None or len(v) <= 1 for v in vocab):
    next_SxV, need_SxV, dist = _byte_tables(dfa, vocab, S_pad, V)
  else:
    next_SxT = _walk_tokens(dfa, vocab)
    dist = _distances(next_SxT, dfa.accepting)
    if dist[0] >= INF:
      raise ValueError('build_index: no token sequence of this vocabulary spells a match')
    # Index -1 (rejected) reads the appended INF.
    need_SxT = np.append(dist, INF).astype(np.int32)[next_SxT]
    next_SxT[need_SxT >= INF] = -1
    if S_pad == S and V == T:
      next_SxV, need_SxV = next_SxT, need_SxT
    else:
      next_SxV = np.empty((S_pad, V), np.int32)
      need_SxV = np.empty((S_pad, V), np.int32)
      next_SxV[:S, :T], need_SxV[:S, :T] = next_SxT, need_SxT
      next_SxV[S:], need_SxV[S:] = -1, INF
      next_SxV[:S, T:], need_SxV[:S, T:] = -1, INF
  need_SxV[:S, eos_id] = np.where(dfa.accepting, 0, INF)
  next_SxV[:S, eos_id] = np.where(dfa.accepting, np.arange(S), -1)
  return TokenIndex(next_SxV=next_SxV, need_SxV=need_SxV, start=0, eos_id=eos_id,
                    min_tokens=int(dist[0]))


def for_schema(schema: Any, vocab: Sequence[bytes | None] | None = None,
               options: Options = Options(), **kwargs: Any) -> Index:
  """Schema -> regex -> DFA -> token tables (byte vocabulary by default).

  For a vocabulary of one-byte tokens holding every byte (the byte tokenizer's)
  a `counted.CountedIndex`: counted loops kept as a counter carried in the
  decode loop, tables over byte classes (`build_index(classes=True)`); for any
  other a `TokenIndex` of the unrolled DFA. Raises SchemaError
  (unsupported/malformed/over the caps) or ValueError (no token sequence of
  `vocab` spells a match). The index carries the compiler's `warnings` (e.g.
  optional members shed past `Options.max_object_states`).
  """
  vocab = list(vocab if vocab is not None else byte_vocab())
  counted = counted_lib.byte_tokens(vocab) is not None
  dfa, warnings = compile_schema_report(schema, options, counted=counted)
  return build_index(dfa, vocab, classes=counted, **kwargs).replace(warnings=warnings)


def for_regex(pattern: str, vocab: Sequence[bytes | None] | None = None,
              **kwargs: Any) -> Index:
  """`re.fullmatch` regex -> DFA -> token tables (counted, as `for_schema`, for a
  vocabulary of one-byte tokens holding every byte); raises `automaton.RegexError`."""
  vocab = list(vocab if vocab is not None else byte_vocab())
  if counted_lib.byte_tokens(vocab) is None:
    return build_index(automaton.compile_regex(pattern), vocab, **kwargs)
  dfa = automaton.to_counted_dfa(automaton.parse(pattern))
  return build_index(dfa, vocab, classes=True, **kwargs)
