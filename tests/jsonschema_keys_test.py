"""`jsonschema.common.TreeKeys` (the compiler's memo keys, built bottom-up): equal
keys exactly when the JSON texts are equal, the `$ref`s inside as a regex over the
text finds them, the encoder's errors; and no schema object changes in place."""

import copy
import json
import math
import random
import re

import pytest

from lattice.decode.jsonschema import common
from lattice.decode.jsonschema.compile import Compiler, Options

# (What `Compiler._memo_key` used before: the text, and `$ref`s found in it.)
_REF_RE = re.compile(r'"\$ref": "((?:[^"\\]|\\.)*)"')
_STRINGS = ['', 'a', 'b', '1', 'null', 'true', '$ref', '#/$defs/a', '#/definitions/x~1y',
            'é', '\u2028', 'a"b', 'back\\slash', '\x00', '{', '[']


def _scalar(rng):
  return rng.choice([None, True, False, 0, 1, -1, 1.0, -0.0, 0.0, 2.5, 10**20, 1e300,
                     rng.choice(_STRINGS)])


def _value(rng, depth):
  """A random JSON value; containers small so that equal ones recur."""
  r = rng.random()
  if depth <= 0 or r < 0.35:
    return _scalar(rng)
  if r < 0.55:
    return [_value(rng, depth - 1) for _ in range(rng.randrange(3))]
  out = {}
  for _ in range(rng.randrange(4)):
    name = rng.choice(_STRINGS)
    if rng.random() < 0.2:
      out['$ref'] = rng.choice(_STRINGS[6:9] + [3])
    out[name] = _value(rng, depth - 1)
  return out


def test_keys_equal_exactly_when_texts_equal():
  rng = random.Random(0)
  values = [_value(rng, 4) for _ in range(600)]
  values += [copy.deepcopy(v) for v in values[:200]]  # Equal, built apart.
  keys = common.TreeKeys()
  by_text, by_key = {}, {}
  for v in values:
    text, key = common.STRICT.encode(v), keys.key(v)
    assert by_text.setdefault(text, key) == key, text
    assert by_key.setdefault(key, text) == text, text
    assert keys.key(v) == key  # Again, from the ids it remembers.
  assert len(by_text) > 200  # (The pool is varied, not a handful of values.)


@pytest.mark.parametrize('a, b, same', [
    (1, 1.0, False), (True, 1, False), (False, 0, False), (None, 'null', False),
    ('1', 1, False), ({}, [], False), ([], (), True), ([1, [2]], (1, (2,)), True),
    ({'a': 1, 'b': 2}, {'b': 2, 'a': 1}, False),  # Member order is part of the text.
    ({1: 'x'}, {'1': 'x'}, True), ({True: 0, None: 1}, {'true': 0, 'null': 1}, True),
    ({1.5: 0}, {'1.5': 0}, True), (0.0, -0.0, False), ([{}], [{}], True),
    ({'a': [1]}, {'a': [1.0]}, False),
])
def test_keys_follow_the_encoder(a, b, same):
  keys = common.TreeKeys()
  assert (common.STRICT.encode(a) == common.STRICT.encode(b)) == same
  assert (keys.key(a) == keys.key(b)) == same


def test_refs_are_those_in_the_text():
  rng = random.Random(1)
  keys = common.TreeKeys()
  found = 0
  for _ in range(600):
    v = _value(rng, 4)
    want = {json.loads(f'"{m}"') for m in _REF_RE.findall(common.STRICT.encode(v))}
    assert keys.refs(v) == want
    found += bool(want)
  assert found > 50
  assert keys.refs({'enum': [{'$ref': '#/a'}], 'x': {'$ref': 1}}) == {'#/a'}


@pytest.mark.parametrize('value, error', [
    (math.nan, ValueError), ({'a': [math.inf]}, ValueError), ({'a': {1, 2}}, TypeError),
    ({(1, 2): 0}, TypeError), ({math.nan: 0}, ValueError), (object(), TypeError),
])
def test_errors_as_the_encoder(value, error):
  with pytest.raises(error):
    common.STRICT.encode(value)
  with pytest.raises(error):
    common.TreeKeys().key(value)


@pytest.mark.parametrize('schema', [
    # `if` alone: merged into an empty rest, `merge` hands the `if` schema back.
    {'if': {'type': 'array', 'contains': {'type': 'integer'}, 'maxContains': 2}},
    {'if': {'type': 'object', 'required': ['a'],
            'dependentSchemas': {'a': {'properties': {'b': {'const': 1}}}}}},
    {'then': {'minimum': 1}, 'if': {'type': 'integer'}},
    {'$defs': {'d': {'if': {'type': 'array', 'contains': {'const': 1}}}},
     'type': 'object', 'properties': {'p': {'$ref': '#/$defs/d'}, 'q': {'$ref': '#/$defs/d'}}},
])
def test_schema_objects_never_change(schema):
  before = copy.deepcopy(schema)
  comp = Compiler(schema, Options())
  assert comp.node(comp.root) is not None
  assert schema == before


def test_memo_shares_equal_subschemas():
  # Two equal definitions built apart, used at two places: compiled once.
  item = {'type': 'object', 'properties': {'x': {'type': 'string', 'maxLength': 3}}}
  schema = {'type': 'object', 'properties': {'a': item, 'b': copy.deepcopy(item)}}
  comp = Compiler(schema, Options())
  node = comp.node(comp.root)
  assert node is not None
  a, b = comp.node(schema['properties']['a']), comp.node(schema['properties']['b'])
  assert a is b
