"""Regular languages over bytes: regex AST -> NFA -> DFA, in time linear in the result.

Shape legend: S DFA states, C byte classes.

The constrained decoder (`lattice.decode.constraints`) needs a deterministic
automaton over the bytes a tokenizer emits. Patterns (`regex_parse`) are read as
regexes over *characters*, each matched as its UTF-8 bytes, so the automaton only
ever accepts valid UTF-8; matching is whole-string.

Pipeline (subset construction): a Thompson NFA of the AST (`regex_ast`), bytes split into
classes that every edge treats alike, the subset construction over those classes
(a DFA state is the set of NFA states with byte edges, so epsilon-only states do not
split states), pruning of states that cannot accept, minimisation, and a canonical
form (states in breadth-first order from the start, each state's targets in the
order of their smallest byte; classes every state treats alike merged and numbered
by their smallest byte), so equal languages get equal tables however they were
built. DFAs are interned by content
(`intern`), so equal automata built apart are one cache key.

Native core (`dfa_native`, C++ through ctypes, built by setup.py): the subset
construction, Hopcroft-style minimisation (Valmari's partial-DFA algorithm), the
breadth-first walks and the one-byte token tables. With it every AST takes the
pipeline above: an AST without counted loops in one native call from a flat
program (`dfa_compose.native`), one with them through `_Nfa` (embedded member
DFAs entering the NFA as edge arrays, `_Nfa._embed_bulk`). Without it (not
built, or `LATTICE_DFA_NATIVE=0`) the same steps run in Python/numpy/scipy (Moore
rounds, within a budget for loop-free DFAs), and `to_dfa` first tries
`dfa_compose`: the AST's deterministic pieces joined directly in one state
arena, so an enclosing object costs a copy of its members' tables instead of a
new Python subset construction over them; where pieces overlap it falls back to
the subset construction, which small ASTs (`_SMALL_AST`) also take. Both paths
give the same tables (`tests/dfa_native_test.py`; the fallback's unminimised
large loop-free DFAs aside).

Counted repetition is linear, not unrolled through the subset construction: a
repetition `X{lo,hi}` with a bound above `Limits.region_min` whose body is one
"character" (no inner repetition) is built as the loop `X*` with its states tagged,
determinised and minimised at that small size, and only then unrolled into
`hi + 1` copies of the loop's DFA states with numpy (copy i: i characters written;
leaving needs i >= lo, another character i < hi). That is exact when the loop's DFA
states hold nothing but the loop (checked; otherwise that repetition is unrolled
the ordinary way), and costs O(hi x loop states) — `maxLength: 5000` compiles in
milliseconds where the subset construction and Moore rounds over the unrolled chain
were quadratic. `Limits` caps DFA states and seconds; past a cap `LimitError`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import time
from typing import Any

import numpy as np
from scipy.sparse import csgraph, csr_matrix

from lattice.decode import dfa_compose, dfa_native, regex_ast, regex_parse
# Re-exported: the AST vocabulary is part of this module's public surface.
from lattice.decode.regex_ast import (EPS, NON_ASCII, LimitError, Node,  # pylint: disable=unused-import
                                      RegexError, alt, byte_set, cat, chain, embed, is_char,
                                      lit, one, rep)

__all__ = ['CountedDfa', 'DEFAULT_LIMITS', 'Dfa', 'EPS', 'LimitError', 'Limits', 'NON_ASCII',
           'Node', 'RegexError', 'alt', 'byte_set', 'cat', 'chain', 'compile_regex',
           'distances_to_accept', 'embed', 'intern', 'is_char', 'lit', 'one', 'parse', 'rep',
           'to_counted_dfa', 'to_dfa']


@dataclasses.dataclass(frozen=True)
class Limits:
  """Caps on one compilation (exceeding one raises `LimitError`)."""
  max_states: int = 200_000     # DFA states, counted repetitions unrolled
  max_seconds: float = 10.0     # wall time of one `to_dfa`
  region_min: int = 12          # counted repetitions above this bound use the loop


DEFAULT_LIMITS = Limits()


@dataclasses.dataclass(frozen=True, eq=False)
class Dfa:
  """A DFA without dead states: `delta_SxC[s, byte_class[b]]`, -1 = reject.

  State 0 is the start. Every state can reach an accepting state. Compared and
  hashed by identity, so an AST embedding it (`embed`) is a hashable cache key.
  """
  delta_SxC: np.ndarray   # int32
  byte_class: np.ndarray  # int32[256]
  accepting: np.ndarray   # bool[S]

  @property
  def n_states(self) -> int:
    return len(self.accepting)

  def step(self, state: int, data: bytes) -> int:
    for b in data:
      if state < 0:
        break
      state = int(self.delta_SxC[state, self.byte_class[b]])
    return state

  def matches(self, data: bytes | str) -> bool:
    if isinstance(data, str):
      data = data.encode('utf-8')
    state = self.step(0, data)
    return state >= 0 and bool(self.accepting[state])


_INTERNED: dict[tuple, Dfa] = {}
_INTERN_MAX = 16_384


def intern(dfa: Dfa) -> Dfa:
  """The one `Dfa` object of this process equal (same tables) to `dfa`.

  Dfas compare by identity, so two equal automata built separately (a `$ref`
  target compiled at each place it is used, a string's pattern x length product)
  would make every AST above them a different cache key for `to_dfa`; interned,
  they are one key and each enclosing automaton is built once.
  """
  arrays = (dfa.delta_SxC, dfa.byte_class, dfa.accepting)
  if dfa_native.can_hash():
    # The native 64-bit hash of each table's bytes (C order): Python's hash of the
    # bytes (SipHash) was ~0.35 ms for a schema's final 2,000-state table.
    arrays = tuple(np.ascontiguousarray(a) for a in arrays)
    key = tuple((a.shape, a.dtype.str, dfa_native.hash_array(a)) for a in arrays)
    raw = None
  else:
    raw = [a.tobytes() for a in arrays]  # (C order, whatever the layout.)
    # Python's 64-bit hash of each table's bytes (~4x blake2b's speed).
    key = tuple((a.shape, a.dtype.str, hash(r)) for a, r in zip(arrays, raw))
  # Checked exactly on a hit (the bytes compared: equal shapes and dtypes are in
  # the key, and np.array_equal's fixed cost was most of a small DFA's
  # interning); on a collision `dfa` itself is returned (only not shared).
  got = _INTERNED.get(key)
  if got is not None:
    if raw is None:
      raw = [a.tobytes() for a in arrays]
    same = all(x.tobytes() == r for x, r in
               zip((got.delta_SxC, got.byte_class, got.accepting), raw))
    return got if same else dfa
  if len(_INTERNED) >= _INTERN_MAX:
    _INTERNED.clear()
  _INTERNED[key] = dfa
  return dfa


# Bytes JSON must escape inside a string, and the one escape the compiler writes.
_SHORT_ESCAPES = {0x22: '\\"', 0x5C: '\\\\', 0x08: '\\b', 0x0C: '\\f', 0x0A: '\\n',
                  0x0D: '\\r', 0x09: '\\t'}
JSON_ESCAPE = {b: _SHORT_ESCAPES.get(b, f'\\u{b:04x}').encode() for b in
               [*range(0x20), 0x22, 0x5C]}
_ESCAPED_MASK = sum(1 << b for b in JSON_ESCAPE)


class _Nfa:
  """Thompson NFA: per state, epsilon targets, (byte mask, target) edges, a region."""

  def __init__(self, limits: Limits, no_region: set[int], bulk: bool = False):
    # bulk (for the native subset construction): `eps` and `edges` are dicts of
    # lists (states without any have no entry), and embedded DFAs' byte edges are
    # kept as arrays in `bulk_edges`: (sources, class index, the classes' masks,
    # targets) — `_embed_bulk`; no per-state Python objects for them.
    self.bulk = bulk
    self.eps: Any = collections.defaultdict(list) if bulk else []
    self.edges: Any = collections.defaultdict(list) if bulk else []
    self.bulk_edges: list[tuple[np.ndarray, np.ndarray, tuple[int, ...], np.ndarray]] = []
    # bulk: the listed `edges` as columns (sources int64[E], masks, targets), set
    # by `_to_dfa` once the NFA is built.
    self.listed: tuple[np.ndarray, tuple[int, ...], tuple[int, ...]] | None = None
    self.n = 0  # states
    self.cap = 4 * limits.max_states
    # Counted-loop ids of the states as runs (first state, region id): states are
    # made in order and the region changes only in `_region` (`region` expands).
    self._runs: list[tuple[int, int]] = [(0, -1)]
    self.cur_region = -1
    # Per region id: (AST node id, lo, hi, hub state).
    self.regions: list[tuple[int, int, int | None, int]] = []
    self.limits, self.no_region = limits, no_region
    self.deadline = time.perf_counter() + limits.max_seconds

  @property
  def region(self) -> np.ndarray:
    """int32[n]: each state's counted-loop id (-1: none)."""
    firsts = [f for f, _ in self._runs] + [self.n]
    return np.repeat(np.array([r for _, r in self._runs], np.int32), np.diff(firsts))

  def _set_region(self, r: int) -> None:
    self.cur_region = r
    if self._runs[-1][0] == self.n:
      self._runs[-1] = (self.n, r)
    else:
      self._runs.append((self.n, r))

  def _over_cap(self):
    raise LimitError(f'automaton: more than {self.cap} NFA states '
                     f'(Limits.max_states={self.limits.max_states})')

  def state(self) -> int:
    return self.states(1)

  def states(self, k: int) -> int:
    """k fresh states; returns the first id."""
    first = self.n
    if first + k > self.cap:
      self._over_cap()
    self.n += k
    if not self.bulk:
      self.eps.extend([] for _ in range(k))
      self.edges.extend([] for _ in range(k))
    return first

  def build(self, node: Node, start: int) -> int:
    """Adds `node` from `start`; returns its end state."""
    kind = node[0]
    if kind == 'set':
      end = self.state()
      if node[1]:
        self.edges[start].append((node[1], end))
      return end
    if kind == 'cat':
      # Byte sets (a literal's bytes, mostly) added here, not by a call each.
      edges, bulk = self.edges, self.bulk
      for part in node[1]:
        if part[0] != 'set':
          start = self.build(part, start)
          continue
        end = self.n
        if end >= self.cap:
          self._over_cap()
        self.n = end + 1
        if not bulk:
          self.eps.append([])
          edges.append([])
        if part[1]:
          edges[start].append((part[1], end))
        start = end
      return start
    if kind == 'alt':
      end = self.state()
      for part in node[1]:
        s = self.state()
        self.eps[start].append(s)
        self.eps[self.build(part, s)].append(end)
      return end
    if kind == 'chain':
      return self._chain(node[1], node[2], start)
    if kind == 'dfa':
      if self.bulk:
        return self._embed_bulk(node[1], node[2], start)
      return self._embed(node[1], node[2], start)
    _, body, lo, hi = node
    if (self.cur_region < 0 and max(lo, hi or 0) > self.limits.region_min
        and id(node) not in self.no_region and is_char(body)):
      if 0 < lo <= self.limits.region_min:
        # X{lo,hi} as X^lo X{0,hi-lo}: a loop counted from 0 accepts at copy 0
        # exactly when its DFA state does, even if another path (`|X{1,15}`) makes
        # that state accepting without any character.
        for _ in range(lo):
          start = self.build(body, start)
        return self._region(node, start, 0, None if hi is None else hi - lo)
      return self._region(node, start, lo, hi)
    for _ in range(lo):
      start = self.build(body, start)
    if hi is None:  # body*: a loop through a fresh state.
      loop = self.state()
      self.eps[start].append(loop)
      self.eps[self.build(body, loop)].append(loop)
      return loop
    end = self.state()
    for _ in range(hi - lo):  # Optional copies, nested so the NFA stays linear.
      self.eps[start].append(end)
      start = self.build(body, start)
    self.eps[start].append(end)
    return end

  def _region(self, node: Node, start: int, lo: int, hi: int | None) -> int:
    body = node[1]
    self._set_region(len(self.regions))
    hub = self.state()
    self.regions.append((id(node), lo, hi, hub))
    self.eps[start].append(hub)
    self.eps[self.build(body, hub)].append(hub)
    self._set_region(-1)
    end = self.state()
    self.eps[hub].append(end)
    return end

  def _chain(self, members, sep: Node, start: int) -> int:
    """first[i]: nothing written yet before member i; rest[i]: something was."""
    first, rest = start, self.state()
    for node, required in members:
      nf, nr, entry = self.state(), self.state(), self.state()
      # One copy of the member, entered from `first` or after `sep` from `rest`
      # (two copies would give the DFA twin states only minimisation could merge).
      self.eps[first].append(entry)
      self.eps[self.build(sep, rest)].append(entry)
      self.eps[self.build(node, entry)].append(nr)
      if not required:
        self.eps[first].append(nf)
        self.eps[rest].append(nr)
      first, rest = nf, nr
    end = self.state()
    self.eps[first].append(end)
    self.eps[rest].append(end)
    return end

  def _entry(self, dfa: Dfa, start: int) -> int:
    """The NFA state an embedded DFA's start state becomes: `start` itself, or a
    fresh state entered from it when the DFA moves back into its start (else such
    a move would land on `start`, which may also lead elsewhere: the end of a
    loop `X*` before the DFA, or the skip of an optional copy)."""
    if not _reenters_start(dfa):
      return start
    entry = self.state()
    self.eps[start].append(entry)
    return entry

  def _embed(self, dfa: Dfa, json_escape: bool, start: int) -> int:
    start = self._entry(dfa, start)
    ids = [start] + [self.state() for _ in range(dfa.n_states - 1)]
    end = self.state()
    n_cls = dfa.delta_SxC.shape[1]
    cls_mask = [0] * n_cls
    for b, c in enumerate(dfa.byte_class.tolist()):
      cls_mask[c] |= 1 << b
    special = [cls_mask[c] & _ESCAPED_MASK if json_escape else 0 for c in range(n_cls)]
    for s, row in enumerate(dfa.delta_SxC.tolist()):
      if dfa.accepting[s]:
        self.eps[ids[s]].append(end)
      masks: dict[int, int] = {}
      for c, t in enumerate(row):
        if t < 0:
          continue
        masks[t] = masks.get(t, 0) | (cls_mask[c] & ~special[c])
        for b in _bits(special[c]):
          mid = self.build(lit(JSON_ESCAPE[b][:-1]), ids[s])
          self.edges[mid].append((1 << JSON_ESCAPE[b][-1], ids[t]))
      for t, m in masks.items():
        if m:
          self.edges[ids[s]].append((m, ids[t]))
    return end


  def _embed_bulk(self, dfa: Dfa, json_escape: bool, start: int) -> int:
    """`_embed` with the byte edges as arrays: `_embed_template`'s edges with its
    local states renumbered (0: `start`, i >= 1: fresh state i - 1)."""
    start = self._entry(dfa, start)
    n_new, acc, parts = _embed_template(dfa, json_escape)
    first = self.states(n_new)
    end = first + dfa.n_states - 1
    shift = first - 1
    for s in acc:
      self.eps[start if s == 0 else s + shift].append(end)
    for src_l, cls, masks, tgt_l in parts:
      src = src_l + shift
      src[src_l == 0] = start
      tgt = tgt_l + shift
      tgt[tgt_l == 0] = start
      self.bulk_edges.append((src, cls, masks, tgt))
    return end


@functools.lru_cache(maxsize=4096)
def _reenters_start(dfa: Dfa) -> bool:
  """Whether some move of `dfa` leads into its start state."""
  return bool((dfa.delta_SxC == 0).any())


@functools.lru_cache(maxsize=4096)
def _nonzero_masks(masks: tuple[int, ...]) -> frozenset[int]:
  return frozenset(m for m in masks if m)


@functools.lru_cache(maxsize=4096)
def _embed_template(dfa: Dfa, json_escape: bool):
  """(new states, accepting states, edge arrays) of `dfa` embedded in an NFA, in
  local state ids: 0 the entry, 1..S-1 the DFA's other states, S the exit (each
  accepting state has an epsilon edge to it), then the escape states. Edge arrays
  as `_Nfa.bulk_edges` (sources, mask index, masks, targets). Cached: a member's
  DFA is embedded at every level that holds it."""
  S = dfa.n_states
  cls_mask = dfa_compose.class_masks(dfa)
  if json_escape:
    plain = tuple(m & ~_ESCAPED_MASK for m in cls_mask)
  else:
    plain = cls_mask
  d = dfa.delta_SxC
  if json_escape:
    src, cls = np.nonzero((d >= 0) & np.array([m != 0 for m in plain])[None, :])
  else:
    src, cls = np.nonzero(d >= 0)
  parts = []
  if len(src):
    parts.append((src.astype(np.int64), cls, plain, d[src, cls].astype(np.int64)))
  n_new = S  # S - 1 DFA states and the exit.
  if json_escape:
    got = _escape_edges(dfa, S + 1)
    if got is not None:
      esc, n_esc = got
      parts.append(esc)
      n_new += n_esc
  return n_new, np.flatnonzero(dfa.accepting).tolist(), tuple(parts)


def _escape_edges(dfa: Dfa, next_id: int):
  """The escaped forms of `dfa`'s edges on bytes JSON must escape (`JSON_ESCAPE`),
  as one edge array (sources, mask index, masks, targets) in local ids (DFA
  state s is s; new states from `next_id`), and the number of new states; None
  when there are none. Per source state that has any: one state after `\\`, and
  for `\\u00XX` one state after each of `u`, `0`, `0` and one per high digit
  (`0`/`1`), so an escape costs at most six states per source state (one chain
  of literal states per escaped byte and state was ~40 NFA states per DFA state
  in Python). The same language as `_Nfa._embed`'s chains."""
  esc_b = _ESC_BYTES
  T_SxB = dfa.delta_SxC[:, dfa.byte_class[esc_b]].astype(np.int64)
  has_SxB = T_SxB >= 0
  rows = np.flatnonzero(has_SxB.any(axis=1))
  if not len(rows):
    return None
  T_RxB, has_RxB = T_SxB[rows], has_SxB[rows]
  src, byte, tgt = [], [], []
  n = next_id

  def fresh(need_R: np.ndarray) -> np.ndarray:
    """A new state for each row where `need_R` (-1 elsewhere)."""
    nonlocal n
    out = np.full(len(rows), -1, np.int64)
    k = int(need_R.sum())
    out[need_R] = np.arange(n, n + k)
    n += k
    return out

  def edges(frm_R: np.ndarray, b: int, to_R: np.ndarray, where: np.ndarray) -> None:
    if where.any():
      src.append(frm_R[where])
      byte.append(np.full(int(where.sum()), b, np.int64))
      tgt.append(to_R[where])

  every = np.ones(len(rows), bool)
  back = fresh(every)  # After the backslash.
  edges(rows.astype(np.int64), 0x5C, back, every)
  for j, b in enumerate(esc_b.tolist()):
    seq = JSON_ESCAPE[b]
    if len(seq) == 2:
      edges(back, seq[1], T_RxB[:, j], has_RxB[:, j])
  uni = ~_ESC_SHORT
  need_u = (has_RxB & uni[None, :]).any(axis=1)
  u1, u2, u3 = fresh(need_u), fresh(need_u), fresh(need_u)
  edges(back, ord('u'), u1, need_u)
  edges(u1, ord('0'), u2, need_u)
  edges(u2, ord('0'), u3, need_u)
  for h in (0, 1):
    cols = uni & (esc_b >> 4 == h)
    need_h = (has_RxB & cols[None, :]).any(axis=1)
    u4 = fresh(need_h)
    edges(u3, ord(f'{h}'), u4, need_h)
    for j in np.flatnonzero(cols).tolist():
      edges(u4, ord(f'{int(esc_b[j]) & 15:x}'), T_RxB[:, j], has_RxB[:, j])
  byte_E = np.concatenate(byte)
  used = sorted(set(byte_E.tolist()))
  slot = np.zeros(256, np.int64)
  slot[used] = np.arange(len(used))
  return ((np.concatenate(src), slot[byte_E], tuple(1 << b for b in used),
           np.concatenate(tgt)), n - next_id)


# The bytes JSON must escape, ascending, and which of them have a short escape.
_ESC_BYTES = np.array(sorted(JSON_ESCAPE), np.int64)
_ESC_SHORT = np.array([len(JSON_ESCAPE[b]) == 2 for b in sorted(JSON_ESCAPE)])


def _bits(mask: int) -> list[int]:
  out = []
  while mask:
    low = mask & -mask
    out.append(low.bit_length() - 1)
    mask ^= low
  return out


# Byte classes of a set of masks (lives in regex_ast so dfa_compose can use it
# without importing this module).
_byte_classes = regex_ast.byte_classes


class _RegionConflict(Exception):

  def __init__(self, node_ids: set[int]):
    super().__init__()
    self.node_ids = node_ids


def to_dfa(node: Node, limits: Limits = DEFAULT_LIMITS) -> Dfa:
  """Composition (or subset construction), counted-loop unrolling, pruning and
  minimisation.

  Cached per (node, limits) in this process: a schema's members repeat
  the same pieces (strings, numbers, `$ref` targets), and so do a server's
  schemas. The result is shared: treat it as read-only.
  """
  try:
    return _to_dfa_cached(node, limits)
  except TypeError:  # An unhashable node (a caller's own payload): not cached.
    return _to_dfa_uncached(node, limits)


@functools.lru_cache(maxsize=4096)
def _to_dfa_cached(node: Node, limits: Limits) -> Dfa:
  return _to_dfa_uncached(node, limits)


def _to_dfa_uncached(node: Node, limits: Limits) -> Dfa:
  """By the subset construction where it is native (`dfa_native`: re-determinising
  embedded members in C++ costs less than composing them in Python, ~1.3-2x on
  JSONSchemaBench's larger subsets); else by composition (`dfa_compose`) where the
  AST's pieces do not overlap, and the subset construction for small ASTs (where
  it costs less) and overlaps."""
  if dfa_native.LIB is not None or _size_at_most(node, _SMALL_AST):
    return _subset_dfa(node, limits)
  try:
    return _composed_dfa(node, limits)
  except dfa_compose.Fallback:
    return _subset_dfa(node, limits)


def _composed_dfa(node: Node, limits: Limits) -> Dfa:
  """`dfa_compose.compose`, trimmed, minimised, renumbered and interned; raises
  `dfa_compose.Fallback` where the pieces overlap."""
  delta, byte_class, accepting = dfa_compose.compose(
      node, limits.max_states, limits.max_seconds, limits.region_min,
      lambda n: _subset_dfa_cached(n, limits))
  tag = np.full(len(accepting), -1, np.int64)
  delta, accepting, _, _ = _prune(delta, accepting, tag, np.zeros(delta.shape, bool))
  # (Unreachable rows, e.g. of a local fallback's abandoned attempt, stay until the
  # final renumbering; the start is still state 0.)
  # Classes every state treats alike merged (the arena's partition is global).
  col = _column_ids(delta)
  _, first = np.unique(col, return_index=True)
  order = np.argsort(first)
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  delta = np.ascontiguousarray(delta[:, first[order]])
  byte_class = rank[col][byte_class].astype(np.int32)
  S = len(accepting)
  delta, accepting, _, _ = _minimise(delta, accepting, np.full(S, -1, np.int64),
                                     np.zeros(delta.shape, bool))
  delta, accepting = _renumber(delta, accepting, byte_class)
  delta, byte_class = _canonical_classes(delta, byte_class)
  return intern(Dfa(delta, byte_class, accepting))


# ASTs up to this many byte sets and embedded DFA states go to the subset
# construction: below it composition's fixed costs (a class partition, an arena)
# outweigh re-determinising (measured on JSONSchemaBench's small schemas).
_SMALL_AST = 200


def _size_at_most(node: Node, budget: int, loop_above: int | None = None) -> bool:
  """Whether `node` holds at most `budget` byte sets and embedded DFA states; with
  `loop_above`, also no repetition that `to_dfa` builds as a counted loop (a
  one-character body with a bound above `loop_above`). One walk, stopping at the
  first counted loop or once past the budget."""
  todo, left = [node], budget
  while todo:
    n = todo.pop()
    kind = n[0]
    if kind == 'set':
      left -= 1
    elif kind == 'dfa':
      left -= n[1].n_states
    elif kind in ('cat', 'alt'):
      for p in n[1]:  # (Byte sets counted here, not pushed: a literal's bytes, mostly.)
        if p[0] == 'set':
          left -= 1
        else:
          todo.append(p)
    elif kind == 'chain':
      todo.extend(m for m, _ in n[1])
      todo.append(n[2])
    else:  # rep: a counted loop, or its body once per bounded copy.
      _, body, lo, hi = n
      if loop_above is not None and max(lo, hi or 0) > loop_above and is_char(body):
        return False
      left -= 0 if hi is None else max(hi - 1, 0)
      todo.append(body)
    if left < 0:  # (`left` only falls: stopping early gives the same answer.)
      return False
  return True


@functools.lru_cache(maxsize=4096)
def _subset_dfa_cached(node: Node, limits: Limits) -> Dfa:
  return _subset_dfa(node, limits)


def _subset_dfa(node: Node, limits: Limits, counted: bool = False) -> Dfa:
  """The subset construction (with counted loops) of the whole AST; without
  counted loops, natively in one call (`dfa_compose.native`); with `counted`, a
  `CountedDfa` where counted loops remain."""
  if not counted and dfa_native.can_compose():
    got = dfa_compose.native(node, limits.max_states, limits.max_seconds, limits.region_min)
    if got is not None:
      delta, accepting, byte_class = got
      return intern(Dfa(delta, byte_class, accepting))
  no_region: set[int] = set()
  for _ in range(8):
    try:
      return _to_dfa(node, limits, no_region, counted)
    except _RegionConflict as e:
      no_region |= e.node_ids  # Unroll those repetitions the ordinary way.
  return _to_dfa(node, limits, no_region | {-1}, counted)


@dataclasses.dataclass(frozen=True, eq=False)
class CountedDfa:
  """`to_dfa`'s automaton before its counted loops are unrolled: the minimal DFA
  of the loops (Shape legend: S states, C byte classes, R loops) and a counter.

  `tag_S`: -1 outside loops, 2r loop r's hub (between characters), 2r+1 inside
  one of its characters; `internal_SxC`: the edge stays in its loop. Loop r
  repeats `lo_R[r]`..`hi_R[r]` times (-1: unbounded). The language is that of
  `unrolled` (what `to_dfa` returns), read with a counter c of the loop the state
  is in (`lattice.decode.counted` has the rules, mirroring
  `dfa_native.unroll`): entering a loop sets c = 0, an edge back to the hub
  counts a character, a character starts only while c < hi, the loop is left
  (and accepts) only with c >= lo. The constrained decoder carries c in its
  loop (`lattice.decode.counted.CountedIndex`) instead of ~hi copies of the
  loop's states in its tables.
  """
  delta_SxC: np.ndarray     # int32, -1 = reject
  byte_class: np.ndarray    # int32[256]
  accepting: np.ndarray     # bool[S]
  tag_S: np.ndarray         # int64[S]
  internal_SxC: np.ndarray  # bool[S, C]
  lo_R: np.ndarray          # int64[R]
  hi_R: np.ndarray          # int64[R], -1 = unbounded

  @property
  def n_states(self) -> int:
    return len(self.accepting)

  @functools.cached_property
  def unrolled(self) -> Dfa:
    """The plain DFA of the same language (equal to `to_dfa`'s)."""
    got = dfa_native.unroll(self.delta_SxC, self.accepting, self.tag_S, self.internal_SxC,
                            self.lo_R, self.hi_R, _unrolled_count(self.tag_S, self.lo_R,
                                                                  self.hi_R),
                            self.byte_class)
    if got is None:
      raise RegexError('automaton: internal error unrolling a counted loop')
    delta, accepting, byte_class = got
    return intern(Dfa(delta, byte_class, accepting))


def _unrolled_count(tag_S: np.ndarray, lo_R: np.ndarray, hi_R: np.ndarray) -> int:
  """States of the unrolled DFA (as `_unrolled_size`): those outside loops, then
  per loop with a hub (copies = (hi if bounded else lo) + 1) x (1 + characters)."""
  tag = np.asarray(tag_S)
  n = int((tag < 0).sum())
  count = np.bincount(tag[tag >= 0], minlength=2 * len(lo_R))
  for r in range(len(lo_R)):
    if count[2 * r]:
      n += (int(hi_R[r] if hi_R[r] >= 0 else lo_R[r]) + 1) * (1 + int(count[2 * r + 1]))
  return n


def to_counted_dfa(node: Node, limits: Limits = DEFAULT_LIMITS) -> Dfa | CountedDfa:
  """`to_dfa(node)` with its counted loops kept as counters (a `CountedDfa`), or
  the plain `Dfa` where none remain (or `dfa_native` is not built). The same
  caps and errors as `to_dfa` (the unrolled size is checked against
  `Limits.max_states`), so a schema compiles, or sheds members, alike either way.
  Cached per (node, limits)."""
  if dfa_native.LIB is None or not _may_count(node, limits.region_min):
    return to_dfa(node, limits)  # (Shares to_dfa's cache: members recur across schemas.)
  try:
    return _to_counted_cached(node, limits)
  except TypeError:  # An unhashable node: not cached.
    return _subset_dfa(node, limits, counted=True)


def _may_count(node: Node, region_min: int) -> bool:
  """Whether `node` holds a repetition `_Nfa.build` may make a counted loop (a
  one-character body, a bound above `region_min`); embedded DFAs hold none."""
  todo, seen = [node], set()
  while todo:
    n = todo.pop()
    kind = n[0]
    if kind != 'set':  # (A subtree shared by several parents: walked once.)
      if id(n) in seen:
        continue
      seen.add(id(n))
    if kind in ('cat', 'alt'):
      for p in n[1]:
        if p[0] != 'set':
          todo.append(p)
    elif kind == 'chain':
      todo.extend(m for m, _ in n[1])
      todo.append(n[2])
    elif kind == 'rep':
      _, body, lo, hi = n
      if max(lo, hi or 0) > region_min and is_char(body):
        return True
      todo.append(body)
  return False


@functools.lru_cache(maxsize=256)
def _to_counted_cached(node: Node, limits: Limits) -> Dfa | CountedDfa:
  return _subset_dfa(node, limits, counted=True)


def _to_dfa(node: Node, limits: Limits, no_region: set[int], counted: bool = False) -> Dfa:
  nfa = _Nfa(limits, no_region, bulk=dfa_native.LIB is not None)
  start = nfa.state()
  final = nfa.build(node, start)
  if nfa.bulk:
    # The listed byte edges as flat columns (sources, masks, targets), once: the
    # mask set here and `_native_subsets`' arrays read them.
    lens = np.fromiter(map(len, nfa.edges.values()), np.int64, len(nfa.edges))
    pairs = list(itertools.chain.from_iterable(nfa.edges.values()))
    listed_m, listed_t = zip(*pairs) if pairs else ((), ())
    listed_s = np.repeat(np.fromiter(nfa.edges.keys(), np.int64, len(nfa.edges)), lens)
    nfa.listed = (listed_s, listed_m, listed_t)
    mask_set = set(listed_m)
  else:
    mask_set = {m for edges in nfa.edges for m, _ in edges}
  seen_plain = set()
  for _, _, plain, _ in nfa.bulk_edges:
    if id(plain) not in seen_plain:  # (Templates' mask tuples recur: one pass each.)
      seen_plain.add(id(plain))
      mask_set.update(_nonzero_masks(plain))
  masks = sorted(mask_set)
  if nfa.bulk:
    byte_class, held = dfa_native.byte_classes(masks)
  else:
    byte_class, held = _byte_classes(masks)
  n_cls = int(byte_class.max()) + 1
  if dfa_native.LIB is not None:
    # Without counted loops: the steps below (`dfa_native.finish`) in the same call.
    got = _native_subsets(nfa, masks, held, n_cls, final, limits,
                          None if nfa.regions else byte_class)
    if not nfa.regions:
      if got is None:
        raise RegexError('the pattern matches nothing')
      delta, accepting, byte_class = got
      return intern(Dfa(delta, byte_class, accepting))
  else:
    got = _python_subsets(nfa, masks, held, n_cls, final, limits)
  delta, accepting, internal, (mem_off, mem), core = got
  tag = _region_tags(nfa, mem_off, mem, delta, internal, core) if nfa.regions else (
      np.full(len(accepting), -1, np.int64))
  internal = internal == 1
  delta, accepting, tag, internal = _prune(delta, accepting, tag, internal)
  delta, accepting, tag, internal = _minimise(delta, accepting, tag, internal)
  if nfa.regions and counted and (tag >= 0).any():
    _unrolled_size(nfa, tag, limits)  # The caps and checks of the unrolled DFA.
    lo_R = np.array([lo for _, lo, _, _ in nfa.regions], np.int64)
    hi_R = np.array([-1 if hi is None else hi for _, _, hi, _ in nfa.regions], np.int64)
    return CountedDfa(np.ascontiguousarray(delta, np.int32), np.asarray(byte_class, np.int32),
                      np.asarray(accepting, bool), np.asarray(tag, np.int64),
                      np.asarray(internal, bool), lo_R, hi_R)
  if nfa.regions and dfa_native.LIB is not None:
    # Unrolled and made canonical in one native call (the numpy steps below).
    n = _unrolled_size(nfa, tag, limits)
    lo_R = np.array([lo for _, lo, _, _ in nfa.regions], np.int64)
    hi_R = np.array([-1 if hi is None else hi for _, _, hi, _ in nfa.regions], np.int64)
    got = dfa_native.unroll(delta, accepting, tag, internal, lo_R, hi_R, n, byte_class)
    if got is None:
      raise RegexError('automaton: internal error unrolling a counted loop')
    delta, accepting, byte_class = got
    return intern(Dfa(delta, byte_class, accepting))
  if nfa.regions:
    delta, accepting = _unroll(nfa, delta, accepting, tag, internal, limits)
  delta, accepting = _renumber(delta, accepting, byte_class)
  delta, byte_class = _canonical_classes(delta, byte_class)
  return intern(Dfa(delta, byte_class, accepting))


def _canonical_classes(delta: np.ndarray, byte_class: np.ndarray):
  """(delta, byte_class) with classes every state treats alike merged and classes
  numbered in the order of their smallest byte: equal automata get equal tables
  whichever byte partition they were built over."""
  col = _column_ids(delta)
  group_B = col[byte_class]
  _, first_byte, inv = np.unique(group_B, return_index=True, return_inverse=True)
  order = np.argsort(first_byte)
  rank = np.empty(len(order), np.int64)
  rank[order] = np.arange(len(order))
  new_class = rank[inv.reshape(-1)].astype(np.int32)
  cols = byte_class[first_byte[order]]
  return np.ascontiguousarray(delta[:, cols], np.int32), new_class


def _closure_fn(nfa: _Nfa, core_ok):
  """(closure(s), core(states)): epsilon closures kept to the core states."""
  closures: dict[int, tuple[int, ...]] = {}

  def closure(s: int) -> tuple[int, ...]:
    if s not in closures:
      seen, todo = {s}, [s]
      while todo:
        for t in nfa.eps[todo.pop()]:
          if t not in seen:
            seen.add(t)
            todo.append(t)
      closures[s] = tuple(t for t in seen if core_ok[t])
    return closures[s]

  def core(states) -> frozenset:
    out = set()
    for s in states:
      out.update(closure(s))
    return frozenset(out)

  return closure, core


def _native_subsets(nfa: _Nfa, masks, held, n_cls: int, final: int, limits: Limits,
                    finish_classes: np.ndarray | None = None):
  """`_python_subsets` by `dfa_native.subset_construction`; with `finish_classes`
  its `finish`ed DFA instead ((delta, accepting, byte_class) or None: no match)."""
  mask_id = {m: i for i, m in enumerate(masks)}
  n = nfa.n
  # Byte edges: the lists' and the bulk arrays', grouped by source.
  listed_s, listed_m, listed_t = nfa.listed
  src = [listed_s]
  mid = [np.fromiter(map(mask_id.__getitem__, listed_m), np.int64, len(listed_m))]
  tgt = [np.fromiter(listed_t, np.int64, len(listed_t))]
  ids_of: dict[int, np.ndarray] = {}
  for s_E, c_E, plain, t_E in nfa.bulk_edges:
    ids = ids_of.get(id(plain))
    if ids is None:
      ids = ids_of[id(plain)] = np.array([mask_id.get(m, -1) for m in plain], np.int64)
    src.append(s_E)
    mid.append(ids[c_E])
    tgt.append(t_E)
  src, mid, tgt = np.concatenate(src), np.concatenate(mid), np.concatenate(tgt)
  by_src = np.argsort(src, kind='stable')
  edge_off = np.zeros(n + 1, np.int64)
  np.cumsum(np.bincount(src, minlength=n), out=edge_off[1:])
  core_ok = edge_off[1:] > edge_off[:-1]
  core_ok[final] = True
  got = dfa_native.subset_construction(
      n, nfa.eps, edge_off, mid[by_src], tgt[by_src], held, n_cls, core_ok, nfa.region,
      final, limits.max_states, nfa.deadline - time.perf_counter(), finish_classes)
  if isinstance(got, int) and got == 1:
    raise LimitError(f'automaton: more than {limits.max_states} DFA states '
                     f'(Limits.max_states)')
  if isinstance(got, int):
    raise LimitError(f'automaton: compiling took over {limits.max_seconds} s '
                     f'(Limits.max_seconds)')
  if finish_classes is not None:
    return got
  delta, internal, accepting, members = got
  return delta, accepting, internal.astype(np.int64), members, _closure_fn(nfa, core_ok)[1]


def _python_subsets(nfa: _Nfa, masks, held, n_cls: int, final: int, limits: Limits):
  """(delta int32[S, C], accepting, internal int64[S, C] (see `_region_tags`), the
  subsets as (offsets, sorted NFA states), core()): the subset construction in
  Python."""
  classes_of = dict(zip(masks, held))
  # moves[s]: {class: NFA targets of state s on that class} (classes with targets).
  moves = []
  for edges in nfa.edges:
    mv: dict[int, list[int]] = {}
    for m, t in edges:
      for c in classes_of[m]:
        if c in mv:
          mv[c].append(t)
        else:
          mv[c] = [t]
    moves.append(mv)
  core_ok = [bool(e) or s == final for s, e in enumerate(nfa.edges)]
  _, core = _closure_fn(nfa, core_ok)
  first = core([0])
  ids, order, rows = {first: 0}, [first], []
  internal_rows = []  # Per state with loop members: per class, moved from the loop?
  region = nfa.region.tolist()
  for dstate in order:
    row, inner = [-1] * n_cls, None
    regs = {region[s] for s in dstate} - {-1}
    step: dict[int, list[int]] = {}
    srcs: dict[int, set[int]] = {}
    for s in dstate:
      for c, ts in moves[s].items():
        if c in step:
          step[c].extend(ts)
        else:
          step[c] = list(ts)
        if regs:
          srcs.setdefault(c, set()).add(region[s])
    if regs:
      inner = [0] * n_cls
    for c, ts in step.items():
      targets = core(ts)
      if not targets:
        continue
      if inner is not None:
        src = srcs[c]
        inner[c] = (1 if -1 not in src else 0) if len(src) == 1 else 2
      if targets not in ids:
        ids[targets] = len(order)
        order.append(targets)
        if len(order) > limits.max_states:
          raise LimitError(f'automaton: more than {limits.max_states} DFA states '
                           f'(Limits.max_states)')
      row[c] = ids[targets]
    rows.append(row)
    internal_rows.append(inner or [0] * n_cls)
    if len(rows) % 256 == 0 and time.perf_counter() > nfa.deadline:
      raise LimitError(f'automaton: compiling took over {limits.max_seconds} s '
                       f'(Limits.max_seconds)')
  delta = np.array(rows, np.int32).reshape(len(order), n_cls)
  accepting = np.array([final in d for d in order], bool)
  internal = np.array(internal_rows, np.int64).reshape(len(order), n_cls)
  mem_off = np.zeros(len(order) + 1, np.int64)
  np.cumsum([len(d) for d in order], out=mem_off[1:])
  mem = np.fromiter((t for d in order for t in sorted(d)), np.int64, int(mem_off[-1]))
  return delta, accepting, internal, (mem_off, mem), core


def _region_tags(nfa: _Nfa, mem_off: np.ndarray, mem: np.ndarray, delta, internal,
                 core) -> np.ndarray:
  """int64[S]: -1 outside counted loops, 2r for loop r's hub state (between
  characters), 2r+1 inside a character of loop r. Raises `_RegionConflict` naming
  the loops whose DFA states are shared with anything else, or that are left and
  re-entered in one step. DFA state i is the set of NFA states
  `mem[mem_off[i]:mem_off[i+1]]` (ascending)."""
  S = len(mem_off) - 1
  region = np.asarray(nfa.region, np.int64)
  count = np.diff(mem_off)
  reg_m = region[mem]
  big = np.iinfo(np.int64).max
  lo = np.full(S, big, np.int64)
  hi = np.full(S, -1, np.int64)
  out = np.zeros(S, bool)
  some = count > 0
  if len(mem):
    starts = mem_off[:-1][some]
    lo[some] = np.minimum.reduceat(np.where(reg_m >= 0, reg_m, big), starts)
    hi[some] = np.maximum.reduceat(reg_m, starts)
    out[some] = np.maximum.reduceat((reg_m < 0).astype(np.int8), starts) > 0
  inside = hi >= 0
  tag = np.full(S, -1, np.int64)
  bad: set[int] = set()
  multi = inside & ((lo != hi) | (internal == 2).any(axis=1))
  for i in np.flatnonzero(multi).tolist():
    bad |= set(reg_m[mem_off[i]:mem_off[i + 1]].tolist()) - {-1}
  single = inside & ~multi
  # A state of one loop is its hub when its set is the hub's closure.
  hub_of = np.full(S, -1, np.int64)
  for r, (_, _, _, hub) in enumerate(nfa.regions):
    want = np.array(sorted(core([hub])), np.int64)
    for i in np.flatnonzero(single & (lo == r) & (count == len(want))).tolist():
      if np.array_equal(mem[mem_off[i]:mem_off[i + 1]], want):
        hub_of[i] = r
        break
  is_hub = single & (hub_of >= 0)
  tag[is_hub] = 2 * lo[is_hub]
  mixed = single & ~is_hub & out  # A character of the loop in step with another branch.
  bad |= set(lo[mixed].tolist())
  char = single & ~is_hub & ~out
  tag[char] = 2 * lo[char] + 1
  for i in np.where(tag >= 0)[0]:
    r = int(tag[i] // 2)
    t = delta[i]
    t_tag = np.where(t >= 0, tag[np.maximum(t, 0)], -1)
    inner = internal[i] == 1
    # Moves out of the loop must leave it; moves in it must stay in it.
    if ((~inner & (t >= 0) & (t_tag >= 0) & (t_tag // 2 == r)).any()
        or (inner & ((t_tag < 0) | (t_tag // 2 != r))).any()):
      bad.add(r)
  if bad:
    raise _RegionConflict({nfa.regions[r][0] for r in bad})
  return tag


def distances_to_accept(delta_SxK: np.ndarray, accepting: np.ndarray) -> np.ndarray:
  """int64[S]: fewest edges from each state to an accepting one (-1: none).

  `delta_SxK[s, k]` is the target of s's k-th edge (-1: none). One breadth-first
  search backwards from every accepting state at once (scipy's C shortest paths
  on the reversed graph from a virtual source), O(S x K); natively
  (`dfa_native`) when it is built.
  """
  if dfa_native.LIB is not None:
    return dfa_native.distances(delta_SxK, accepting)
  S = len(accepting)
  src = np.repeat(np.arange(S), delta_SxK.shape[1])
  dst = np.asarray(delta_SxK).reshape(-1)
  keep = dst >= 0
  acc = np.flatnonzero(accepting)
  # Reversed edges dst -> src, plus the virtual source S -> every accepting state.
  rows = np.concatenate([dst[keep], np.full(len(acc), S)])
  cols = np.concatenate([src[keep], acc])
  graph = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(S + 1, S + 1))
  dist = csgraph.shortest_path(graph, method='D', unweighted=True, indices=S)[:S]
  return np.where(np.isfinite(dist), dist - 1, -1).astype(np.int64)


def _prune(delta, accepting, tag, internal):
  """Drops states that cannot reach an accepting state (edges to them reject)."""
  live = distances_to_accept(delta, accepting) >= 0
  if not live[0]:
    raise RegexError('the pattern matches nothing')
  new_id = np.where(live, np.cumsum(live) - 1, -1).astype(np.int32)
  delta = np.where(delta >= 0, new_id[np.where(delta >= 0, delta, 0)], -1)
  return delta[live], accepting[live], tag[live], internal[live]


def _column_ids(delta_SxC: np.ndarray) -> np.ndarray:
  """int64[C]: equal columns share an id (as `_row_ids(delta_SxC.T)`): grouped by a
  random 64-bit hash of each column (one pass), checked exactly (on a collision,
  `_row_ids`)."""
  S = delta_SxC.shape[0]
  coef = np.random.default_rng(S).integers(1, 2**62, S, dtype=np.int64).astype(np.uint64)
  h = (delta_SxC.astype(np.uint64).T * coef).sum(axis=1)  # Wraps: a hash.
  _, first, ids = np.unique(h, return_index=True, return_inverse=True)
  ids = ids.reshape(-1)
  if (delta_SxC == delta_SxC[:, first[ids]]).all():
    return ids
  return _row_ids(delta_SxC.T)


def _row_ids(a_NxK: np.ndarray) -> np.ndarray:
  """int64[N]: equal rows share an id (ids in the rows' sorted order), as
  `np.unique(axis=0, return_inverse=True)` but on a byte view (much faster)."""
  a = np.ascontiguousarray(a_NxK, np.int64)
  _, inv = np.unique(a.view(np.dtype((np.void, 8 * a.shape[1]))).reshape(-1),
                     return_inverse=True)
  return inv.reshape(-1)


# State-rounds of Moore refinement spent before a DFA without counted loops is left
# unminimised (correct, only larger): 25 rounds of a 4000-state DFA.
_MINIMISE_BUDGET = 100_000
# Odd multipliers of the signature hash (fixed seed: compilation is deterministic).
_HASH_COEF = np.random.default_rng(0).integers(1, 2**62, 258, dtype=np.int64).astype(
    np.uint64) * np.uint64(2) + np.uint64(1)


def _signatures(delta, internal, block):
  succ = np.where(delta >= 0, block[np.maximum(delta, 0)], -1)
  return np.concatenate([block[:, None], succ * 2 + internal], axis=1)


def _refine(delta, internal, block, hashed: bool, budget: int | None = None):
  """Moore rounds from partition `block` to the fixpoint (ids: int64[S]); None
  when rounds x states would pass `budget`."""
  n_blocks = int(block.max()) + 1
  spent = 0
  C = delta.shape[1]
  # Hash terms: successor blocks (a -1 target reads the appended -1), the state's
  # own block, and the internal flags where there are any.
  coef_succ, coef_own = _HASH_COEF[1:C + 1] * np.uint64(2), _HASH_COEF[0]
  inner = (internal.astype(np.uint64) * _HASH_COEF[1:C + 1]).sum(axis=1) if (
      hashed and internal.any()) else np.uint64(0)
  while True:
    spent += len(block)
    if budget is not None and spent > budget:
      return None
    if hashed:
      ext = np.append(block, -1).astype(np.uint64)
      h = (ext[delta] * coef_succ).sum(axis=1) + ext[:-1] * coef_own + inner
      _, block = np.unique(h, return_inverse=True)
      block = block.reshape(-1)
    else:
      block = _row_ids(_signatures(delta, internal, block))
    n = int(block.max()) + 1
    if n == n_blocks:
      return block
    n_blocks = n


def _is_congruence(delta, internal, block0, block) -> bool:
  """Whether states of one block agree on `block0` and on every successor block."""
  first = np.zeros(int(block.max()) + 1, np.int64)
  first[block[::-1]] = np.arange(len(block))[::-1]
  leader = first[block]
  sig = _signatures(delta, internal, block)
  return bool((block0 == block0[leader]).all() and (sig[:, 1:] == sig[leader, 1:]).all())


def _minimise(delta, accepting, tag, internal):
  """Moore partition refinement (loop tags kept apart); states renumbered by block.

  Rounds compare a 64-bit hash of each state's signature (one pass over the
  table, then a 1-D sort) instead of sorting whole rows; the final partition is
  checked exactly (same acceptance and tag, same successor blocks on every class
  within each block), and on a mismatch (a hash collision) the rounds are redone
  on the rows themselves. Either way the result is an exact congruence.
  """
  block0 = _row_ids(np.stack([accepting.astype(np.int64), tag], 1))
  # Without counted loops, minimising is only a size saving: past a budget of
  # state-rounds (long chains need a round per link) the DFA is kept as built.
  budget = None if (tag >= 0).any() else _MINIMISE_BUDGET
  # (The internal flag of a rejected edge is never read: cleared, so both paths
  # see the same signatures.)
  internal = internal & (delta >= 0)
  if dfa_native.LIB is not None:  # Hopcroft-style in C++: no budget needed.
    block = dfa_native.partition(delta, internal, block0)
  else:
    block = _refine(delta, internal, block0, hashed=True, budget=budget)
    if block is None:
      return delta, accepting, tag, internal
    if not _is_congruence(delta, internal, block0, block):
      block = _refine(delta, internal, block0, hashed=False)
    # Block ids in order of each block's first state (as the native refinement).
    _, first, block = np.unique(block, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    block = rank[block.reshape(-1)]
  n_blocks = int(block.max()) + 1
  leader = np.zeros(n_blocks, np.int64)
  leader[block[::-1]] = np.arange(len(block))[::-1]
  new_delta = np.where(delta[leader] >= 0, block[np.maximum(delta[leader], 0)], -1)
  # Keep the start state first.
  perm = np.arange(n_blocks)
  perm[[0, block[0]]] = perm[[block[0], 0]]
  inv = np.argsort(perm)
  new_delta = np.where(new_delta >= 0, inv[np.maximum(new_delta, 0)], -1)[perm]
  return (new_delta.astype(np.int32), accepting[leader][perm], tag[leader][perm],
          internal[leader][perm])


def _unrolled_size(nfa: _Nfa, tag: np.ndarray, limits: Limits) -> int:
  """The states `_unroll` makes: those outside loops, then per loop with a hub
  its copies x (hub + character states). Raises LimitError past
  `limits.max_states` (as `_unroll`) and RegexError when the start is inside a
  loop's character."""
  if tag[0] >= 0 and tag[0] % 2 == 1:
    raise RegexError('automaton: internal error unrolling a counted loop')
  count = np.bincount(tag[tag >= 0], minlength=2 * len(nfa.regions))
  n = int((tag < 0).sum())
  for r, (_, lo, hi, _) in enumerate(nfa.regions):
    if not count[2 * r]:
      continue
    k = 1 + int(count[2 * r + 1])
    copies = (hi if hi is not None else lo) + 1
    if n + copies * k > limits.max_states:
      raise LimitError(f'automaton: more than {limits.max_states} DFA states '
                       f'(Limits.max_states) unrolling {{{lo},{hi}}}')
    n += copies * k
  return n


def _unroll(nfa: _Nfa, delta, accepting, tag, internal, limits: Limits):
  """Each counted loop's DFA states copied once per count (see module docstring)."""
  S = len(accepting)
  base = np.where(tag < 0)[0]
  new_id = np.full(S, -1, np.int64)
  new_id[base] = np.arange(len(base))
  blocks_d, blocks_a = [delta[base]], [accepting[base]]
  n = len(base)
  for r, (_, lo, hi, _) in enumerate(nfa.regions):
    hubs = np.where(tag == 2 * r)[0]
    if not len(hubs):
      continue
    h = int(hubs[0])
    mids = np.where(tag == 2 * r + 1)[0]
    local = np.full(S, -1, np.int64)
    local[h] = 0
    local[mids] = np.arange(1, len(mids) + 1)
    k = 1 + len(mids)
    copies = (hi if hi is not None else lo) + 1
    if n + copies * k > limits.max_states:
      raise LimitError(f'automaton: more than {limits.max_states} DFA states '
                       f'(Limits.max_states) unrolling {{{lo},{hi}}}')
    members = np.concatenate([[h], mids])
    t = delta[members][None]                           # 1 x k x C, old ids
    inner = internal[members][None]
    i_K = np.arange(copies)[:, None, None]
    loc = local[np.maximum(t, 0)]
    is_hub, is_mid = inner & (t == h), inner & (t >= 0) & (loc > 0)
    from_hub = np.zeros((1, k, 1), bool)
    from_hub[0, 0, 0] = True
    nxt = np.minimum(i_K + 1, copies - 1) if hi is None else i_K + 1
    tgt = np.where(is_hub, n + nxt * k, np.where(is_mid, n + i_K * k + loc, -2))
    # A new character only below hi; leaving only at or above lo.
    starting = from_hub & (is_hub | is_mid)
    if hi is not None:
      tgt = np.where((starting | is_hub) & (i_K >= hi), -1, tgt)
    leave = (t >= 0) & ~inner
    tgt = np.where(leave & from_hub & (i_K >= lo), -3 - t, tgt)   # old id, fixed below
    tgt = np.where(leave & ~(from_hub & (i_K >= lo)), -1, tgt)
    tgt = np.where(t < 0, -1, tgt)
    blocks_d.append(tgt.reshape(copies * k, -1))
    acc = np.zeros((copies, k), bool)
    acc[:, 0] = accepting[h] & (np.arange(copies) >= lo)
    blocks_a.append(acc.reshape(-1))
    new_id[h] = n  # Entries from outside land in copy 0's hub.
    n += copies * k
  out = np.concatenate(blocks_d).astype(np.int64)
  old = np.where(out <= -3, -3 - out, np.where(out >= 0, -1, -1))
  plain = slice(0, len(base))
  out[plain] = np.where(out[plain] >= 0, new_id[np.maximum(out[plain], 0)], -1)
  out = np.where(out <= -3, new_id[np.maximum(old, 0)], out)
  if (out[plain] < -1).any() or (tag[0] >= 0 and tag[0] % 2 == 1):
    raise RegexError('automaton: internal error unrolling a counted loop')
  accepting = np.concatenate(blocks_a)
  if tag[0] >= 0:  # The pattern starts inside a loop: start at its copy 0.
    start = int(new_id[0])
    perm = np.arange(n)
    perm[[0, start]] = perm[[start, 0]]
    inv = np.argsort(perm)
    out = np.where(out >= 0, inv[np.maximum(out, 0)], -1)[perm]
    accepting = accepting[perm]
  return out.astype(np.int32), accepting


def _bfs_order(delta: np.ndarray) -> np.ndarray:
  """int64[n]: the states reachable from state 0 in breadth-first order, each
  state's targets in column order (`_renumber` orders the columns by smallest
  byte: then a canonical numbering). One numpy step per BFS layer."""
  S = delta.shape[0]
  seen = np.zeros(S, bool)
  seen[0] = True
  layers, frontier = [np.zeros(1, np.int64)], np.zeros(1, np.int64)
  while len(frontier):
    t = delta[frontier].reshape(-1)
    t = t[t >= 0]
    t = t[~seen[t]]
    if not len(t):
      break
    _, first = np.unique(t, return_index=True)
    frontier = t[np.sort(first)].astype(np.int64)
    seen[frontier] = True
    layers.append(frontier)
  return np.concatenate(layers)


def _renumber(delta, accepting, byte_class: np.ndarray | None = None):
  """States in canonical BFS order from the start (state 0; each state's targets
  in the order of the bytes that reach them: classes by their smallest byte, so
  the order does not depend on how classes are numbered), dropping unreachable
  ones. Without `byte_class`, classes in index order."""
  S = len(accepting)
  by_byte = delta if byte_class is None else delta[:, _classes_by_byte(byte_class)]
  if dfa_native.LIB is not None:
    order = dfa_native.bfs_order(by_byte)
  else:
    order = _bfs_order(by_byte)
  new = np.full(S, -1, np.int64)
  new[order] = np.arange(len(order))
  d = delta[order]
  return np.where(d >= 0, new[np.maximum(d, 0)], -1).astype(np.int32), accepting[order]


def _classes_by_byte(byte_class: np.ndarray) -> np.ndarray:
  """Class ids in the order of their smallest byte."""
  _, first = np.unique(byte_class, return_index=True)
  return np.argsort(first)


def compile_regex(pattern: str, limits: Limits = DEFAULT_LIMITS) -> Dfa:
  """The DFA over UTF-8 bytes of `re.fullmatch(pattern, .)` (see `regex_parse`)."""
  return to_dfa(regex_parse.parse(pattern), limits)


def parse(pattern: str) -> Node:
  """The AST of `pattern` (see `regex_parse`)."""
  return regex_parse.parse(pattern)
