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
  else as raw keywords (a superset of what validates: `if`, `not` ignored).

  The raw form reads neither the reference stack nor rewrites: it is remembered
  per (s, base) objects for the compilation (`oneOf` checks every pair of
  branches, and again once narrowed: each branch was prepared ~2k times)."""
  if written:
    return _prep_uncached(comp, s, base, True)
  memo = comp.raw_branches
  key = (id(s), id(base))
  got = memo.get(key)
  if got is None:
    # (Holding s and base: their ids are not reused meanwhile.)
    got = memo[key] = (s, base, _prep_uncached(comp, s, base, False))
  return got[2]


def _prep_uncached(comp, s: Any, base: dict, written: bool) -> Any:
  if not written and comp.old_draft and isinstance(s, dict) and '$ref' in s:
    # Drafts 4-7 ignore a $ref's siblings: what validates is the target alone.
    s = {'$ref': s['$ref']}
  s = comp.deref(s, '', bounded=written)
  if isinstance(s, dict):
    s = strip(s)
    if 'allOf' in s:
      for sub in s['allOf']:
        s = merge({k: v for k, v in s.items() if k != 'allOf'},
                  comp.deref(sub, '', bounded=written), '')
  s = merge(base, s, '') if base else s
  if written and isinstance(s, dict):
    # As the compiler will write it: `if`/`then` or a dependentSchemas may add
    # members the raw schema does not declare.
    try:
      s = rewrite.rewrite(comp, s, '')
    except SchemaError:
      return True  # Unknown: analysed as any value (never proves exclusion).
  return s


def _types(s: Any, old_draft: bool) -> set[str]:
  """The JSON types `s` admits: its `type`, `const` or `enum` bound them even beside
  `anyOf`/`oneOf`/`$ref` (in conjunction with them), except beside a `$ref` in
  drafts 4-7, which ignore its siblings."""
  if not isinstance(s, dict) or ('$ref' in s and old_draft):
    return set(_ALL)
  if 'const' in s or 'enum' in s:
    vals = [s['const']] if 'const' in s else s['enum']
    return {_type_of(v) for v in vals} if isinstance(vals, list) else set(_ALL)
  if 'type' not in s:
    return set(_ALL)
  t = s['type']
  t = {t} if isinstance(t, str) else set(t)
  if 'number' in t:
    t.add('integer')
  return t


def admitted_types(comp, c: Any, base: dict) -> set[str]:
  """A superset of the JSON types of the values that validate against `c` & base."""
  return _types(_prep(comp, c, base, written=False), comp.old_draft)


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
  bd = comp.deref(b, '')
  if isinstance(bd, dict) and '$ref' in bd and comp.ref_blocked(bd['$ref']):
    # A reference at the recursion bound: the compiler writes nothing for it here
    # (nor deeper, where the stack only grows).
    return True
  b, c = _prep(comp, b, base, written=True), _prep(comp, c, base, written=False)
  if b is False or c is False:
    return True
  tb, tc = _types(b, comp.old_draft), _types(c, comp.old_draft)
  if 'number' in tb:
    tb.add('integer')
  if not tb & tc:
    return True
  vb, vc = _values(b), _values(c)
  if vb is not None and vc is not None:
    key = lambda v: json.dumps(v, sort_keys=True)
    if not {key(v) for v in vb} & {key(v) for v in vc}:
      return True
  if tb == {'object'} and isinstance(b, dict) and isinstance(c, dict) and _objects_exclude(
      comp, b, c, depth):
    return True
  if isinstance(b, dict) and not (isinstance(b.get('anyOf'), list) and b['anyOf']) and (
      isinstance(b.get('oneOf'), list) and b['oneOf']):
    key = 'oneOf'
  elif isinstance(b, dict) and isinstance(b.get('anyOf'), list) and b['anyOf']:
    key = 'anyOf'
  else:
    return False
  # b writes instances of its own keywords and one of its branches: every branch
  # (with b's other keywords, which every instance written meets) must exclude c.
  rest = {k: v for k, v in b.items() if k != key}
  try:
    return all(excludes(comp, sub, c, rest, depth + 1) for sub in b[key])
  except SchemaError:  # A branch that does not merge with the rest: unproven.
    return False


def _objects_exclude(comp, b: dict, c: dict, depth: int) -> bool:
  """b, c object schemas: some member b always writes fails c, b writes more
  members than c allows, or c requires one b never writes."""
  b_props, c_props = b.get('properties', {}), c.get('properties', {})
  c_max = c.get('maxProperties')
  if isinstance(c_max, int) and not isinstance(c_max, bool) and len(
      set(b.get('required', []))) > c_max:
    return True
  for p in b.get('required', []):
    if p in c_props and p in b_props and excludes(comp, b_props[p], c_props[p], {},
                                                  depth + 1):
      return True
    if p not in c_props and not c.get('patternProperties'):
      # The name is one of c's additional properties.
      extra = c.get('additionalProperties', True)
      if extra is False:
        return True
      if p in b_props and isinstance(extra, dict) and extra and excludes(
          comp, b_props[p], extra, {}, depth + 1):
        return True
  for q in c.get('required', []):
    # Declared false: never written (extra members never take a declared name, and
    # a branch's schema for it merges with false).
    if b_props.get(q, True) is False and q not in b.get('required', []):
      return True
  b_extra = bool(b.get('patternProperties')) or b.get('additionalProperties', True) \
      not in (False, True, {}) or (b.get('additionalProperties', True) is not False and (
          comp.opts.extra_properties or not b_props))
  # Branches of b's own anyOf/oneOf may write members its top level does not declare.
  if not b_extra and not b.get('anyOf') and not b.get('oneOf'):
    for q in c.get('required', []):
      if (q not in b_props or b_props[q] is False) and q not in b.get('required', []):
        return True
  return False
