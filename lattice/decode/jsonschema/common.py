"""Helpers shared by the JSON Schema compilers (scalars and containers)."""

from __future__ import annotations

import json
import math
from typing import Any

from lattice.decode import automaton
from lattice.decode.jsonschema.resolve import SchemaError

# Printable ASCII but '"' and '\\': what a generated object key may hold.
KEY_CHAR = automaton.byte_set((0x20, 0x7E)) & ~(1 << 0x22) & ~(1 << 0x5C)


# Encoders made once: `json.dumps` with options other than its defaults builds a
# new JSONEncoder on every call (the same text either way).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(',', ':'))
# `json.dumps(v, allow_nan=False)`: the text of a schema (raises ValueError for NaN).
STRICT = json.JSONEncoder(allow_nan=False)


def dumps(v: Any) -> str:
  """Compact JSON text of `v` (how a const or an enum value is written)."""
  return _COMPACT.encode(v)


def nonneg_int(s: dict, k: str, where: str, default: int | None = None) -> int | None:
  """`s[k]` as a non-negative integer (default when absent).

  Raises:
    SchemaError: naming `where` and `k`, for anything but a non-negative integer.
  """
  v = s.get(k, default)
  if v is None:
    return None
  if isinstance(v, float) and v.is_integer():
    v = int(v)
  if isinstance(v, bool) or not isinstance(v, int) or v < 0:
    raise SchemaError(where, k, f'expected a non-negative integer, got {v!r}')
  return v


class TreeKeys:
  """Interned keys of JSON values, built bottom-up: `key(x) == key(y)` exactly when
  `STRICT.encode(x) == STRICT.encode(y)`, at the cost of one pass over each object.

  The compiler's memo (`Compiler._memo_key`) keys a subschema by its JSON text;
  encoding the text anew for every subschema re-encodes each nested one once per
  level above it (quadratic in nesting depth). Here an object's key is an int
  interned from its children's keys (a string leaf is its own key, another scalar
  the 1-tuple of its JSON text), so each dict and list is walked once.

  Objects are remembered by `id` and held (so no id is reused while this lives):
  a dict or list must not change after its key is taken (the compiler never
  changes a schema object in place; `rewrite` and `merge` build new ones).

  Mirrors `json.JSONEncoder(allow_nan=False)` (its C encoder's type checks, in its
  order): tuples are lists; dict keys that are not strings are written as their
  JSON text (`True` -> 'true'); raises ValueError for NaN and infinities, TypeError
  for values JSON cannot hold, RecursionError past Python's recursion limit (the
  encoder: ValueError for a cycle; either way no key).
  """

  def __init__(self):
    self._ids: dict[tuple, int] = {}     # Signature -> interned key.
    self._refs: list[frozenset] = []     # Per interned key: `$ref` strings inside.
    self._seen: dict[int, tuple] = {}    # id(object) -> (object, its key).

  def key(self, x: Any) -> Any:
    """The key of JSON value `x` (an int for a dict or list). Raises as above."""
    if x is None:
      return _NULL
    if x is True:
      return _TRUE
    if x is False:
      return _FALSE
    if isinstance(x, str):
      return x
    if isinstance(x, int):
      return (int.__repr__(x),)
    if isinstance(x, float):
      return (_float_text(x),)
    got = self._seen.get(id(x))
    if got is not None:
      return got[1]
    refs = _NO_REFS
    key, all_refs = self.key, self._refs
    # (A string value, most leaves, is its own key: taken inline, not by a call.)
    if isinstance(x, (list, tuple)):
      sig = ['[']
      for v in x:
        k = v if v.__class__ is str else key(v)
        sig.append(k)
        if k.__class__ is int and all_refs[k]:
          refs = refs | all_refs[k]
    elif isinstance(x, dict):
      sig = ['{']
      for name, v in x.items():
        k = v if v.__class__ is str else key(v)
        sig.append(name if isinstance(name, str) else _key_text(name))
        sig.append(k)
        if k.__class__ is int and all_refs[k]:
          refs = refs | all_refs[k]
      ref = x.get('$ref')
      if isinstance(ref, str):
        refs = refs | {ref}
    else:
      raise TypeError(f'Object of type {type(x).__name__} is not JSON serializable')
    sig = tuple(sig)
    out = self._ids.get(sig)
    if out is None:
      out = self._ids[sig] = len(self._refs)
      self._refs.append(refs)
    self._seen[id(x)] = (x, out)
    return out

  def refs(self, x: Any) -> frozenset:
    """The `$ref` strings (members named `$ref` with a string value) anywhere in
    `x`, data keywords included. Raises as `key`."""
    k = self.key(x)
    return self._refs[k] if k.__class__ is int else _NO_REFS


_NULL, _TRUE, _FALSE = ('null',), ('true',), ('false',)
_NO_REFS = frozenset()


def _float_text(x: float) -> str:
  if not math.isfinite(x):
    raise ValueError('Out of range float values are not JSON compliant: ' + repr(x))
  return float.__repr__(x)


def _key_text(name: Any) -> str:
  """A dict key that is not a string, as the JSON encoder writes it."""
  if name is None:
    return 'null'
  if name is True:
    return 'true'
  if name is False:
    return 'false'
  if isinstance(name, int):
    return int.__repr__(name)
  if isinstance(name, float):
    return _float_text(name)
  raise TypeError(f'keys must be str, int, float, bool or None, not {type(name).__name__}')
