"""Regular-expression ASTs over bytes: the node constructors and byte sets.

A node is a tuple: `('set', mask)` (one byte from a 256-bit int mask), `('cat',
parts)`, `('alt', parts)`, `('rep', node, lo, hi)` (hi None: unbounded), and the
compiler's own `('dfa', Dfa, json_escape)` (an automaton embedded as a piece) and
`('chain', members, sep)` (members in order, optional ones skippable, `sep`
between written ones: O(n) states where nested alternations would be exponential).
"""

from __future__ import annotations

import functools

import numpy as np

Node = tuple
EPS: Node = ('cat', ())
ALL_BYTES = (1 << 256) - 1


class RegexError(ValueError):
  """A pattern this module cannot compile; the message says where and why."""


class LimitError(RegexError):
  """Compilation would exceed the configured size or time cap."""


def byte_set(*ranges: tuple[int, int]) -> int:
  mask = 0
  for lo, hi in ranges:
    mask |= ((1 << (hi - lo + 1)) - 1) << lo
  return mask


def one(mask: int) -> Node:
  return ('set', mask)


@functools.lru_cache(maxsize=8192)
def lit(data: bytes | str) -> Node:
  """The bytes of `data` (a str: its UTF-8) in order. Cached: a schema compiler
  writes the same punctuation, keywords and names again and again (nodes are
  immutable tuples, so sharing one is safe)."""
  if isinstance(data, str):
    data = data.encode('utf-8')
  if len(data) == 1:
    return _BYTE_NODES[data[0]]
  return ('cat', tuple([_BYTE_NODES[b] for b in data]))  # (`cat` of the bytes' sets.)


# `one(1 << b)` per byte b, made once (a literal's parts).
_BYTE_NODES = tuple(('set', 1 << b) for b in range(256))


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

# `.` as both Python and ECMA read it (ECMA also excludes \r, U+2028, U+2029): every
# character but those four, so a match is a match under either dialect.
_NON_ASCII_NO_SEP: Node = alt(
    cat(one(byte_set((0xC2, 0xDF))), _CONT),
    cat(one(1 << 0xE0), one(byte_set((0xA0, 0xBF))), _CONT),
    cat(one(byte_set((0xE1, 0xE1), (0xE3, 0xEC), (0xEE, 0xEF))), _CONT, _CONT),
    cat(one(1 << 0xE2), one(byte_set((0x81, 0xBF))), _CONT),
    cat(one(1 << 0xE2), one(1 << 0x80), one(byte_set((0x80, 0xA7), (0xAA, 0xBF)))),
    cat(one(1 << 0xED), one(byte_set((0x80, 0x9F))), _CONT),
    cat(one(1 << 0xF0), one(byte_set((0x90, 0xBF))), _CONT, _CONT),
    cat(one(byte_set((0xF1, 0xF3))), _CONT, _CONT, _CONT),
    cat(one(1 << 0xF4), one(byte_set((0x80, 0x8F))), _CONT, _CONT))
ANY_CHAR: Node = alt(one(byte_set((0, 127)) & ~(1 << 10) & ~(1 << 13)), _NON_ASCII_NO_SEP)
# Any character at all (the unanchored sides of a search).
ANY_STRING_CHAR: Node = alt(one(byte_set((0, 127))), NON_ASCII)

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




def is_char(node: Node) -> bool:
  """Whether `node` is made of byte sets, concatenations and alternations only (the
  body of a repetition that `automaton.to_dfa` may build as a counted loop)."""
  if node[0] == 'set':
    return True
  return node[0] in ('cat', 'alt') and all(is_char(p) for p in node[1])


def chain(members: tuple[tuple[Node, bool], ...], sep: Node) -> Node:
  """Members in order, each `(node, required)`; `sep` between written members."""
  return ('chain', tuple(members), sep)


def embed(dfa, json_escape: bool = False) -> Node:
  """A compiled `automaton.Dfa` as a node; with `json_escape`, every byte the DFA
  reads that JSON must escape (`"`, `\\`, controls) is written as its escape."""
  return ('dfa', dfa, json_escape)


_CONT_MASK = byte_set((0x80, 0xBF))


def max_chars(node: Node) -> float:
  """An upper bound on the characters of a valid-UTF-8 match of `node` (inf:
  unbounded or an embedded DFA). A character is one byte outside 0x80-0xBF plus
  its continuation bytes, so a byte set holding only continuation bytes counts 0."""
  kind = node[0]
  if kind == 'set':
    return 1 if node[1] & ~_CONT_MASK else 0
  if kind == 'cat':
    return sum(max_chars(p) for p in node[1])
  if kind == 'alt':
    return max(max_chars(p) for p in node[1])
  if kind == 'rep':
    if node[3] == 0:
      return 0
    body = max_chars(node[1])
    return body * node[3] if node[3] is not None else (0 if body == 0 else float('inf'))
  if kind == 'chain':
    members = node[1]
    return sum(max_chars(m) for m, _ in members) + max(len(members) - 1, 0) * max_chars(
        node[2])
  return float('inf')


def _cap_reps(node: Node, k: int) -> Node:
  kind = node[0]
  if kind in ('cat', 'alt'):
    return (kind, tuple(_cap_reps(p, k) for p in node[1]))
  if kind == 'rep':
    body = _cap_reps(node[1], k)
    return ('rep', body, node[2], node[2] + k if node[3] is None else node[3])
  return node


def cap_length(node: Node, limit: int, max_extra: int = 32) -> Node | None:
  """A sub-language of `node` whose matches have at most `limit` characters.

  Every unbounded repetition `X{lo,}` becomes `X{lo,lo+k}` with the largest k <=
  `max_extra` that keeps the longest match within `limit` characters
  (`max_chars(node)`, an upper bound). Matches are a subset of
  `node`'s (sound for the decoder, which writes fewer strings); no product with a
  length automaton is needed. None when even k = 0 is too long (the caller then
  intersects with a length automaton).
  """
  if max_chars(node) <= limit:
    return node
  if max_chars(_cap_reps(node, 0)) > limit:
    return None
  lo, hi = 0, max_extra
  while lo < hi:  # Largest k with max_chars(cap(k)) <= limit (monotone in k).
    mid = (lo + hi + 1) // 2
    if max_chars(_cap_reps(node, mid)) <= limit:
      lo = mid
    else:
      hi = mid - 1
  return _cap_reps(node, lo)


def byte_classes(masks: list[int], held: bool = True) -> tuple[np.ndarray, list[list[int]]]:
  """(int32[256] byte -> class, per mask the classes it holds; [] when not `held`):
  bytes that every mask treats alike share a class (classes numbered by their bit
  pattern's order)."""
  if not masks:
    return np.zeros(256, np.int32), []
  raw = np.frombuffer(b''.join(m.to_bytes(32, 'little') for m in masks), np.uint8)
  bits_MxB = np.unpackbits(raw.reshape(len(masks), 32), axis=1, bitorder='little')
  packed = np.ascontiguousarray(np.packbits(bits_MxB, axis=0).T)  # 256 x ceil(M/8)
  _, cls = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).reshape(-1),
                     return_inverse=True)
  cls = cls.reshape(-1).astype(np.int32)
  if not held:
    return cls, []
  return cls, [np.unique(cls[row.astype(bool)]).tolist() for row in bits_MxB]
