"""`oneOf` soundness: does every instance one branch writes fail another branch?

Writing branch b of `oneOf` is sound only when nothing it writes also validates
against another branch c. `excludes` proves that from the schemas alone (it is
allowed to answer False when unsure; the branch is then left out): b's texts and
c's accepted values differ in JSON type, or in `const`/`enum`, or b always writes a
property that c forbids (its value excluded by c's property schema, recursively,
or c disallows the name), or c requires a name b never writes.
"""

from __future__ import annotations

import json
from typing import Any

from lattice.decode.jsonschema import rewrite
from lattice.decode.jsonschema.resolve import SchemaError, merge, strip

_ALL = {'null', 'boolean', 'object', 'array', 'number', 'string', 'integer'}


def _prep(comp, s: Any, base: dict, written: bool) -> Any:
  """`s` & base; `written`: as the compiler writes it (rewrites applied, a subset),
  else as raw keywords (a superset of what validates: `if`, `not` ignored)."""
  s = comp.deref(s, '')
  if isinstance(s, dict):
    s = strip(s)
    if 'allOf' in s:
      for sub in s['allOf']:
        s = merge({k: v for k, v in s.items() if k != 'allOf'}, comp.deref(sub, ''), '')
  s = merge(base, s, '') if base else s
  if written and isinstance(s, dict):
    # As the compiler will write it: `if`/`then` or a dependentSchemas may add
    # members the raw schema does not declare.
    try:
      s = rewrite.rewrite(comp, s, '')
    except SchemaError:
      return True  # Unknown: analysed as any value (never proves exclusion).
  return s


def _types(s: Any) -> set[str]:
  if not isinstance(s, dict) or '$ref' in s or 'anyOf' in s or 'oneOf' in s:
    return set(_ALL)
  if 'const' in s or 'enum' in s:
    vals = [s['const']] if 'const' in s else s['enum']
    return {_type_of(v) for v in vals} if isinstance(vals, list) else set(_ALL)
  t = s.get('type', list(_ALL))
  t = {t} if isinstance(t, str) else set(t)
  if 'number' in t:
    t.add('integer')
  return t


def _type_of(v: Any) -> str:
  if v is None:
    return 'null'
  if isinstance(v, bool):
    return 'boolean'
  if isinstance(v, (int, float)):
    return 'number'
  return {dict: 'object', list: 'array', str: 'string'}.get(type(v), 'string')


def _values(s: Any) -> list | None:
  if isinstance(s, dict) and ('const' in s or 'enum' in s):
    vals = [s['const']] if 'const' in s else s['enum']
    return vals if isinstance(vals, list) else None
  return None


def excludes(comp, b: Any, c: Any, base: dict, depth: int = 0) -> bool:
  """True only if no text the compiler writes for `b` (& base) validates against `c`."""
  if depth > 4:
    return False
  b, c = _prep(comp, b, base, written=True), _prep(comp, c, base, written=False)
  if b is False or c is False:
    return True
  tb, tc = _types(b), _types(c)
  if 'number' in tb:
    tb.add('integer')
  if not tb & tc:
    return True
  vb, vc = _values(b), _values(c)
  if vb is not None and vc is not None:
    key = lambda v: json.dumps(v, sort_keys=True)
    if not {key(v) for v in vb} & {key(v) for v in vc}:
      return True
  if tb != {'object'} or not isinstance(b, dict) or not isinstance(c, dict):
    return False
  b_props, c_props = b.get('properties', {}), c.get('properties', {})
  for p in b.get('required', []):
    if p in c_props and p in b_props and excludes(comp, b_props[p], c_props[p], {},
                                                  depth + 1):
      return True
    if (c.get('additionalProperties', True) is False and p not in c_props
        and not c.get('patternProperties')):
      return True
  b_extra = bool(b.get('patternProperties')) or b.get('additionalProperties', True) \
      not in (False, True, {}) or (b.get('additionalProperties', True) is not False and (
          comp.opts.extra_properties or not b_props))
  if not b_extra:
    for q in c.get('required', []):
      if (q not in b_props or b_props[q] is False) and q not in b.get('required', []):
        return True
  return False
