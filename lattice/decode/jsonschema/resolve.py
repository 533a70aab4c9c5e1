"""Schema preprocessing: annotations dropped, local `$ref` inlined, `allOf` merged.

`SchemaError` is the one error every unsupported or malformed schema raises; it
names the keyword and its JSON pointer (RFC 6901), e.g.
`/properties/a/minLength: minLength: expected a non-negative integer, got 1.5`.
The server answers it with a 400.
"""

from __future__ import annotations

import json
from typing import Any

# Keywords that constrain nothing the decoder writes (JSON Schema 2020-12 meta-data,
# core identifiers, content annotations, OpenAPI/vendor annotations).
ANNOTATIONS = frozenset({
    'title', 'description', '$id', 'id', '$schema', 'examples', 'example', 'default',
    'self', '$comment', 'readOnly', 'writeOnly', 'deprecated', '$anchor',
    'contentMediaType', 'contentEncoding', 'contentSchema', '$vocabulary',
    'discriminator', 'xml', 'externalDocs', 'markdownDescription', 'deprecationMessage',
})
# Every keyword of drafts 4 to 2020-12 that asserts something; any other key is an
# unknown keyword, which the specification treats as an annotation.
ASSERTIONS = frozenset({
    'type', 'enum', 'const', 'multipleOf', 'maximum', 'exclusiveMaximum', 'minimum',
    'exclusiveMinimum', 'then', 'else', 'maxLength', 'minLength', 'pattern', 'format', 'maxItems',
    'minItems', 'uniqueItems', 'maxContains', 'minContains', 'contains', 'maxProperties',
    'minProperties', 'required', 'dependentRequired', 'dependencies', 'dependentSchemas',
    'properties', 'patternProperties', 'additionalProperties', 'propertyNames',
    'unevaluatedProperties', 'unevaluatedItems', 'items', 'prefixItems',
    'additionalItems', 'allOf', 'anyOf', 'oneOf', 'not', 'if', '$ref', '$defs',
    'definitions', '$dynamicRef', '$dynamicAnchor', '$recursiveRef', '$recursiveAnchor',
    '\0notPattern',  # Internal (`rewrite.NOT_PATTERN`): patterns a string must not match.
})


class SchemaError(ValueError):
  """A schema the compiler cannot enforce exactly or that is malformed.

  `keyword` and `pointer` (JSON pointer of the schema holding it) name the place.
  """

  def __init__(self, pointer: str, keyword: str, message: str):
    self.pointer, self.keyword = pointer or '/', keyword
    super().__init__(f'{self.pointer}: {keyword}: {message}')


def ptr(base: str, *parts: Any) -> str:
  for p in parts:
    base += '/' + str(p).replace('~', '~0').replace('/', '~1')
  return base


def resolve_pointer(root: Any, ref: str, where: str) -> Any:
  """The subschema `ref` ('#', '#/a/b') names inside `root`."""
  if not isinstance(ref, str) or not ref.startswith('#'):
    raise SchemaError(where, '$ref', f'only local references (#/...) are supported, '
                      f'got {ref!r}')
  node = root
  path = ref[1:]
  if path and not path.startswith('/'):
    raise SchemaError(where, '$ref', f'anchors are not supported, got {ref!r}')
  for raw in path.split('/')[1:] if path else []:
    key = raw.replace('~1', '/').replace('~0', '~')
    from urllib.parse import unquote  # pylint: disable=g-import-not-at-top
    key = unquote(key)
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
      node = node[int(key)]
    elif isinstance(node, dict) and key in node:
      node = node[key]
    else:
      raise SchemaError(where, '$ref', f'{ref!r} does not resolve')
  return node


def strip(schema: dict) -> dict:
  """`schema` without annotations and unknown keywords."""
  return {k: v for k, v in schema.items() if k in ASSERTIONS}


def merge(a: Any, b: Any, where: str) -> Any:
  """One schema that means `a` and `b` both hold (allOf), keyword by keyword.

  Subschema keywords merge recursively (as allOf); bounds take the tighter side;
  `required` unites; `enum`/`const`/`type` intersect; `pattern` and `format` pile up
  into lists that the string compiler intersects; two different `$ref`s, `if`s,
  `not`s or `oneOf`s keep b's in an allOf member; two different `const`s give
  false. Raises SchemaError when a pair of keywords has no exact merge (e.g. two
  different `multipleOf`).
  """
  if a is True or a == {}:
    return b
  if b is True or b == {}:
    return a
  if a is False or b is False:
    return False
  if not isinstance(a, dict) or not isinstance(b, dict):
    raise SchemaError(where, 'allOf', f'expected schemas, got {a!r} and {b!r}')
  # unevaluatedItems sees only its own schema's evaluations, never a cousin's: fixed
  # to items before merging.
  a, b = local_unevaluated_items(a, where), local_unevaluated_items(b, where)
  # Two different `$ref`s, or two `if`s with their `then`/`else`: b's is kept whole
  # in an allOf member (the same conjunction), compiled after a's.
  moved = []
  if '$ref' in a and '$ref' in b and not _same(a['$ref'], b['$ref']):
    moved.append({'$ref': b['$ref']})
    b = {k: v for k, v in b.items() if k != '$ref'}
  if 'if' in a and 'if' in b and not all(_same(a.get(k), b.get(k))
                                         for k in ('if', 'then', 'else')):
    moved.append({k: b[k] for k in ('if', 'then', 'else') if k in b})
    b = {k: v for k, v in b.items() if k not in ('if', 'then', 'else')}
  for k in ('not', 'oneOf'):  # Two different `not`s (`oneOf`s): b's in an allOf member.
    if k in a and k in b and not _same(a[k], b[k]):
      moved.append({k: b[k]})
      b = {kk: v for kk, v in b.items() if kk != k}
  if moved:
    b = {**b, 'allOf': [*b.get('allOf', []), *moved]}
  out = dict(a)
  for k, v in b.items():
    if k not in out:
      out[k] = v
      continue
    u = out[k]
    if k not in ASSERTIONS:
      continue  # Annotations and unknown keywords: nothing to reconcile.
    if k in ('minimum', 'minLength', 'minItems', 'minProperties', 'exclusiveMinimum') \
        and not isinstance(u, bool) and not isinstance(v, bool):
      out[k] = max(u, v)
    elif k in ('maximum', 'maxLength', 'maxItems', 'maxProperties', 'exclusiveMaximum') \
        and not isinstance(u, bool) and not isinstance(v, bool):
      out[k] = min(u, v)
    elif k == 'required':
      out[k] = list(dict.fromkeys([*u, *v]))
    elif k == 'type':
      tu = {u} if isinstance(u, str) else set(u)
      tv = {v} if isinstance(v, str) else set(v)
      both = (tu & tv) | ({'integer'} if ('number' in tu and 'integer' in tv) or
                          ('integer' in tu and 'number' in tv) else set())
      out[k] = sorted(both)
    elif k in ('properties', 'patternProperties', '$defs', 'definitions'):
      merged = dict(u)
      for name, sub in v.items():
        merged[name] = merge(merged[name], sub, ptr(where, k, name)) if name in merged \
            else sub
      out[k] = merged
    elif k in ('additionalProperties', 'items', 'propertyNames') and \
        isinstance(u, (dict, bool)) and isinstance(v, (dict, bool)):
      out[k] = merge(u, v, ptr(where, k))
    elif k == 'prefixItems':
      continue  # Below, with `items`.
    elif k in ('pattern', 'format', '\0notPattern'):
      out[k] = [*(u if isinstance(u, list) else [u]), *(v if isinstance(v, list) else [v])]
    elif k == 'allOf':
      out[k] = [*u, *v]
    elif k == 'enum':
      out[k] = [x for x in u if any(_same(x, y) for y in v)]
    elif k == 'anyOf':
      out[k] = [{'allOf': [x, y]} for x in u for y in v]
    elif _same(u, v):
      continue
    elif k == 'const':
      if not json_equal(u, v):
        return False  # No instance equals two different values.
    else:
      raise SchemaError(where, k, 'allOf: two different values cannot be merged')
  _merge_positions(a, b, out, where)
  _merge_other_properties(a, b, out, where)
  return out


def local_unevaluated_items(s: dict, where: str) -> dict:
  """`s` with `unevaluatedItems` turned into `items` (2020-12) / `additionalItems`
  (tuple `items`), applied to every element past `s`'s own prefix. Elements that
  `s`'s in-place applicators evaluate get it too: a subset of the instances (sound).
  Nothing to do when `items` is a schema: every element past the prefix is evaluated.
  """
  if 'unevaluatedItems' not in s:
    return s
  s = dict(s)
  extra = s.pop('unevaluatedItems')
  items = s.get('items')
  if isinstance(items, list):
    s['additionalItems'] = merge(s.get('additionalItems', True), extra,
                                 ptr(where, 'unevaluatedItems'))
  elif items is None:
    s['items'] = extra
  return s


def _at(s: dict, i: int) -> Any:
  """The schema an array element at position i must satisfy under `s`."""
  prefix = s.get('prefixItems', s['items'] if isinstance(s.get('items'), list) else [])
  if i < len(prefix):
    return prefix[i]
  if isinstance(s.get('items'), list):
    return s.get('additionalItems', True)
  return s.get('items', True)


def _merge_positions(a: dict, b: dict, out: dict, where: str) -> None:
  """prefixItems of either side meet the other's schema at the same position."""
  n = max(len(a.get('prefixItems', [])), len(b.get('prefixItems', [])))
  if n:
    out['prefixItems'] = [merge(_at(a, i), _at(b, i), ptr(where, 'prefixItems', i))
                          for i in range(n)]


def _merge_other_properties(a: dict, b: dict, out: dict, where: str) -> None:
  """A property one side declares is an additional property of the other side."""
  import re  # pylint: disable=g-import-not-at-top
  props = dict(out.get('properties', {}))
  for side in (a, b):
    extra = merge(side.get('additionalProperties', True),
                  side.get('unevaluatedProperties', True), where)
    if extra is True or extra == {}:
      continue
    for name in list(props):
      if name in side.get('properties', {}):
        continue
      try:
        by_pattern = any(re.search(p, name) for p in side.get('patternProperties', {}))
      except re.error:
        by_pattern = False
      if not by_pattern:
        props[name] = merge(props[name], extra, ptr(where, 'properties', name))
  if props:
    out['properties'] = props


def json_equal(x: Any, y: Any) -> bool:
  """JSON Schema equality (2020-12 Validation 4.2.2): numbers by value (1 == 1.0),
  booleans never numbers, arrays and objects member-wise."""
  num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  if num(x) and num(y):
    return x == y
  if isinstance(x, list) and isinstance(y, list):
    return len(x) == len(y) and all(json_equal(p, q) for p, q in zip(x, y))
  if isinstance(x, dict) and isinstance(y, dict):
    return x.keys() == y.keys() and all(json_equal(x[k], y[k]) for k in x)
  return type(x) is type(y) and x == y


# `json.dumps(v, sort_keys=True)`, its encoder made once (dumps builds one per call).
_SORTED = json.JSONEncoder(sort_keys=True)


def _same(x: Any, y: Any) -> bool:
  return _SORTED.encode(x) == _SORTED.encode(y) and (
      type(x) is type(y) or not isinstance(x, bool) and not isinstance(y, bool))


# Keywords whose value is a map of subschemas / one subschema / a list of them, and
# keywords whose value is data (never a schema, so never rewritten).
_SCHEMA_MAPS = ('properties', 'patternProperties', '$defs', 'definitions',
                'dependentSchemas', 'dependencies')
_SCHEMA_ONE = ('items', 'additionalProperties', 'additionalItems', 'unevaluatedProperties',
               'unevaluatedItems', 'contains', 'propertyNames', 'if', 'then', 'else', 'not')
_SCHEMA_LISTS = ('allOf', 'anyOf', 'oneOf', 'prefixItems', 'items')
_DATA = ('enum', 'const', 'default', 'examples', 'example')
_OLD_DRAFTS = ('draft-03', 'draft-04', 'draft-06', 'draft-07')


def rebase_refs(root: Any) -> Any:
  """`root` with every local `$ref` made relative to the document root.

  A subschema with its own `$id` (draft 4: `id`; not a bare `#fragment`) starts a
  new schema resource, and a `#/...` reference inside it names a place in that
  resource, not in the document (JSON Schema 2020-12 core §8.2.1, §9.2). Such a
  reference is rewritten to `#<resource pointer>/...`, so `resolve_pointer` on the
  root finds what a validator finds. As in the `referencing` library that
  `jsonschema` uses, `$id` opens a resource only at a subschema position (under
  `properties`, `items`, `$defs`, ...), and drafts 4-7 ignore an `$id` beside a
  `$ref`. References under data keywords (`enum`, `const`, `default`, `examples`)
  are data and kept. Returns a new document, or `root` itself when no object below
  the root has an identifier that could open a resource (nothing to rebase: the
  walk below would copy it unchanged); `root` is not changed.
  """
  dialect = root.get('$schema', '') if isinstance(root, dict) else ''
  dialect = dialect if isinstance(dialect, str) else ''
  old = any(d in dialect for d in _OLD_DRAFTS)
  id_key = 'id' if ('draft-03' in dialect or 'draft-04' in dialect) else '$id'
  if not _may_open_resource(root, id_key):
    return root

  def walk(x: Any, base: str, where: str, schema_pos: bool) -> Any:
    if isinstance(x, list):
      return [walk(v, base, ptr(where, i), False) for i, v in enumerate(x)]
    if not isinstance(x, dict):
      return x
    ident = x.get(id_key)
    if (schema_pos and where and isinstance(ident, str) and not ident.startswith('#')
        and not (old and '$ref' in x)):
      base = where
    out = {}
    for k, v in x.items():
      at = ptr(where, k)
      if k == '$ref' and isinstance(v, str) and base and v[:1] == '#' and v[1:2] in ('', '/'):
        out[k] = '#' + base + v[1:]
      elif k in _DATA:
        out[k] = v
      elif k in _SCHEMA_MAPS and isinstance(v, dict):
        out[k] = {n: walk(s, base, ptr(at, n), isinstance(s, dict)) for n, s in v.items()}
      elif k in _SCHEMA_LISTS and isinstance(v, list):
        out[k] = [walk(s, base, ptr(at, i), True) for i, s in enumerate(v)]
      elif k in _SCHEMA_ONE and isinstance(v, dict):
        out[k] = walk(v, base, at, True)
      else:
        out[k] = walk(v, base, at, False)
    return out

  return walk(root, '', '', True)


def _may_open_resource(root: Any, id_key: str) -> bool:
  """Whether some object below `root` has a string `id_key` not starting with '#'
  (every place `rebase_refs` may start a resource, and more: no paths built)."""
  todo = list(root.values()) if isinstance(root, dict) else (
      list(root) if isinstance(root, list) else [])
  while todo:
    x = todo.pop()
    if isinstance(x, dict):
      ident = x.get(id_key)
      if isinstance(ident, str) and not ident.startswith('#'):
        return True
      todo.extend(x.values())
    elif isinstance(x, list):
      todo.extend(x)
  return False
