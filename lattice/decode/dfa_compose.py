"""Regex AST -> DFA: composed in Python without a subset construction, or natively.

Shape legend: S states, C byte classes.

With the native core (`dfa_native`), `automaton.to_dfa` builds an AST without
counted loops by `native` (end of this module): the AST written as a flat program
and compiled in one C++ call. Without it, by `compose` below (the subset
construction would run in Python, and re-determinising nested members is what
composing avoids):

`automaton.to_dfa` determinises a Thompson NFA of the whole AST. A JSON schema's
AST is mostly already deterministic: embedded minimal DFAs of members (`embed`),
keys, literals, separators; determinising it again at every nesting level costs
the whole automaton per level, in Python. Here the DFA is built directly, bottom
up, in one arena of rows (one shared byte-class partition), with numpy copies:

- a piece (`_Frag`) is a virtual start row (the transitions out of its start, not
  a state of its own), whether it accepts the empty string, and its exit states
  (accepting states, still open for what follows);
- `cat(F, G)`: F's exits take G's start transitions (their rows merged);
- `alt(F, G)`: the start rows merged; where two pieces move on one class, a state
  for the set of their targets is made on the fly (a subset construction confined
  to where the pieces overlap: JSON keys with a common prefix, `,` before every
  optional member), so shared continuations are never copied;
- `X*`: X's exits take X's own start transitions;
- a member chain (`regex_ast.chain`): each member's continuation (the members after
  it) is built once and shared by both ways into it (first member, or after `sep`).

A merge where both rows move on one class needs a real determinisation (a number
followed by a digit); then `Fallback` is raised, and the smallest composite node
around the overlap is built by the subset construction and embedded (at the top
node, the caller uses the subset construction for the whole AST). Long counted repetitions of one character (the
counted loops of `automaton`) and JSON-escaped embeds are built by `automaton` as
sub-DFAs and embedded. The result is trimmed (every state reaches acceptance),
minimised within `automaton`'s budget and renumbered: the same language as
`automaton.to_dfa`'s subset construction, checked against it in
`tests/dfa_compose_test.py`.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from lattice.decode import dfa_native, regex_ast
from lattice.decode.regex_ast import LimitError, Node


class Fallback(Exception):
  """This AST needs a real determinisation (use the subset construction)."""


class _Frag:
  __slots__ = ('start', 'acc', 'exits')

  def __init__(self, start: np.ndarray, acc: bool, exits: np.ndarray):
    self.start, self.acc, self.exits = start, acc, exits


class _Arena:
  """Rows of every state built so far (int32[n, C], -1 = reject)."""

  def __init__(self, n_cls: int, max_states: int, deadline: float):
    self.C = n_cls
    self.rows = np.full((1024, n_cls), -1, np.int32)
    self.n = 0
    self.max_states, self.deadline = max_states, deadline
    self.subset_of: dict[frozenset, int] = {}   # base states -> subset state
    self.base: dict[int, frozenset] = {}        # subset state -> its base states
    self.todo: list[int] = []                   # subset states without their row yet
    self.calls = 0

  def alloc(self, k: int) -> int:
    """Ids of k fresh rejecting states start at the returned offset."""
    if self.n + k > self.max_states:
      raise LimitError(f'automaton: more than {self.max_states} DFA states '
                       f'(Limits.max_states)')
    while self.n + k > len(self.rows):
      grown = np.full((2 * len(self.rows), self.C), -1, np.int32)
      grown[:self.n] = self.rows[:self.n]
      self.rows = grown
    off = self.n
    self.n += k
    self.calls += 1
    if self.calls % 512 == 0 and time.perf_counter() > self.deadline:
      raise LimitError('automaton: compiling took over the time cap (Limits.max_seconds)')
    return off

  def merge_rows(self, rows: list[np.ndarray], exit_set: set[int]) -> np.ndarray:
    """One row moving as all of `rows` together: where several move on a class, to
    the state of the set of their targets (made here, with its successors)."""
    row = self._merged(np.stack(rows), exit_set)
    while self.todo:
      batch, self.todo = self.todo, []
      pairs = [s for s in batch if len(self.base[s]) == 2]
      for s in batch:  # Sets of three or more states: one at a time.
        if len(self.base[s]) != 2:
          self.rows[s] = self._merged(self.rows[sorted(self.base[s])], exit_set)
      if pairs:  # Pairs (the common case): one vectorised step for the batch.
        ab = np.array([sorted(self.base[s]) for s in pairs], np.int64)
        a_PxC, b_PxC = self.rows[ab[:, 0]], self.rows[ab[:, 1]]
        hi = np.maximum(a_PxC, b_PxC)
        for i, c in zip(*np.nonzero((a_PxC >= 0) & (b_PxC >= 0) & (a_PxC != b_PxC))):
          hi[i, c] = self._subset({int(a_PxC[i, c]), int(b_PxC[i, c])}, exit_set)
        self.rows[np.array(pairs)] = hi
    return row

  def _merged(self, stack: np.ndarray, exit_set: set[int]) -> np.ndarray:
    hi = stack.max(axis=0)  # -1 (reject) is below every state: the one mover, if one
    if len(stack) == 2:
      a, b = stack
      clash = np.flatnonzero((a >= 0) & (b >= 0) & (a != b))
      for c in clash.tolist():
        hi[c] = self._subset({int(a[c]), int(b[c])}, exit_set)
      return hi
    lo = np.where(stack >= 0, stack, np.iinfo(np.int32).max).min(axis=0)
    for c in np.flatnonzero((hi >= 0) & (lo != hi)).tolist():
      col = stack[:, c]
      hi[c] = self._subset(set(col[col >= 0].tolist()), exit_set)
    return hi

  def _subset(self, targets: set[int], exit_set: set[int]) -> int:
    if self.base.keys().isdisjoint(targets):  # Base states only (the common case).
      base = frozenset(targets)
    else:
      base = frozenset().union(*(self.base.get(t, (t,)) for t in targets))
    if len(base) == 1:
      return next(iter(base))
    got = self.subset_of.get(base)
    if got is not None:
      return got
    s = self.alloc(1)
    self.subset_of[base] = s
    self.base[s] = base
    if not base.isdisjoint(exit_set):  # A set holding an exit is an exit.
      exit_set.add(s)
    self.todo.append(s)
    return s


def _classes(node: Node, masks: set[int], seen: set[int], sub_dfas: dict, sub,
             region_min: int) -> None:
  """Collects the byte masks the AST reads (sets, embedded DFAs' classes); the
  pieces built by `sub` (the subset construction) go to `sub_dfas`."""
  if id(node) in seen:
    return
  seen.add(id(node))
  kind = node[0]
  if kind == 'set':
    masks.add(node[1])
  elif kind in ('cat', 'alt'):
    for p in node[1]:
      _classes(p, masks, seen, sub_dfas, sub, region_min)
  elif kind == 'chain':
    for m, _ in node[1]:
      _classes(m, masks, seen, sub_dfas, sub, region_min)
    _classes(node[2], masks, seen, sub_dfas, sub, region_min)
  elif kind == 'dfa':
    dfa = sub(node) if node[2] else node[1]
    sub_dfas[id(node)] = dfa
    _dfa_masks(dfa, masks)
  elif kind == 'rep':
    _, body, lo, hi = node
    if max(lo, hi or 0) > region_min and regex_ast.is_char(body):
      dfa = sub(node)  # A counted loop: `automaton` builds it in linear time.
      sub_dfas[id(node)] = dfa
      _dfa_masks(dfa, masks)
    else:
      _classes(body, masks, seen, sub_dfas, sub, region_min)
  else:
    raise Fallback(f'unknown node {kind!r}')


def _dfa_masks(dfa, masks: set[int]) -> None:
  masks.update(class_masks(dfa))


@functools.lru_cache(maxsize=4096)
def class_masks(dfa) -> tuple[int, ...]:
  """Per byte class of `dfa`, the 256-bit mask of its bytes."""
  bc = dfa.byte_class
  eq_CxB = bc[None, :] == np.arange(int(bc.max()) + 1)[:, None]
  packed = np.packbits(eq_CxB, axis=1, bitorder='little')
  return tuple(int.from_bytes(row.tobytes(), 'little') for row in packed)


class _Builder:

  def __init__(self, arena: _Arena, byte_class: np.ndarray, sub_dfas: dict, sub=None):
    self.a = arena
    self.sub = sub
    self.C = arena.C
    rep_byte = np.zeros(self.C, np.int64)
    rep_byte[byte_class[::-1]] = np.arange(256)[::-1]
    self.rep_byte = rep_byte                     # one byte of each global class
    self.sub_dfas = sub_dfas
    self.none = np.empty(0, np.int64)
    self.set_rows: dict[int, np.ndarray] = {}

  def eps(self) -> _Frag:
    return _Frag(np.full(self.C, -1, np.int32), True, self.none)

  def build(self, node: Node) -> _Frag:
    """A fresh copy of `node`'s automaton (its exits are this use's alone).

    Where two pieces of a composite node overlap (`Fallback`), that node alone is
    built by the subset construction and embedded: the overlap stays local.
    (`link` raises before it writes, so the arena holds only unreachable rows of
    the abandoned attempt, which `automaton` drops.)"""
    if node[0] in ('cat', 'alt', 'chain', 'rep') and id(node) not in self.sub_dfas:
      try:
        return self._build(node)
      except Fallback:
        if self.sub is None:
          raise
        return self.embed(self.sub(node))
    return self._build(node)

  def _build(self, node: Node) -> _Frag:
    kind = node[0]
    if kind == 'set':
      bits = self.set_rows.get(node[1])
      if bits is None:
        raw = np.frombuffer(node[1].to_bytes(32, 'little'), np.uint8)
        bits = np.unpackbits(raw, bitorder='little').astype(bool)[self.rep_byte]
        self.set_rows[node[1]] = bits
      s = self.a.alloc(1)
      return _Frag(np.where(bits, s, -1).astype(np.int32), False, np.array([s]))
    if kind == 'cat':
      if not node[1]:
        return self.eps()
      frag = self.build(node[1][0])
      for p in node[1][1:]:
        frag = self.cat(frag, self.build(p))
      return frag
    if kind == 'alt':
      return self.alt([self.build(p) for p in node[1]])
    if kind == 'chain':
      return self.chain(node[1], node[2])
    if id(node) in self.sub_dfas:
      return self.embed(self.sub_dfas[id(node)])
    if kind == 'dfa':
      return self.embed(node[1])
    _, body, lo, hi = node
    frag = None
    for _ in range(lo):
      f = self.build(body)
      frag = f if frag is None else self.cat(frag, f)
    if hi is None:
      tail = self.star(self.build(body))
    else:
      tail = self.eps()
      for _ in range(hi - lo):  # (X(X(X)?)?)?: built from the inside out.
        tail = self.alt([self.cat(self.build(body), tail), self.eps()])
    return tail if frag is None else self.cat(frag, tail)

  def embed(self, dfa) -> _Frag:
    S = dfa.n_states
    off = self.a.alloc(S)
    d = dfa.delta_SxC[:, dfa.byte_class[self.rep_byte]]
    self.a.rows[off:off + S] = np.where(d >= 0, d + off, -1)
    exits = np.flatnonzero(dfa.accepting).astype(np.int64) + off
    return _Frag(self.a.rows[off].copy(), bool(dfa.accepting[0]), exits)

  def link(self, exits: np.ndarray, start: np.ndarray) -> None:
    """Exit states also take the moves of `start` (on classes they do not move on,
    or to the same state)."""
    if not len(exits) or not (start >= 0).any():
      return
    rows = self.a.rows[exits]
    if ((rows >= 0) & (start >= 0)[None] & (rows != start[None])).any():
      raise Fallback('a piece continues on a byte its successor starts with')
    self.a.rows[exits] = np.where(start >= 0, start, rows)

  def merge(self, starts: list[np.ndarray], exits: np.ndarray):
    """(start row, exits): the starts merged; subset states made for it that hold
    an exit are exits too."""
    starts = [s for s in starts if (s >= 0).any()]
    if len(starts) <= 1:
      return (starts[0] if starts else np.full(self.C, -1, np.int32)), exits
    exit_set = set(exits.tolist())
    n_before = len(exit_set)
    row = self.a.merge_rows(starts, exit_set)
    if len(exit_set) != n_before:
      exits = np.array(sorted(exit_set), np.int64)
    return row, exits

  def cat(self, f: _Frag, g: _Frag) -> _Frag:
    self.link(f.exits, g.start)
    exits = np.union1d(g.exits, f.exits) if g.acc else g.exits
    start = f.start
    if f.acc:
      start, exits = self.merge([f.start, g.start], exits)
    return _Frag(start, f.acc and g.acc, exits)

  def alt(self, frags: list[_Frag]) -> _Frag:
    exits = np.unique(np.concatenate([f.exits for f in frags]))
    start, exits = self.merge([f.start for f in frags], exits)
    return _Frag(start, any(f.acc for f in frags), exits)

  def star(self, f: _Frag) -> _Frag:
    self.link(f.exits, f.start)
    return _Frag(f.start, True, f.exits)

  def chain(self, members, sep: Node) -> _Frag:
    """rest: what may follow once something was written; first: before anything.
    Each member and its continuation are built once, entered from both."""
    rest, first = self.eps(), self.eps()
    for node, required in reversed(members):
      m = self.cat(self.build(node), rest)
      after_sep = self.cat(self.build(sep), m)
      rest = after_sep if required else self.alt([after_sep, rest])
      first = m if required else self.alt([m, first])
    return first


def compose(node: Node, max_states: int, max_seconds: float, region_min: int, sub):
  """(delta_SxC int32, byte_class int32[256], accepting bool[S]) of `node`, state 0
  the start, not yet trimmed or minimised. `sub(node)` builds a sub-automaton by
  the subset construction (counted loops, JSON-escaped embeds). Raises Fallback
  where the pieces overlap (see module docstring), LimitError past the caps."""
  masks: set[int] = set()
  sub_dfas: dict = {}
  _classes(node, masks, set(), sub_dfas, sub, region_min)
  byte_class, _ = regex_ast.byte_classes(sorted(masks), held=False)
  n_cls = int(byte_class.max()) + 1
  arena = _Arena(n_cls, max_states, time.perf_counter() + max_seconds)
  b = _Builder(arena, byte_class, sub_dfas, sub)
  top = b._build(node)  # pylint: disable=protected-access  # The top's overlap: Fallback.
  start = arena.alloc(1)
  arena.rows[start] = top.start
  accepting = np.zeros(arena.n, bool)
  accepting[top.exits] = True
  accepting[start] = top.acc
  delta = arena.rows[:arena.n]
  # State 0 the start.
  perm = np.arange(arena.n)
  perm[[0, start]] = perm[[start, 0]]
  delta = np.where(delta >= 0, perm[np.maximum(delta, 0)], -1)[perm].astype(np.int32)
  return delta, byte_class, accepting[perm]


# -- Native: the whole AST in one call ---------------------------------------------------
# With the native core, `automaton.to_dfa` of an AST without counted loops is one
# call of `dfa_native.compose` (the Thompson NFA of `automaton._Nfa`, the subset
# construction and the trim-minimise-canonicalise step, all in C++): a schema
# compiles one such AST per nesting level (`Compiler.minimal`), and the Python NFA
# and array marshalling around the native subset construction were a fixed cost
# per level. Python only writes the AST as a flat program of ints (`program`).


class NotNative(Exception):
  """The AST needs `automaton`'s Python NFA (a counted loop, an unknown node)."""


# Opcodes of `dfa_native.compose`'s program (lattice_compose_run in dfa_native.cc).
_OP_NONE, _OP_BYTE, _OP_SET, _OP_CAT, _OP_ALT, _OP_REP, _OP_DFA, _OP_CHAIN = range(8)
# A one-byte set's ops, by its mask.
_ONE_BYTE = {1 << b: (_OP_BYTE, b) for b in range(256)}


def program(node: Node, region_min: int) -> tuple[list[int], list[int], list]:
  """(ops, byte masks, embedded DFAs): `node` in prefix order for
  `dfa_native.compose`: a one-byte set as its byte, other sets as an index into
  the masks, an embedded DFA as an index into the DFAs and its `json_escape`, a
  chain as its separator then (required, member) pairs.

  Raises:
    NotNative: a repetition `automaton` builds as a counted loop (one-character
      body, a bound above `region_min`), or an unknown node kind.
    RecursionError: an AST nested past Python's recursion limit.
  """
  ops: list[int] = []
  push, ext = ops.append, ops.extend
  mask_id: dict[int, int] = {}
  dfa_id: dict = {}
  one_byte = _ONE_BYTE

  def put_set(m: int) -> None:
    op = one_byte.get(m)
    if op is not None:
      ext(op)
      return
    if not m:
      push(_OP_NONE)
      return
    i = mask_id.get(m)
    if i is None:
      i = mask_id[m] = len(mask_id)
    ext((_OP_SET, i))

  def walk(n: Node) -> None:
    kind = n[0]
    if kind == 'set':
      put_set(n[1])
    elif kind == 'cat' or kind == 'alt':
      parts = n[1]
      ext((_OP_CAT if kind == 'cat' else _OP_ALT, len(parts)))
      for p in parts:
        k = p[0]
        if k == 'set':
          op = one_byte.get(p[1])  # (Inline: a literal's bytes, mostly.)
          if op is not None:
            ext(op)
          else:
            put_set(p[1])
        elif k == 'dfa':  # (Inline too: an object's member values, mostly.)
          i = dfa_id.get(p[1])
          if i is None:
            i = dfa_id[p[1]] = len(dfa_id)
          ext((_OP_DFA, i, 1 if p[2] else 0))
        else:
          walk(p)
    elif kind == 'dfa':
      i = dfa_id.get(n[1])
      if i is None:
        i = dfa_id[n[1]] = len(dfa_id)
      ext((_OP_DFA, i, 1 if n[2] else 0))
    elif kind == 'chain':
      members = n[1]
      ext((_OP_CHAIN, len(members)))
      walk(n[2])
      for m, required in members:
        push(1 if required else 0)
        walk(m)
    elif kind == 'rep':
      _, body, lo, hi = n
      if max(lo, hi or 0) > region_min and regex_ast.is_char(body):
        raise NotNative('a counted loop')
      ext((_OP_REP, lo, -1 if hi is None else hi))
      walk(body)
    else:
      raise NotNative(f'node {kind!r}')

  walk(node)
  return ops, list(mask_id), list(dfa_id)


def native(node: Node, max_states: int, max_seconds: float, region_min: int):
  """(delta int32[S, C], accepting bool[S], byte_class int32[256]): the minimal
  DFA of `node` in `automaton`'s canonical form, by `dfa_native.compose` (the
  same tables as `automaton`'s subset construction: checked in
  tests/dfa_compose_test.py); None where it does not apply (a counted loop, an
  unknown node, an AST nested past the recursion limit: `automaton` builds those).
  Requires `dfa_native.can_compose()`.

  Raises:
    LimitError: past `max_states` DFA states, 4 x `max_states` NFA states or
      `max_seconds` (`automaton`'s messages).
    RegexError: nothing matches.
  """
  t0 = time.perf_counter()
  try:
    ops, masks, dfas = program(node, region_min)
  except (NotNative, RecursionError):
    return None
  try:
    got = dfa_native.compose(ops, masks, dfas, max_states, 4 * max_states,
                             max_seconds - (time.perf_counter() - t0))
  except OverflowError:  # A repetition count past int32: `automaton` builds it.
    return None
  if isinstance(got, tuple):
    return got
  if got == 1:
    raise LimitError(f'automaton: more than {max_states} DFA states (Limits.max_states)')
  if got == 2:
    raise LimitError(f'automaton: compiling took over {max_seconds} s (Limits.max_seconds)')
  if got == 3:
    raise LimitError(f'automaton: more than {4 * max_states} NFA states '
                     f'(Limits.max_states={max_states})')
  if got == 4:
    raise regex_ast.RegexError('the pattern matches nothing')
  return None  # 5: a program the library cannot read (not expected): `automaton` builds it.
