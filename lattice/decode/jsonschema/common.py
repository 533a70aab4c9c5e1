"""Helpers shared by the JSON Schema compilers (scalars and containers)."""

from __future__ import annotations

import json
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
