"""A hand-written reference validator and seeded schema generators (the original subset).

The constrained decoder now compiles much more (`lattice.decode.jsonschema`; its
tests validate with the `jsonschema` package). This module keeps the small
reference `validate` for the subset below, which `lattice.agents.toolcall` uses
at run time without the `jsonschema` dependency, and the generators of that
subset for property tests and benchmarks. Subset keywords: `type` (object, string, integer, number, boolean, null, array,
or a list of them), `properties`, `required`, `additionalProperties` (false or
absent), `minLength` / `maxLength`, `items`, `minItems` / `maxItems`, `enum`,
`const`, `anyOf`; `title`, `description`, `format` and `$comment` are annotations.
Anything else raises `SchemaError`, so a schema is never silently half-enforced.

`validate` is the reference the automaton is tested against: it reads the schema
directly (no regexes), following JSON Schema 2020-12 for this subset.
`random_schema` / `random_instance` are seeded generators for property tests and
benchmarks.
"""

from __future__ import annotations

import json
import random
from typing import Any

_ANNOTATIONS = frozenset({'title', 'description', 'format', '$comment', '$schema'})
_KEYWORDS = {
    'object': {'properties', 'required', 'additionalProperties'},
    'string': {'minLength', 'maxLength'},
    'array': {'items', 'minItems', 'maxItems'},
    'integer': set(), 'number': set(), 'boolean': set(), 'null': set(),
}
TYPES = tuple(_KEYWORDS)


from lattice.decode.jsonschema.resolve import SchemaError  # pylint: disable=g-import-not-at-top,wrong-import-position


def check_supported(schema: Any, where: str = '$') -> None:
  """Raises SchemaError for keywords or values the compiler would not enforce."""
  if not isinstance(schema, dict):
    raise SchemaError(f'{where}: a schema must be an object, got {schema!r}')
  allowed = set(_ANNOTATIONS) | {'type', 'enum', 'const', 'anyOf'}
  types = schema.get('type')
  for t in ([types] if isinstance(types, str) else types or []):
    if t not in _KEYWORDS:
      raise SchemaError(f'{where}.type: {t!r} is not one of {", ".join(TYPES)}')
    allowed |= _KEYWORDS[t]
  extra = set(schema) - allowed
  if extra:
    raise SchemaError(f'{where}: unsupported keyword(s) {sorted(extra)} for type '
                      f'{types!r}')
  if schema.get('additionalProperties', False) is not False:
    raise SchemaError(f'{where}.additionalProperties: only false (or absent) is '
                      f'supported')
  if 'enum' in schema and not schema['enum']:
    raise SchemaError(f'{where}.enum: empty')
  if not {'type', 'enum', 'const', 'anyOf'} & set(schema):
    raise SchemaError(f'{where}: needs a type, enum, const or anyOf')
  props = schema.get('properties', {})
  for r in schema.get('required', []):
    if r not in props:
      raise SchemaError(f'{where}.required: {r!r} is not in properties')
  for name, sub in props.items():
    check_supported(sub, f'{where}.properties.{name}')
  if 'items' in schema:
    check_supported(schema['items'], f'{where}.items')
  for i, sub in enumerate(schema.get('anyOf', [])):
    check_supported(sub, f'{where}.anyOf[{i}]')


def _is_type(x: Any, t: str) -> bool:
  if t == 'integer':
    return (isinstance(x, int) and not isinstance(x, bool)) or (
        isinstance(x, float) and x.is_integer())
  if t == 'number':
    return isinstance(x, (int, float)) and not isinstance(x, bool)
  return isinstance(x, {'object': dict, 'string': str, 'array': list,
                        'boolean': bool, 'null': type(None)}[t])


def json_equal(a: Any, b: Any) -> bool:
  """JSON equality: 1 == 1.0 but True != 1."""
  if isinstance(a, bool) or isinstance(b, bool):
    return type(a) is type(b) and a == b
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
  if isinstance(a, list) and isinstance(b, list):
    return len(a) == len(b) and all(map(json_equal, a, b))
  return a == b


def errors(x: Any, schema: dict, where: str = '$') -> list[str]:
  """Every way `x` violates `schema` (empty when valid)."""
  out = []
  if 'anyOf' in schema and not any(not errors(x, s, where) for s in schema['anyOf']):
    out.append(f'{where}: matches none of anyOf')
  if 'enum' in schema and not any(json_equal(x, v) for v in schema['enum']):
    out.append(f'{where}: {x!r} not in enum')
  if 'const' in schema and not json_equal(x, schema['const']):
    out.append(f'{where}: {x!r} != const {schema["const"]!r}')
  types = schema.get('type')
  if types is None:
    return out
  types = [types] if isinstance(types, str) else types
  if not any(_is_type(x, t) for t in types):
    return out + [f'{where}: {type(x).__name__} is not {types}']
  if isinstance(x, str):
    if len(x) < schema.get('minLength', 0):
      out.append(f'{where}: shorter than minLength')
    if 'maxLength' in schema and len(x) > schema['maxLength']:
      out.append(f'{where}: longer than maxLength')
  if isinstance(x, list):
    if len(x) < schema.get('minItems', 0):
      out.append(f'{where}: fewer than minItems')
    if 'maxItems' in schema and len(x) > schema['maxItems']:
      out.append(f'{where}: more than maxItems')
    for i, item in enumerate(x):
      out += errors(item, schema.get('items', {}), f'{where}[{i}]')
  if isinstance(x, dict):
    props = schema.get('properties', {})
    out += [f'{where}: missing {r!r}' for r in schema.get('required', []) if r not in x]
    if schema.get('additionalProperties', True) is False:
      out += [f'{where}: unexpected {k!r}' for k in x if k not in props]
    for k, v in x.items():
      if k in props:
        out += errors(v, props[k], f'{where}.{k}')
  return out


def validate(x: Any, schema: dict) -> bool:
  return not errors(x, schema)


def parses_and_validates(text: str | bytes, schema: dict) -> bool:
  """Whether `text` is one JSON value (strict: no NaN) that satisfies `schema`."""
  try:
    value = json.loads(text, parse_constant=reject_constant)
  except ValueError:
    return False
  return validate(value, schema)


def reject_constant(name: str):
  raise ValueError(f'non-standard JSON constant {name}')


# Seeded generators for property tests and benchmarks.
_WORDS = ('id', 'name', 'city', 'count', 'unit', 'tags', 'when', 'ok', 'x', 'é')
_CHARS = 'abcxyz AZ09-_."\\/é€\n'


def random_schema(rng: random.Random, depth: int = 2) -> dict:
  """A random schema of the supported subset, nesting up to `depth` levels."""
  kinds = ['string', 'integer', 'number', 'boolean', 'enum', 'null']
  if depth > 0:
    kinds += ['object', 'object', 'array', 'anyOf']
  kind = rng.choice(kinds)
  if kind == 'string':
    s: dict = {'type': 'string'}
    if rng.random() < 0.5:
      s['maxLength'] = rng.randint(0, 6)
      s['minLength'] = rng.randint(0, s['maxLength'])
    return s
  if kind in ('integer', 'number', 'boolean', 'null'):
    return {'type': kind}
  if kind == 'enum':
    pool = ['a', 'b c', 'é', 1, 2.5, True, None, 'say "hi"']
    return {'enum': rng.sample(pool, rng.randint(1, 4))}
  if kind == 'object':
    names = rng.sample(_WORDS, rng.randint(0, 4))
    props = {n: random_schema(rng, depth - 1) for n in names}
    required = [n for n in names if rng.random() < 0.6]
    return {'type': 'object', 'properties': props, 'required': required,
            'additionalProperties': False}
  if kind == 'array':
    s = {'type': 'array', 'items': random_schema(rng, depth - 1)}
    if rng.random() < 0.5:
      s['maxItems'] = rng.randint(0, 3)
      s['minItems'] = rng.randint(0, s['maxItems'])
    return s
  return {'anyOf': [random_schema(rng, depth - 1) for _ in range(rng.randint(1, 3))]}


def random_instance(schema: dict, rng: random.Random) -> Any:
  """A random valid instance of `schema` (optional properties coin-flipped)."""
  if 'anyOf' in schema:
    return random_instance(rng.choice(schema['anyOf']), rng)
  if 'enum' in schema:
    return rng.choice(schema['enum'])
  if 'const' in schema:
    return schema['const']
  t = schema['type']
  t = rng.choice(t) if isinstance(t, list) else t
  if t == 'string':
    lo = schema.get('minLength', 0)
    n = rng.randint(lo, schema.get('maxLength', lo + 5))
    return ''.join(rng.choice(_CHARS) for _ in range(n))
  if t == 'integer':
    return rng.randint(-1000, 1000)
  if t == 'number':
    return rng.choice([rng.randint(-50, 50), round(rng.uniform(-100, 100), 3), 1e-7])
  if t == 'boolean':
    return rng.random() < 0.5
  if t == 'null':
    return None
  if t == 'array':
    lo = schema.get('minItems', 0)
    n = rng.randint(lo, schema.get('maxItems', lo + 3))
    return [random_instance(schema['items'], rng) for _ in range(n)]
  required = set(schema.get('required', []))
  return {k: random_instance(s, rng) for k, s in schema.get('properties', {}).items()
          if k in required or rng.random() < 0.5}


def canonical(x: Any, schema: dict) -> str:
  """`x` as the decoder writes it: compact, object keys in schema order."""
  branch = _pick(x, schema)
  if isinstance(x, dict):
    props = branch.get('properties', {})
    order = [k for k in props if k in x] + [k for k in x if k not in props]
    return '{' + ','.join(json.dumps(k, ensure_ascii=False) + ':' +
                          canonical(x[k], props.get(k, {})) for k in order) + '}'
  if isinstance(x, list):
    return '[' + ','.join(canonical(v, branch.get('items', {})) for v in x) + ']'
  return json.dumps(x, ensure_ascii=False)


def _pick(x: Any, schema: dict) -> dict:
  """The first anyOf branch `x` validates against (the schema itself without anyOf)."""
  for sub in schema.get('anyOf', []):
    if validate(x, sub):
      return _pick(x, sub)
  return schema
