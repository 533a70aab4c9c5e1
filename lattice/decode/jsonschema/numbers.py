"""Numbers under `minimum`/`maximum`/`exclusive*`/`multipleOf` as exact digit languages.

Integers: the canonical decimal text (`0`, `-12`, no leading zeros, no `-0`) of
every integer in [lo, hi] exactly, built as a union of digit-prefix ranges (the
classic range-to-regex split: O(digits) alternatives per bound). `multipleOf k`
(an integer k <= 10_000) is the product with a k-state remainder automaton.

Numbers (`type: number`) with bounds: a sound subset, stated exactly: an integer
I in range, or `I.f` / `-I.f` (f decimal digits, not all zero, no exponent) whose
whole open unit interval (I, I+1) (or (-I-1, -I)) lies in range. So 0.5 is not
generated under `maximum: 0.7` (its interval (0, 1) crosses 0.7), but every
generated number validates, exclusive bounds included. Unbounded numbers use the
full JSON number grammar.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from lattice.decode import automaton
from lattice.decode.automaton import EPS, Node, alt, byte_set, cat, lit, one, rep

_D = one(byte_set((48, 57)))
_D19 = one(byte_set((49, 57)))
DIGITS = rep(_D, 1, None)
INT = cat(rep(lit('-'), 0, 1), alt(lit('0'), cat(_D19, rep(_D, 0, None))))
NUMBER = cat(INT, rep(cat(lit('.'), DIGITS), 0, 1),
             rep(cat(one((1 << ord('e')) | (1 << ord('E'))),
                     rep(one((1 << ord('+')) | (1 << ord('-'))), 0, 1), DIGITS), 0, 1))
_FRACTION = cat(lit('.'), rep(_D, 0, None), _D19)  # Not all zeros.


def _digit(lo: int, hi: int) -> Node:
  return one(byte_set((48 + lo, 48 + hi)))


def _same_len(lo: str, hi: str) -> Node:
  """Digit strings of one length between lo and hi (inclusive, lo <= hi)."""
  if not lo:
    return EPS
  if set(lo) == {'0'} and set(hi) == {'9'}:  # Any digits: keeps the split linear.
    return rep(_D, len(lo), len(lo))
  if lo[0] == hi[0]:
    return cat(lit(lo[0]), _same_len(lo[1:], hi[1:]))
  n = len(lo) - 1
  parts = [cat(lit(lo[0]), _same_len(lo[1:], '9' * n)),
           cat(lit(hi[0]), _same_len('0' * n, hi[1:]))]
  if int(hi[0]) - int(lo[0]) > 1:
    parts.append(cat(_digit(int(lo[0]) + 1, int(hi[0]) - 1), rep(_D, n, n)))
  return alt(*parts)


def naturals(lo: int, hi: int | None) -> Node | None:
  """Canonical decimals of the integers in [lo, hi] (0 <= lo; hi None: no bound)."""
  if hi is not None and hi < lo:
    return None
  parts = []
  if lo == 0:
    parts.append(lit('0'))
    lo = 1
    if hi is not None and hi < 1:
      return parts[0]
  a = str(lo)
  top = len(str(hi)) if hi is not None else None
  for n in range(len(a), (top or len(a)) + 1):
    start = a if n == len(a) else '1' + '0' * (n - 1)
    end = str(hi) if top is not None and n == top else '9' * n
    parts.append(_same_len(start, end))
  if hi is None:  # Longer than lo: any digits.
    parts.append(cat(_D19, rep(_D, len(a), None)))
  return alt(*parts)


def integers(lo: int | None, hi: int | None) -> Node | None:
  """Canonical integer texts in [lo, hi] (None: unbounded); None when empty."""
  if lo is not None and hi is not None and hi < lo:
    return None
  parts = []
  if hi is None or hi >= 0:
    pos = naturals(max(lo, 0) if lo is not None else 0, hi)
    if pos is not None:
      parts.append(pos)
  if lo is None or lo < 0:
    # -n for n in [max(1, -hi), -lo].
    neg = naturals(max(1, -hi) if hi is not None else 1, -lo if lo is not None else None)
    if neg is not None:
      parts.append(cat(lit('-'), neg))
  return alt(*parts) if parts else None


def _bounds(s: dict) -> tuple[Fraction | None, bool, Fraction | None, bool]:
  """(lo, lo_exclusive, hi, hi_exclusive) from both drafts' keyword forms."""
  lo = hi = None
  lo_x = hi_x = False

  def tighter_lo(v, x):
    nonlocal lo, lo_x
    v = Fraction(v)
    if lo is None or v > lo or (v == lo and x):
      lo, lo_x = v, x

  def tighter_hi(v, x):
    nonlocal hi, hi_x
    v = Fraction(v)
    if hi is None or v < hi or (v == hi and x):
      hi, hi_x = v, x

  if 'minimum' in s:
    tighter_lo(s['minimum'], s.get('exclusiveMinimum') is True)
  if 'maximum' in s:
    tighter_hi(s['maximum'], s.get('exclusiveMaximum') is True)
  if not isinstance(s.get('exclusiveMinimum', False), bool):
    tighter_lo(s['exclusiveMinimum'], True)
  if not isinstance(s.get('exclusiveMaximum', False), bool):
    tighter_hi(s['exclusiveMaximum'], True)
  return lo, lo_x, hi, hi_x


def int_bounds(s: dict) -> tuple[int | None, int | None]:
  """The inclusive integer range the numeric keywords of `s` allow."""
  lo, lo_x, hi, hi_x = _bounds(s)
  ilo = None if lo is None else (math.floor(lo) + 1 if lo_x else math.ceil(lo))
  ihi = None if hi is None else (math.ceil(hi) - 1 if hi_x else math.floor(hi))
  return ilo, ihi


def _mod_dfa(k: int) -> automaton.Dfa:
  """Canonical integer texts divisible by k: remainder states over the digits."""
  byte_class = np.zeros(256, np.int32)
  byte_class[48:58] = np.arange(1, 11)
  byte_class[ord('-')] = 11
  # State k is the start (before any byte, '-' allowed); 0..k-1 remainders.
  delta = np.full((k + 1, 12), -1, np.int32)
  for r in range(k + 1):
    base = 0 if r == k else r
    delta[r, 1:11] = [(10 * base + d) % k for d in range(10)]
  delta[k, 11] = k
  accepting = np.zeros(k + 1, bool)
  accepting[0] = True
  order = np.array([k] + list(range(k)))
  inv = np.argsort(order)
  delta = np.where(delta >= 0, inv[np.maximum(delta, 0)], -1)[order].astype(np.int32)
  return automaton.Dfa(delta, byte_class, accepting[order])


def integer_node(s: dict, multiple: int | None, limits) -> Node | None:
  """Integers of `s`'s range (and multiples of `multiple`)."""
  lo, hi = int_bounds(s)
  node = integers(lo, hi)
  if node is None or not multiple or multiple == 1:
    return node
  from lattice.decode import dfa_ops  # pylint: disable=g-import-not-at-top
  try:
    dfa = dfa_ops.intersect(automaton.to_dfa(node, limits), _mod_dfa(multiple),
                            limits.max_states)
  except automaton.RegexError as e:
    if isinstance(e, automaton.LimitError):
      raise
    return None
  return automaton.embed(dfa)


def number_node(s: dict) -> Node | None:
  """Numbers of `s`'s range: the sound subset in the module docstring."""
  lo, lo_x, hi, hi_x = _bounds(s)
  if lo is None and hi is None:
    return NUMBER
  ints = integers(*int_bounds(s))
  # Fractional: I.f with [I, I+1] inside [lo, hi] (I >= 0), -I.f with [-I-1, -I].
  pos_lo = 0 if lo is None else max(0, math.ceil(lo))
  pos_hi = None if hi is None else math.floor(hi) - 1
  neg_lo = 0 if hi is None else max(0, math.ceil(-hi))
  neg_hi = None if lo is None else math.floor(-lo) - 1
  parts = [] if ints is None else [ints]
  pos = naturals(pos_lo, pos_hi) if pos_hi is None or pos_hi >= pos_lo else None
  if pos is not None:
    parts.append(cat(pos, _FRACTION))
  neg = naturals(neg_lo, neg_hi) if neg_hi is None or neg_hi >= neg_lo else None
  if neg is not None:
    parts.append(cat(lit('-'), neg, _FRACTION))
  return alt(*parts) if parts else None
