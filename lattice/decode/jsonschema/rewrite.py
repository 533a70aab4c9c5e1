"""Sound rewrites of keywords with no exact regular form: `if`, `contains`, `not`, ...

Each rewrite replaces a keyword by plain keywords whose instances are a subset of
the original's (over-restriction: the decoder writes fewer instances, never an
invalid one):

- `if`/`then`/`else`: instances of `if` and `then` together (an instance that
  satisfies `if` must satisfy `then`; `else` then never applies). Without `if`,
  `then`/`else` do nothing (2020-12, 10.2.2).
- `contains` (`minContains`/`maxContains`): every element satisfies `contains` as
  well as its `items`/`prefixItems` schema, with at least max(1, minContains) and at
  most maxContains elements.
- `dependentSchemas` and schema-valued `dependencies`: merged into the schema for
  names it requires; other names become array-valued dependencies nobody can meet,
  so they are never written (`containers.obj` leaves them out).
- `unevaluatedItems`: nothing when `items` is a schema (every element past the
  prefix is evaluated); otherwise it becomes `items` (draft 2020-12) /
  `additionalItems` (tuple form), which also applies it to elements a combinator
  evaluates: a subset.
- `not` of `true`/`false`, of `type`, of `required` (or `anyOf` of `required`s),
  of `enum`/`const` (values removed from this schema's own `enum`/`const`, or of a
  boolean/null type), of `pattern` (strings of printable ASCII, where every regex
  dialect reads the pattern alike, that it does not match: a DFA difference); a `not` schema with other keywords besides a `type` or
  `required` uses that one (failing it fails the whole); `not` of `allOf` uses
  the first member whose `not` is one of these and leaves something to write; any other `not` raises
  SchemaError.

Source of the keyword semantics: JSON Schema 2020-12 Core, sections 10.2.1-10.3.2
and 11 (unevaluatedItems), Validation 6.5.4 (dependentRequired); draft-07
`dependencies`.
"""

from __future__ import annotations

import json
from typing import Any

from lattice.decode.jsonschema.resolve import SchemaError, local_unevaluated_items, merge, ptr

KEYWORDS = ('if', 'then', 'else', 'contains', 'minContains', 'maxContains',
            'dependentSchemas', 'unevaluatedItems', 'not')
_TYPES = ('null', 'boolean', 'object', 'array', 'number', 'string', 'integer')
# A name no schema can require: a dependency on it is never met, so the name is
# never written unless required (`containers._deps` already treats it so).
NEVER = '\0never'
# Internal keyword: patterns a string must not match (`not: {pattern}`), compiled by
# `Compiler.string_dfa` as a DFA difference.
NOT_PATTERN = '\0notPattern'


def rewrite(comp: Any, s: dict, where: str) -> Any:
  """`s` without the KEYWORDS, as a subset schema (or False: no instance).

  Raises:
    SchemaError: a `not` of a form listed in the module docstring's complement.
  """
  for _ in range(16):  # A merged `then` or `not` may bring the keywords back.
    if not any(k in s for k in KEYWORDS) and not _schema_deps(s):
      return s
    s = _once(comp, s, where)
    if not isinstance(s, dict):
      return s
  raise SchemaError(where, 'if', 'nested too deeply')


def _schema_deps(s: dict) -> bool:
  deps = s.get('dependencies')
  return isinstance(deps, dict) and any(n in _required(s) and not isinstance(v, list)
                                        for n, v in deps.items())


def _required(s: dict) -> list:
  r = s.get('required', [])
  return r if isinstance(r, list) else []


def _once(comp: Any, s: dict, where: str) -> Any:
  s = dict(s)
  if 'if' in s:
    cond, then = s.pop('if'), s.pop('then', True)
    s.pop('else', None)
    # (A `then` or `if` with its own if/then/else brings them in: the next round
    # rewrites them; dropping that `then` here would write its `if` alone.)
    s = merge(merge(s, comp.deref(cond, ptr(where, 'if')), ptr(where, 'if')),
              comp.deref(then, ptr(where, 'then')), ptr(where, 'then'))
    if not isinstance(s, dict):
      return s
    # `merge` may hand back one of its arguments (the `if` or `then` schema itself
    # when the rest is empty): copied, as the steps below change `s` in place and a
    # schema object must never change (the compiler's memo keys hold it by id).
    s = dict(s)
  else:
    s.pop('then', None)
    s.pop('else', None)
  if 'contains' in s or 'minContains' in s or 'maxContains' in s:
    s = _contains(comp, s, where)
  if 'dependentSchemas' in s or 'dependencies' in s:
    s = _dependencies(comp, s, where)
    if not isinstance(s, dict):
      return s
  s = local_unevaluated_items(s, where)
  if 'not' in s:
    s = _not(comp, s, s.pop('not'), ptr(where, 'not'))
  return s


def _contains(comp: Any, s: dict, where: str) -> dict:
  c = s.pop('contains', None)
  lo, hi = s.pop('minContains', 1), s.pop('maxContains', None)
  if c is None:  # min/maxContains without contains do nothing.
    return s
  for k, v in (('minContains', lo), ('maxContains', hi)):
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
      raise SchemaError(where, k, f'expected a non-negative integer, got {v!r}')
  c = comp.deref(c, ptr(where, 'contains'))
  if lo == 0 and hi is None:
    return s  # Always satisfied.
  if lo == 0:
    raise SchemaError(where, 'maxContains', 'maxContains with minContains 0 is not '
                      'supported')
  items = s.get('items', True)
  if isinstance(items, list):
    s['items'] = [merge(i, c, ptr(where, 'contains')) for i in items]
    s['additionalItems'] = merge(s.get('additionalItems', True), c, ptr(where, 'contains'))
  else:
    s['items'] = merge(items, c, ptr(where, 'contains'))
    if 'prefixItems' in s:
      s['prefixItems'] = [merge(i, c, ptr(where, 'contains')) for i in s['prefixItems']]
  s['minItems'] = max(s.get('minItems', 0), lo)
  if hi is not None:
    s['maxItems'] = min(s.get('maxItems', hi), hi)
  return s


def _dependencies(comp: Any, s: dict, where: str) -> Any:
  """Schema dependencies of required names merged in; of the others: never written."""
  schemas = dict(s.pop('dependentSchemas', {}) or {})
  deps = dict(s.get('dependencies', {}) or {})
  for name, v in list(deps.items()):
    if not isinstance(v, list):
      schemas[name] = v
      del deps[name]
  required = set(_required(s))
  for name, dep in schemas.items():
    if name in required:
      s = merge(s, comp.deref(dep, ptr(where, 'dependentSchemas', name)),
                ptr(where, 'dependentSchemas', name))
      if not isinstance(s, dict):
        return s
    elif dep is not True and dep != {}:
      deps[name] = [*deps.get(name, []), NEVER]
  if deps:
    s['dependencies'] = deps
  else:
    s.pop('dependencies', None)
  return s


def _types(s: dict) -> list[str]:
  t = s.get('type', list(_TYPES))
  return [t] if isinstance(t, str) else list(t)


def _not(comp: Any, s: dict, n: Any, where: str) -> Any:
  n = comp.deref(n, where)
  if n is False or n is None:
    return s
  if n is True or n == {}:
    return False
  if not isinstance(n, dict):
    raise SchemaError(where, 'not', f'expected a schema, got {n!r}')
  n = {k: v for k, v in n.items() if k not in ('title', 'description', '$comment')}
  keys = set(n)
  # Failing one keyword of `n` is enough for `not` to hold, so a `type` or
  # `required` inside a larger `n` is used the same way (other keywords ignored).
  if keys != {'type'} and isinstance(n.get('required'), list) and n['required']:
    keys = {'required'}
  elif 'type' in keys:
    keys = {'type'}
  if keys == {'type'}:
    banned = set(_types(n))
    if 'number' in banned:
      banned.add('integer')
    if 'integer' in banned:  # Non-integer numbers are not written: drop number too.
      banned.add('number')
    left = [t for t in _types(s) if t not in banned]
    return {**s, 'type': left} if left else False
  if keys == {'required'} or keys == {'anyOf'} and all(
      isinstance(b, dict) and set(b) == {'required'} for b in n['anyOf']):
    groups = [n['required']] if keys == {'required'} else [b['required'] for b in n['anyOf']]
    if 'object' not in _types(s):
      return False  # `required` holds for every non-object: `not` fails.
    s = {**s, 'type': 'object'}
    have = set(_required(s))
    props = dict(s.get('properties', {}))
    for names in groups:  # Each group: leave out one name the schema does not require.
      free = [q for q in names if q not in have]
      if not free:
        return False
      props[free[0]] = False
    return {**s, 'properties': props}
  if keys <= {'enum', 'const', 'type'} and keys & {'enum', 'const'}:
    bad = [n['const']] if 'const' in n else n['enum']
    key = lambda v: json.dumps(v, sort_keys=True) if not isinstance(v, (int, float)) or \
        isinstance(v, bool) else repr(float(v))
    bad_keys = {key(v) for v in bad} if isinstance(bad, list) else None
    if bad_keys is None:
      raise SchemaError(where, 'enum', f'expected an array, got {bad!r}')
    if 'type' in n:  # Only values of these types are excluded.
      bad_keys = {key(v) for v in bad if _fits(v, _types(n))}
    if 'enum' in s or 'const' in s:
      vals = [s['const']] if 'const' in s else s['enum']
      rest = {k: v for k, v in s.items() if k not in ('enum', 'const')}
      return {**rest, 'enum': [v for v in vals if key(v) not in bad_keys]}
    # Without an enum here: only types with finitely many values can be enumerated.
    types = set(_types(s))
    if types <= {'null', 'boolean'}:
      vals = [v for t, vs in (('null', [None]), ('boolean', [True, False]))
              if t in types for v in vs]
      return {**s, 'enum': [v for v in vals if key(v) not in bad_keys]}
  if keys == {'pattern'} and isinstance(n['pattern'], str):
    # Only a string can fail a pattern (others satisfy it vacuously).
    if 'string' not in _types(s):
      return False
    return {**s, 'type': 'string',
            NOT_PATTERN: [*s.get(NOT_PATTERN, []), n['pattern']]}
  if keys == {'allOf'} and isinstance(n['allOf'], list):
    # Failing one member of allOf fails it: the first member whose `not` is
    # supported and leaves something to write.
    nothing = False
    for i, sub in enumerate(n['allOf']):
      try:
        out = _not(comp, s, sub, ptr(where, 'allOf', i))
      except SchemaError:
        continue
      if out is not False:
        return out
      nothing = True
    if nothing:
      return False
  raise SchemaError(where, 'not', f'not supported for {sorted(keys)} (supported: type, '
                    f'required, anyOf of required, enum/const, pattern, allOf of one of them)')


def _fits(v: Any, types: list[str]) -> bool:
  if v is None:
    return 'null' in types
  if isinstance(v, bool):
    return 'boolean' in types
  if isinstance(v, int) or isinstance(v, float) and v.is_integer():
    return 'integer' in types or 'number' in types
  if isinstance(v, float):
    return 'number' in types
  kinds = {str: 'string', list: 'array', dict: 'object'}
  return kinds.get(type(v)) in types
