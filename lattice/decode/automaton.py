"""Regular languages over bytes: regex syntax -> AST -> NFA -> minimal DFA.

Shape legend: S DFA states, C byte classes.

The constrained decoder (`lattice.decode.constraints`) needs a deterministic
automaton over the bytes a tokenizer emits. Patterns are read as Python regexes
over *characters* (with `re.ASCII` meaning for \\d \\w \\s) and every character is
matched as its UTF-8 bytes, so `.` and negated classes accept any valid UTF-8
character and the automaton only ever accepts valid UTF-8. Matching is whole-string
(`re.fullmatch`); `^` at the start and `$` at the end are accepted and ignored.

Pipeline: `parse` gives an AST of tuples (`('set', mask)`, `('cat', parts)`,
`('alt', parts)`, `('rep', node, lo, hi)`, with a 256-bit int as the byte set);
`to_dfa` builds a Thompson NFA, splits the 256 bytes into classes that every edge
treats alike, runs the subset construction over those classes, drops states from
which no accepting state is reachable, and merges equivalent states (Moore).
"""

from __future__ import annotations

import dataclasses

import numpy as np

Node = tuple
EPS: Node = ('cat', ())
ALL_BYTES = (1 << 256) - 1


class RegexError(ValueError):
  """A pattern this module cannot compile; the message says where and why."""


def byte_set(*ranges: tuple[int, int]) -> int:
  mask = 0
  for lo, hi in ranges:
    mask |= ((1 << (hi - lo + 1)) - 1) << lo
  return mask


def one(mask: int) -> Node:
  return ('set', mask)


def lit(data: bytes | str) -> Node:
  if isinstance(data, str):
    data = data.encode('utf-8')
  return cat(*(one(1 << b) for b in data))


def cat(*parts: Node) -> Node:
  flat = []
  for p in parts:
    flat.extend(p[1] if p[0] == 'cat' else (p,))
  return flat[0] if len(flat) == 1 else ('cat', tuple(flat))


def alt(*parts: Node) -> Node:
  if not parts:
    raise RegexError('empty alternation')
  return parts[0] if len(parts) == 1 else ('alt', tuple(parts))


def rep(node: Node, lo: int, hi: int | None) -> Node:
  if hi is not None and hi < lo:
    raise RegexError(f'repetition {{{lo},{hi}}}: max below min')
  return ('rep', node, lo, hi)


_CONT = one(byte_set((0x80, 0xBF)))
# Every non-ASCII character as its valid UTF-8 encodings (RFC 3629, table 3-7 of
# the Unicode standard): no overlongs, no surrogates, nothing above U+10FFFF.
NON_ASCII: Node = alt(
    cat(one(byte_set((0xC2, 0xDF))), _CONT),
    cat(one(1 << 0xE0), one(byte_set((0xA0, 0xBF))), _CONT),
    cat(one(byte_set((0xE1, 0xEC), (0xEE, 0xEF))), _CONT, _CONT),
    cat(one(1 << 0xED), one(byte_set((0x80, 0x9F))), _CONT),
    cat(one(1 << 0xF0), one(byte_set((0x90, 0xBF))), _CONT, _CONT),
    cat(one(byte_set((0xF1, 0xF3))), _CONT, _CONT, _CONT),
    cat(one(1 << 0xF4), one(byte_set((0x80, 0x8F))), _CONT, _CONT))

_DIGIT = byte_set((48, 57))
_WORD = _DIGIT | byte_set((65, 90), (97, 122)) | 1 << 95
_SPACE = byte_set((9, 13)) | 1 << 32
_ASCII = byte_set((0, 127))
_CLASS_ESCAPES = {'d': _DIGIT, 'w': _WORD, 's': _SPACE}
_CHAR_ESCAPES = {'n': 10, 't': 9, 'r': 13, 'f': 12, 'v': 11, 'a': 7, '0': 0}


def chars(ascii_mask: int, negated: bool = False, extra: tuple[str, ...] = ()) -> Node:
  """One character: from an ASCII set (+ non-ASCII `extra`), or any outside it."""
  if negated:
    if extra:
      raise RegexError('negated classes with non-ASCII members are not supported')
    return alt(one(_ASCII & ~ascii_mask), NON_ASCII)
  return alt(one(ascii_mask), *(lit(c) for c in extra)) if extra else one(ascii_mask)


class _Parser:
  """Recursive descent over Python regex syntax (the subset documented above)."""

  def __init__(self, pattern: str):
    self.p, self.i = pattern, 0

  def error(self, msg: str) -> RegexError:
    return RegexError(f'regex {self.p!r} at {self.i}: {msg}')

  def peek(self) -> str | None:
    return self.p[self.i] if self.i < len(self.p) else None

  def take(self) -> str:
    if self.i >= len(self.p):
      raise self.error('unexpected end')
    self.i += 1
    return self.p[self.i - 1]

  def parse(self) -> Node:
    if self.peek() == '^':
      self.i += 1
    node = self.alternation()
    if self.i != len(self.p):
      raise self.error(f'unexpected {self.p[self.i]!r}')
    return node

  def alternation(self) -> Node:
    parts = [self.sequence()]
    while self.peek() == '|':
      self.i += 1
      parts.append(self.sequence())
    return alt(*parts)

  def sequence(self) -> Node:
    parts = []
    while self.peek() not in (None, '|', ')'):
      if self.peek() == '$' and self.i == len(self.p) - 1:
        self.i += 1
        break
      parts.append(self.quantified(self.atom()))
    return cat(*parts) if parts else EPS

  def number(self) -> int | None:
    start = self.i
    while self.peek() is not None and self.peek().isdigit():
      self.i += 1
    return int(self.p[start:self.i]) if self.i > start else None

  def quantified(self, node: Node) -> Node:
    while self.peek() in ('*', '+', '?', '{'):
      c = self.take()
      if c == '*':
        node = rep(node, 0, None)
      elif c == '+':
        node = rep(node, 1, None)
      elif c == '?':
        node = rep(node, 0, 1)
      else:
        lo = self.number()
        hi = lo
        if self.peek() == ',':
          self.i += 1
          hi = self.number()
        if lo is None or self.take() != '}':
          raise self.error('bad {m,n} repetition')
        node = rep(node, lo, hi)
      if self.peek() in ('?', '+'):  # Lazy/possessive: the same language.
        self.i += 1
    return node

  def atom(self) -> Node:
    c = self.take()
    if c == '(':
      if self.p.startswith('?:', self.i):
        self.i += 2
      elif self.peek() == '?':
        raise self.error('only (...) and (?:...) groups are supported')
      node = self.alternation()
      if self.take() != ')':
        raise self.error('missing )')
      return node
    if c == '[':
      return self.char_class()
    if c == '.':
      return chars(1 << 10, negated=True)
    if c == '\\':
      return self.escape(in_class=False)
    if c in '*+?{)':
      raise self.error(f'nothing to repeat or unbalanced {c!r}')
    if c in '^$':
      raise self.error('anchors are only allowed at the ends')
    return lit(c)

  def escape(self, in_class: bool) -> Node | int | str:
    """An escape: a Node outside classes; a mask or a character inside them."""
    c = self.take()
    if c.lower() in _CLASS_ESCAPES:
      mask = _CLASS_ESCAPES[c.lower()]
      if c.isupper():
        if in_class:
          raise self.error(f'\\{c} inside a class is not supported')
        return chars(mask, negated=True)
      return mask if in_class else one(mask)
    if c in _CHAR_ESCAPES:
      ch = chr(_CHAR_ESCAPES[c])
    elif c in 'xu':
      width = 2 if c == 'x' else 4
      digits = self.p[self.i:self.i + width]
      if len(digits) != width or any(d not in '0123456789abcdefABCDEF' for d in digits):
        raise self.error(f'bad \\{c} escape')
      self.i += width
      ch = chr(int(digits, 16))
    elif c.isalnum():
      raise self.error(f'unsupported escape \\{c}')
    else:
      ch = c
    return ch if in_class else lit(ch)

  def char_class(self) -> Node:
    negated = self.peek() == '^'
    if negated:
      self.i += 1
    mask, extra, first = 0, [], True
    while True:
      c = self.take()
      if c == ']' and not first:
        break
      first = False
      if c == '\\':
        item = self.escape(in_class=True)
        if isinstance(item, int):
          mask |= item
          continue
        c = item
      if self.peek() == '-' and self.p[self.i + 1:self.i + 2] not in ('', ']'):
        self.i += 1
        hi = self.take()
        if hi == '\\':
          hi = self.escape(in_class=True)
          if isinstance(hi, int):
            raise self.error('class escape as a range end')
        if ord(hi) < ord(c) or ord(hi) > 127:
          raise self.error(f'bad or non-ASCII range {c}-{hi}')
        mask |= byte_set((ord(c), ord(hi)))
      elif ord(c) < 128:
        mask |= 1 << ord(c)
      else:
        extra.append(c)
    return chars(mask, negated, tuple(extra))


def parse(pattern: str) -> Node:
  """The AST of `pattern` (see the module docstring for the supported syntax)."""
  return _Parser(pattern).parse()


class _Nfa:
  """Thompson NFA: per state, epsilon targets and (byte mask, target) edges."""

  def __init__(self):
    self.eps: list[list[int]] = []
    self.edges: list[list[tuple[int, int]]] = []

  def state(self) -> int:
    self.eps.append([])
    self.edges.append([])
    return len(self.eps) - 1

  def build(self, node: Node, start: int) -> int:
    """Adds `node` from `start`; returns its end state."""
    kind = node[0]
    if kind == 'set':
      end = self.state()
      if node[1]:
        self.edges[start].append((node[1], end))
      return end
    if kind == 'cat':
      for part in node[1]:
        start = self.build(part, start)
      return start
    if kind == 'alt':
      end = self.state()
      for part in node[1]:
        s = self.state()
        self.eps[start].append(s)
        self.eps[self.build(part, s)].append(end)
      return end
    _, body, lo, hi = node
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


@dataclasses.dataclass(frozen=True)
class Dfa:
  """A minimal DFA without dead states: `delta_SxC[s, byte_class[b]]`, -1 = reject.

  State 0 is the start. Every state can reach an accepting state.
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


def _byte_classes(masks: list[int]) -> np.ndarray:
  """int32[256]: bytes that every mask treats alike share a class."""
  if not masks:
    return np.zeros(256, np.int32)
  bits = np.array([[(m >> b) & 1 for b in range(256)] for m in masks], np.uint8)
  _, cls = np.unique(bits.T, axis=0, return_inverse=True)
  return cls.reshape(-1).astype(np.int32)


def to_dfa(node: Node) -> Dfa:
  """Subset construction, dead-state pruning and minimisation of `node`."""
  nfa = _Nfa()
  start = nfa.state()
  final = nfa.build(node, start)
  masks = sorted({m for edges in nfa.edges for m, _ in edges})
  byte_class = _byte_classes(masks)
  n_cls = int(byte_class.max()) + 1
  reps = [int(np.argmax(byte_class == c)) for c in range(n_cls)]
  # moves[s][c]: NFA targets of state s on class c.
  moves = [[tuple(t for m, t in edges if m >> r & 1) for r in reps] for edges in nfa.edges]
  closures: dict[frozenset, frozenset] = {}

  def closure(states) -> frozenset:
    key = frozenset(states)
    if key not in closures:
      seen, todo = set(key), list(key)
      while todo:
        for t in nfa.eps[todo.pop()]:
          if t not in seen:
            seen.add(t)
            todo.append(t)
      closures[key] = frozenset(seen)
    return closures[key]

  ids = {closure([start]): 0}
  order = [closure([start])]
  rows = []
  for dstate in order:
    row = []
    for c in range(n_cls):
      targets = closure(t for s in dstate for t in moves[s][c])
      if not targets:
        row.append(-1)
        continue
      if targets not in ids:
        ids[targets] = len(order)
        order.append(targets)
      row.append(ids[targets])
    rows.append(row)
  delta = np.array(rows, np.int32).reshape(len(order), n_cls)
  accepting = np.array([final in d for d in order], bool)
  return _minimise(*_prune(delta, accepting), byte_class)


def _prune(delta: np.ndarray, accepting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Drops states that cannot reach an accepting state (edges to them reject)."""
  live = accepting.copy()
  while True:
    targets = np.where(delta >= 0, delta, 0)
    grown = live | ((delta >= 0) & live[targets]).any(axis=1)
    if (grown == live).all():
      break
    live = grown
  if not live[0]:
    raise RegexError('the pattern matches nothing')
  new_id = np.where(live, np.cumsum(live) - 1, -1).astype(np.int32)
  delta = np.where(delta >= 0, new_id[np.where(delta >= 0, delta, 0)], -1)
  return delta[live], accepting[live]


def _minimise(delta: np.ndarray, accepting: np.ndarray, byte_class: np.ndarray) -> Dfa:
  """Moore partition refinement, then states renumbered in BFS order from 0."""
  block = accepting.astype(np.int64)
  n_blocks = len(np.unique(block))
  while True:
    succ = np.where(delta >= 0, block[np.where(delta >= 0, delta, 0)], -1)
    sig = np.concatenate([block[:, None], succ], axis=1)
    _, block = np.unique(sig, axis=0, return_inverse=True)
    block = block.reshape(-1)
    n = int(block.max()) + 1
    if n == n_blocks:
      break
    n_blocks = n
  # One representative per block; renumber by BFS so the start is state 0.
  rep = np.zeros(n_blocks, np.int64)
  rep[block[::-1]] = np.arange(len(block))[::-1]
  order, ids = [int(block[0])], {int(block[0]): 0}
  for b in order:
    for t in delta[rep[b]]:
      if t >= 0 and int(block[t]) not in ids:
        ids[int(block[t])] = len(order)
        order.append(int(block[t]))
  new_delta = np.full((len(order), delta.shape[1]), -1, np.int32)
  for i, b in enumerate(order):
    row = delta[rep[b]]
    new_delta[i] = [ids[int(block[t])] if t >= 0 else -1 for t in row]
  new_accepting = np.array([accepting[rep[b]] for b in order], bool)
  return Dfa(new_delta, byte_class, new_accepting)


def compile_regex(pattern: str) -> Dfa:
  """The minimal DFA over UTF-8 bytes of `re.fullmatch(pattern, ., re.ASCII)`."""
  return to_dfa(parse(pattern))
