"""JSON Schema keyword groups: soundness (random walks validate with `jsonschema`),
completeness on hand-written instances, clear errors, linear compile size.

Valid instances are written as the decoder writes them (compact, members in schema
order); invalid ones must be rejected whatever their form.
"""

import json
import random

import jsonschema
import numpy as np
import pytest

from lattice.data import tokenizer as tok_lib
from lattice.decode import automaton, constraints

# (group, schema, valid texts, invalid texts)
GROUPS = [
    ('integer bounds', {'type': 'integer', 'minimum': -17, 'maximum': 1234},
     ['-17', '0', '9', '1234', '-5', '999'], ['-18', '1235', '01', '-0', '1.5', '12345']),
    ('exclusive bounds', {'type': 'integer', 'exclusiveMinimum': 3, 'exclusiveMaximum': 100},
     ['4', '99', '50'], ['3', '100', '0']),
    ('draft4 exclusive', {'type': 'integer', 'minimum': 3, 'exclusiveMinimum': True},
     ['4', '400000'], ['3', '2']),
    ('number bounds', {'type': 'number', 'minimum': -1.5, 'maximum': 2},
     ['0', '1.25', '-1', '2', '-0.5'], ['2.5', '-2', '3', '1e5']),
    ('multipleOf', {'type': 'integer', 'multipleOf': 7, 'minimum': 0, 'maximum': 100},
     ['0', '7', '98'], ['8', '105', '-7']),
    ('pattern', {'type': 'string', 'pattern': '^[a-z]+-\\d{2}$'},
     ['"ab-12"', '"x-00"'], ['"ab-1"', '"AB-12"', '"ab-123"']),
    ('pattern search', {'type': 'string', 'pattern': 'cat'},
     ['"cat"', '"a cat!"', '"concatenate"'], ['"dog"', '"ca t"']),
    ('pattern in one group', {'type': 'string', 'pattern': '(^[a-z]+( [a-z]+){0,2}$)'},
     ['"ab"', '"a bc d"'], ['"a b c d"', '"ab "', '"1"']),
    ('pattern + length', {'type': 'string', 'pattern': '^a', 'maxLength': 3},
     ['"a"', '"abc"'], ['"abcd"', '"ba"']),
    # Repetitions capped to fit maxLength (no regex x length product): small, sound.
    ('format + long maxLength', {'type': 'string', 'format': 'email', 'maxLength': 1000},
     ['"a@example.com"'], ['"a"', '"a@b@c"']),
    ('multipleOf 0.01', {'type': 'number', 'multipleOf': 0.01, 'maximum': 5},
     ['5', '-3', '0'], ['6', '"5"']),
    ('minProperties, no members', {'type': 'object', 'minProperties': 1},
     ['{"a":1}', '{"a":1,"b":[]}'], ['{}']),
    ('string length', {'type': 'string', 'minLength': 2, 'maxLength': 3},
     ['"ab"', '"a\\nc"', '"éé"'], ['"a"', '"abcd"', '"\\u0061b"']),
    ('long maxLength', {'type': 'string', 'maxLength': 40},
     ['""', '"' + 'x' * 40 + '"', '"' + 'é' * 40 + '"'], ['"' + 'x' * 41 + '"']),
    ('format date-time', {'type': 'string', 'format': 'date-time'},
     ['"2024-02-28T13:45:00Z"', '"1999-12-31T23:59:59.5+05:30"'],
     ['"2024-02-30T13:45:00Z"', '"2024-01-01"', '"x"']),
    ('format date', {'type': 'string', 'format': 'date'}, ['"2024-04-30"'],
     ['"2024-04-31"', '"24-04-30"']),
    ('format time', {'type': 'string', 'format': 'time'}, ['"10:20:30Z"'], ['"25:00:00Z"']),
    ('format email', {'type': 'string', 'format': 'email'}, ['"a.b@example.com"'],
     ['"a.b"', '"@x.com"']),
    ('format uuid', {'type': 'string', 'format': 'uuid'},
     ['"123e4567-e89b-12d3-a456-426614174000"'], ['"123e4567e89b12d3a456426614174000"']),
    ('format uri', {'type': 'string', 'format': 'uri'}, ['"https://example.com/a/b"'],
     ['"example"', '"//x"']),
    ('format ipv4', {'type': 'string', 'format': 'ipv4'}, ['"192.168.0.1"'],
     ['"256.1.1.1"', '"01.1.1.1"']),
    ('format ipv6', {'type': 'string', 'format': 'ipv6'}, ['"2001:db8:0:0:0:0:0:1"'],
     ['"2001:db8"', '"g::1"']),
    ('format color', {'type': 'string', 'format': 'color'}, ['"#a0B1c2"', '"#abc"', '"navy"'],
     ['"zz"', '"#12345"']),
    ('$ref/$defs', {'$defs': {'pt': {'type': 'object', 'properties': {
        'x': {'type': 'integer'}}, 'required': ['x'], 'additionalProperties': False}},
        'type': 'array', 'items': {'$ref': '#/$defs/pt'}},
     ['[{"x":1},{"x":2}]', '[]'], ['[{"y":1}]', '[{"x":"1"}]']),
    ('definitions', {'definitions': {'s': {'type': 'string', 'maxLength': 2}},
                     '$ref': '#/definitions/s'}, ['"ab"'], ['"abc"', '1']),
    ('recursive $ref', {'$defs': {'n': {'type': 'object', 'properties': {
        'v': {'type': 'integer'}, 'next': {'$ref': '#/$defs/n'}}, 'required': ['v'],
        'additionalProperties': False}}, '$ref': '#/$defs/n'},
     ['{"v":1}', '{"v":1,"next":{"v":2,"next":{"v":3}}}'], ['{"next":{"v":2}}', '{}']),
    ('allOf', {'allOf': [{'type': 'object', 'properties': {'a': {'type': 'integer'}},
                          'required': ['a']},
                         {'properties': {'b': {'type': 'string'}}, 'required': ['b']}],
               'unevaluatedProperties': False},
     ['{"a":1,"b":"x"}'], ['{"a":1}', '{"b":"x"}']),
    # Two $refs / two ifs under one allOf: the second kept whole in an allOf member.
    ('allOf of two $refs and two ifs', {
        '$defs': {'A': {'type': 'object', 'properties': {'a': {'type': 'integer'}},
                        'required': ['a']},
                  'B': {'properties': {'b': {'type': 'string'}}, 'required': ['b']}},
        'allOf': [{'$ref': '#/$defs/A', 'if': {'required': ['a']},
                   'then': {'properties': {'a': {'maximum': 5}}}},
                  {'$ref': '#/$defs/B', 'if': {'required': ['b']},
                   'then': {'properties': {'b': {'maxLength': 2}}}}]},
     ['{"a":1,"b":"x"}', '{"a":5,"b":"yz"}'], ['{"a":6,"b":"x"}', '{"a":1,"b":"xyz"}',
                                              '{"a":1}']),
    ('anyOf', {'anyOf': [{'type': 'integer'}, {'type': 'string', 'maxLength': 1}]},
     ['5', '"a"'], ['"ab"', 'null']),
    ('oneOf', {'oneOf': [{'type': 'integer'}, {'type': 'boolean'}]}, ['3', 'true'],
     ['"x"']),
    ('oneOf overlap', {'oneOf': [{'type': 'object', 'properties': {'k': {'const': 'a'},
                                                                   'v': {'type': 'integer'}},
                                  'required': ['k', 'v']},
                                 {'type': 'object', 'properties': {'k': {'const': 'b'}},
                                  'required': ['k']}]},
     ['{"k":"a","v":1}', '{"k":"b"}'], ['{"k":"c"}']),
    ('oneOf by required', {'type': 'object', 'properties': {
        'side': {'type': 'integer'}, 'radius': {'type': 'integer'}},
        'oneOf': [{'required': ['side']}, {'required': ['radius']}]},
     ['{"side":1}', '{"radius":2}'], ['{"side":1,"radius":2}', '{}']),
    ('prefixItems', {'type': 'array', 'prefixItems': [{'type': 'string'}, {'type': 'integer'}],
                     'items': False, 'minItems': 1},
     ['["a"]', '["a",1]'], ['[]', '[1]', '["a",1,2]']),
    ('items + counts', {'type': 'array', 'items': {'type': 'boolean'}, 'minItems': 2,
                        'maxItems': 3},
     ['[true,false]', '[true,true,true]'], ['[true]', '[true,true,true,true]']),
    ('additionalProperties schema', {'type': 'object', 'properties': {'id': {'type': 'integer'}},
                                     'required': ['id'],
                                     'additionalProperties': {'type': 'string'}},
     ['{"id":1}', '{"id":1,"a":"x","b c":"y"}'], ['{"id":1,"a":2}', '{"a":"x"}']),
    ('patternProperties', {'type': 'object', 'patternProperties': {'^x-': {'type': 'integer'}},
                           'additionalProperties': False},
     ['{}', '{"x-a":1,"x-b":2}'], ['{"y":1}', '{"x-a":"s"}']),
    ('const/enum', {'type': 'object', 'properties': {
        'c': {'const': {'k': [1, 2]}}, 'e': {'enum': ['a', 2, None, True]}},
        'required': ['c', 'e']},
     ['{"c":{"k":[1,2]},"e":"a"}', '{"c":{"k":[1,2]},"e":null}'],
     ['{"c":{"k":[1]},"e":"a"}', '{"c":{"k":[1,2]},"e":"b"}']),
    ('type list', {'type': ['string', 'null'], 'maxLength': 2}, ['null', '"ab"'],
     ['"abc"', '1']),
    ('no type', {'minimum': 5, 'maxLength': 1}, ['5', '"a"', 'true', 'null', '[]', '{}'],
     ['4', '"ab"']),
    ('min/maxProperties', {'type': 'object', 'properties': {
        'a': {'type': 'null'}, 'b': {'type': 'null'}, 'c': {'type': 'null'}},
        'minProperties': 1, 'maxProperties': 2, 'additionalProperties': False},
     ['{"a":null}', '{"a":null,"b":null}'], ['{}', '{"a":null,"b":null,"c":null}']),
    ('annotations', {'title': 't', 'description': 'd', '$id': 'x', 'id': 'y',
                     '$schema': 'https://json-schema.org/draft/2020-12/schema',
                     'examples': [1], 'default': 1, 'self': {'vendor': 'v'},
                     'x-kubernetes-int-or-string': True, '$comment': 'c', 'readOnly': True,
                     'type': 'integer', 'maximum': 3}, ['3', '-1'], ['4', '"3"']),
    ('uniqueItems', {'type': 'array', 'items': {'type': 'integer'}, 'uniqueItems': True},
     ['[]', '[1]'], ['[1,1]']),
    # Sound subsets (rewrite.py): if+then, every element satisfies contains, not.
    ('if/then', {'type': 'object', 'properties': {'a': {'type': 'string'},
                                                  'b': {'type': 'integer'}},
                 'if': {'properties': {'a': {'const': 'x'}}, 'required': ['a']},
                 'then': {'required': ['b']}, 'else': {'required': ['c']}},
     ['{"a":"x","b":1}'], ['{"a":"x"}', '{"a":"y"}']),
    ('contains', {'type': 'array', 'items': {'type': 'integer'},
                  'contains': {'minimum': 5}, 'maxContains': 2},
     ['[5]', '[5,6]'], ['[]', '[4]', '[5,6,7]']),
    ('not', {'type': ['object', 'string', 'null'], 'properties': {
        'a': {'type': 'integer'}, 'b': {'type': 'integer'}},
        'not': {'anyOf': [{'required': ['a']}, {'required': ['b']}]}},
     ['{}'], ['{"a":1}', '"s"', 'null']),
    ('not allOf', {'type': 'object', 'properties': {'a': {'type': 'integer'},
                                                    'b': {'type': 'integer'}},
                   'required': ['a'], 'not': {'allOf': [{'required': ['a']},
                                                         {'required': ['b']}]}},
     ['{"a":1}'], ['{"a":1,"b":2}', '{}']),
    ('not required+const', {'type': 'object', 'properties': {'a': {'type': 'integer'}},
                            'not': {'properties': {'a': {'const': 1}}, 'required': ['a']}},
     ['{}'], ['{"a":1}', '{"a":2}']),
    # Branch 0 writes q through if/then: it overlaps branch 1, so only 1 is written.
    ('oneOf sees if/then', {'oneOf': [
        {'type': 'object', 'properties': {'k': {'const': 1}}, 'required': ['k'],
         'if': {'required': ['k']}, 'then': {'properties': {'q': {'type': 'integer'}},
                                             'required': ['q']}},
        {'type': 'object', 'properties': {'q': {'type': 'integer'}}, 'required': ['q']}]},
     ['{"q":5}'], ['{"k":1,"q":5}', '{"k":1}']),
    ('not enum', {'enum': ['a', 'b', 1], 'not': {'enum': ['b', 1.0]}}, ['"a"'],
     ['"b"', '1']),
    ('dependentSchemas', {'type': 'object', 'properties': {'a': {'type': 'integer'}},
                          'required': ['a'],
                          'dependentSchemas': {'a': {'properties': {'b': {'const': 1}},
                                                     'required': ['b']},
                                               'z': {'required': ['q']}}},
     ['{"a":1,"b":1}'], ['{"a":1}', '{"a":1,"b":2}', '{"a":1,"b":1,"z":1}']),
    ('unevaluatedItems', {'allOf': [{'prefixItems': [True]}, {'unevaluatedItems': False}]},
     ['[]'], ['[1]']),
    # A branch that no other branch's required names exclude: narrowed to the JSON
    # types the other branch does not admit ([1] is valid under both: never written).
    ('oneOf by type', {'oneOf': [{'properties': {'a': {'type': 'integer'}}, 'required': ['a']},
                                 {'type': 'array', 'items': {'type': 'integer'}}]},
     ['{"a":1}', '1', 'null'], ['[1]', '[]', '{"a":"x"}']),
    # A branch that is itself a oneOf excludes c when each of its branches does; a
    # required member against c's additionalProperties schema.
    ('oneOf of oneOf', {'oneOf': [
        {'type': 'object', 'oneOf': [
            {'properties': {'t': {'const': 'x'}}, 'required': ['t']},
            {'properties': {'t': {'const': 'y'}, 'u': {'type': 'integer'}},
             'required': ['t', 'u']}]},
        {'type': 'object', 'additionalProperties': {'type': 'boolean'}, 'maxProperties': 1}]},
     ['{"t":"x"}', '{"t":"y","u":1}'], ['{"t":"z"}', '{"t":"y"}', '1']),
    # Members a branch's own anyOf writes count as written ({"q":1} is valid under both).
    ('oneOf, branch with anyOf', {'oneOf': [
        {'type': 'object', 'properties': {'r': {'type': 'integer'}},
         'anyOf': [{'properties': {'q': {'type': 'integer'}}, 'required': ['q']}]},
        {'type': 'object', 'required': ['q']}, {'type': 'string'}]},
     ['"s"'], ['{"q":1}', '{"r":1,"q":1}', '1']),
    # At the recursion bound a $ref branch writes nothing; the other branch is proven
    # exclusive against what the reference validates (read past the bound).
    ('recursive oneOf', {'$defs': {'n': {'type': 'object', 'properties': {
        'k': {'const': 'node'}, 'next': {'oneOf': [
            {'type': 'object', 'properties': {'k': {'const': 'leaf'}}, 'required': ['k'],
             'additionalProperties': False},
            {'$ref': '#/$defs/n'}]}}, 'required': ['k', 'next'],
        'additionalProperties': False}}, '$ref': '#/$defs/n'},
     ['{"k":"node","next":{"k":"leaf"}}',
      '{"k":"node","next":{"k":"node","next":{"k":"leaf"}}}'],
     ['{"k":"node"}', '{"k":"node","next":{"k":"x"}}']),
    # A `#/...` reference inside a subschema with its own $id names a place in that
    # resource, not in the document (2020-12 core 8.2.1); drafts 4-7 ignore an $id
    # beside a $ref, but not one above it.
    ('$ref under nested $id', {
        '$id': 'http://example.com/root.json', '$defs': {'A': {'type': 'integer'}},
        'type': 'object', 'properties': {'p': {
            '$id': 'http://example.com/sub/s.json', '$ref': '#/$defs/A',
            '$defs': {'A': {'type': 'string', 'maxLength': 2}}}},
        'required': ['p'], 'additionalProperties': False},
     ['{"p":"a"}'], ['{"p":1}', '{"p":"abc"}']),
    ('draft-07 $id beside $ref', {
        '$schema': 'http://json-schema.org/draft-07/schema#',
        'definitions': {'A': {'type': 'integer'}}, 'type': 'object', 'properties': {'p': {
            '$id': 'http://example.com/sub.json', '$ref': '#/definitions/A',
            'definitions': {'A': {'type': 'string'}}}},
        'required': ['p'], 'additionalProperties': False},
     ['{"p":1}'], ['{"p":"a"}']),
    ('draft-04 id above $ref', {
        '$schema': 'http://json-schema.org/draft-04/schema#',
        'definitions': {'A': {'type': 'integer'}}, 'type': 'object', 'properties': {'p': {
            'id': 'http://example.com/sub.json', 'type': 'object',
            'definitions': {'A': {'type': 'string'}},
            'properties': {'q': {'$ref': '#/definitions/A'}}, 'required': ['q'],
            'additionalProperties': False}},
        'required': ['p'], 'additionalProperties': False},
     ['{"p":{"q":"a"}}'], ['{"p":{"q":1}}']),
    # not of a pattern: printable-ASCII strings the pattern does not match.
    ('not pattern', {'type': 'string', 'minLength': 1, 'not': {'pattern': '^[a-c]+$'}},
     ['"abd"', '"x"', '"a b"'], ['"abc"', '"a"', '""', '1', '"\\n"']),
    # allOf of two different nots (kept apart, not merged into one).
    ('allOf of two nots', {'type': 'object', 'properties': {
        'a': {'type': 'integer'}, 'b': {'type': 'integer'}, 'c': {'type': 'null'}},
        'allOf': [{'not': {'required': ['a']}}, {'not': {'required': ['b']}}]},
     ['{}', '{"c":null}'], ['{"a":1}', '{"b":2}']),
    # Two different consts: nothing satisfies both, so the member is never written.
    ('conflicting consts', {'type': 'object', 'properties': {
        'k': {'type': 'integer'}, 'm': {'type': 'boolean'}}, 'allOf': [
        {'properties': {'m': {'const': True}}}, {'properties': {'m': {'const': False}}}]},
     ['{"k":1}', '{}'], ['{"m":true}', '{"m":false}']),
    # A oneOf beside an allOf member holding another oneOf: branches first.
    ('oneOf beside a oneOf in allOf', {
        'oneOf': [{'type': 'integer'}, {'type': 'string'}],
        'allOf': [{'oneOf': [{'type': 'string', 'maxLength': 2}, {'type': 'boolean'}]}]},
     ['"ab"', '""'], ['1', 'true', '"abc"']),
    # oneOf of single-member objects: each branch writes its own member.
    ('oneOf of single-member objects', {'oneOf': [
        {'properties': {'a': {'type': 'integer'}}, 'additionalProperties': False},
        {'properties': {'b': {'type': 'string'}}, 'additionalProperties': False}]},
     ['{"a":1}', '{"b":"x"}'], ['{}', '{"a":1,"b":"x"}', '1']),
    # oneOf of requireds: a non-object passes both, so only objects are written.
    ('oneOf of requireds beside arrays', {
        'anyOf': [{'type': 'array', 'items': {'type': 'integer'}},
                  {'type': 'object', 'properties': {'c': {'type': 'integer'},
                                                    'm': {'type': 'integer'}}}],
        'oneOf': [{'required': ['c']}, {'required': ['m']}]},
     ['{"c":1}', '{"m":2}'], ['[]', '[1]', '{"c":1,"m":2}', '{}']),
    # propertyNames through a $ref to an enum (JSONSchemaStore's golangci-lint), a
    # const, and a format (names are checked by the format checker too).
    ('propertyNames enum by $ref', {
        '$defs': {'n': {'enum': ['ab', 'cd', 3]}}, 'type': 'object',
        'propertyNames': {'$ref': '#/$defs/n'}, 'additionalProperties': {'type': 'integer'}},
     ['{}', '{"ab":1}', '{"ab":1,"cd":2}'], ['{"x":1}', '{"ab":"s"}', '{"3":1}']),
    ('propertyNames const', {'type': 'object', 'propertyNames': {'const': 'k'}},
     ['{}', '{"k":null}', '{"k":[1]}'], ['{"j":null}', '{"kk":1}']),
    ('propertyNames format', {'type': 'object', 'propertyNames': {'format': 'ipv4'},
                              'additionalProperties': {'type': 'null'}},
     ['{}', '{"1.2.3.4":null}'], ['{"a":null}', '{"1.2.3":null}']),
    # Extra members under maxProperties (JSONSchemaStore's io-package `news`).
    ('maxProperties with patternProperties', {
        'type': 'object', 'minProperties': 1, 'maxProperties': 2,
        'patternProperties': {'^v[0-9]$': {'type': 'integer'}},
        'additionalProperties': False},
     ['{"v1":1}', '{"v1":1,"v2":-3}'], ['{}', '{"v1":1,"v2":2,"v3":3}', '{"x":1}']),
]
IDS = [g[0] for g in GROUPS]


def _validator(schema):
  cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
  return cls(schema, format_checker=cls.FORMAT_CHECKER)


@pytest.mark.parametrize('group', GROUPS, ids=IDS)
def test_keyword_group_complete_and_sound(group):
  _, schema, valid, invalid = group
  dfa = constraints.compile_schema(schema)
  check = _validator(schema)
  for text in valid:
    assert check.is_valid(json.loads(text)), text  # The test's own instance is valid.
    assert dfa.matches(text), text
  for text in invalid:
    assert not dfa.matches(text), text


def _walks(index, dfa, rng, n, max_len=120):
  """Random texts the token tables allow (each ends accepting within max_len;
  `dfa` accepts it too)."""
  out = []
  for _ in range(n):
    state, data = index.start_state, bytearray()
    for step in range(max_len):
      moves = np.flatnonzero(index.need_row(state) <= max_len - 1 - step)
      t = int(rng.choice(moves))
      if t == tok_lib.EOS_ID:
        break
      data.append(t)
      state = index.step(state, t)
    assert index.need_row(state)[tok_lib.EOS_ID] == 0 and dfa.matches(bytes(data)), data
    out.append(bytes(data))
  return out


@pytest.mark.parametrize('group', GROUPS, ids=IDS)
def test_random_walks_validate_with_jsonschema(group):
  _, schema, _, _ = group
  dfa = constraints.compile_schema(schema)
  check = _validator(schema)
  rng = np.random.default_rng(0)
  # The unrolled DFA's S x V tables, and `for_schema`'s counted tables.
  walks = [*_walks(constraints.build_index(dfa), dfa, rng, 40),
           *_walks(constraints.for_schema(schema), dfa, rng, 40)]
  for data in walks:
    value = json.loads(data.decode('utf-8'))  # Valid UTF-8 and JSON.
    errors = [e.message for e in check.iter_errors(value)]
    assert not errors, (data, errors)


@pytest.mark.parametrize('schema,keyword,pointer', [
    ({'type': 'string', 'minLength': 1.5}, 'minLength', '/'),
    ({'properties': {'a': {'type': 'string', 'maxLength': 'x'}}}, 'maxLength', '/properties/a'),
    ({'type': 'object', 'properties': {'a': {'not': {'minimum': 3}}}}, 'not',
     '/properties/a/not'),
    ({'type': 'string', 'pattern': '(?=a)b'}, 'pattern', '/'),
    ({'items': {'type': 'string', 'pattern': 'a\\1'}, 'type': 'array'}, 'pattern', '/items'),
    ({'$ref': 'http://example.com/s.json'}, '$ref', '/'),
    ({'$ref': '#/$defs/missing'}, '$ref', '/'),
    ({'type': 'tuple'}, 'type', '/'),
    ({'type': 'array', 'contains': True, 'minContains': 0, 'maxContains': 1},
     'maxContains', '/'),
    ({'type': 'number', 'multipleOf': 0.3}, 'multipleOf', '/'),
    ({'anyOf': []}, 'anyOf', '/'),
    ({'type': 'object', 'propertyNames': {'type': 'integer'}}, 'propertyNames',
     '/propertyNames'),
])
def test_unsupported_or_malformed_is_one_error_naming_keyword_and_pointer(schema, keyword,
                                                                          pointer):
  # (strict: optional members are not left out, see the test after next.)
  with pytest.raises(constraints.SchemaError) as e:
    constraints.compile_schema(schema, constraints.Options(strict=True))
  assert e.value.keyword == keyword and e.value.pointer == pointer, str(e.value)
  assert str(e.value).startswith(f'{pointer}: {keyword}: ')


def test_unsatisfiable_is_a_schema_error():
  for bad in (False, {'enum': []}, {'type': 'integer', 'minimum': 5, 'maximum': 1},
              {'type': 'object', 'required': ['a'], 'additionalProperties': False}):
    with pytest.raises(constraints.SchemaError):
      constraints.compile_schema(bad)


def test_compile_is_linear_in_optional_properties_and_length():
  def n_states(n):
    return constraints.compile_schema({'type': 'object', 'properties': {
        f'p{i}': {'type': 'integer'} for i in range(n)}}).n_states
  s10, s20, s40 = n_states(10), n_states(20), n_states(40)
  assert s40 - s20 <= 2.5 * (s20 - s10), (s10, s20, s40)  # Linear, not 2^n.
  exact = constraints.Options(max_length_unroll=5000)  # No clamping: the full chain.
  short = constraints.compile_schema({'type': 'string', 'maxLength': 500}, exact).n_states
  long = constraints.compile_schema({'type': 'string', 'maxLength': 5000}, exact).n_states
  assert long <= 10.5 * short, (short, long)
  dfa = constraints.compile_schema({'type': 'string', 'minLength': 4000, 'maxLength': 5000},
                                   exact)
  assert dfa.matches('"' + 'a' * 4000 + '"') and not dfa.matches('"' + 'a' * 3999 + '"')
  assert dfa.matches('"' + 'é' * 5000 + '"') and not dfa.matches('"' + 'é' * 5001 + '"')


def test_caps_raise_schema_error_and_compile_is_cached():
  tight = constraints.Options(limits=automaton.Limits(max_states=1000))
  with pytest.raises(constraints.SchemaError, match='max_states'):
    constraints.compile_schema({'type': 'string', 'maxLength': 5000}, tight)
  schema = {'type': 'object', 'properties': {'a': {'type': 'integer'}}}
  assert constraints.compile_schema(schema) is constraints.compile_schema(
      json.loads(json.dumps(schema)))


def test_counted_loops_equal_plain_unrolling():
  """The DFA-level unrolled loop accepts exactly what the regex does."""
  import re
  rng = random.Random(0)
  for pattern in [r'a{20,30}b', r'(ab){15,}', r'.{0,40}', r'é{14}x|y', r'x{0,20};?',
                  r'[a-z]{0,20}[0-9]{0,20}', r'(x{0,20};)*', r'(a|ab){20}']:
    dfa = automaton.compile_regex(pattern)
    for _ in range(400):
      s = ''.join(rng.choice('abxyé;0\n') for _ in range(rng.randint(0, 45)))
      if rng.random() < 0.5:
        s = rng.choice('axb') * rng.randint(0, 45)
      assert dfa.matches(s) == (re.fullmatch(pattern, s) is not None), (pattern, s)


def _equivalent(a: automaton.Dfa, b: automaton.Dfa) -> bool:
  """Whether two DFAs (dead states pruned) accept the same bytes: a walk over the
  product of their reachable states."""
  pairs = sorted({(int(x), int(y)) for x, y in zip(a.byte_class, b.byte_class)})
  seen, todo = {(0, 0)}, [(0, 0)]
  while todo:
    s, t = todo.pop()
    if a.accepting[s] != b.accepting[t]:
      return False
    for ca, cb in pairs:  # One byte of each class pair stands for all.
      ns, nt = int(a.delta_SxC[s, ca]), int(b.delta_SxC[t, cb])
      if (ns < 0) != (nt < 0):
        return False
      if ns >= 0 and (ns, nt) not in seen:
        seen.add((ns, nt))
        todo.append((ns, nt))
  return True


def test_members_with_counted_strings_equal_plain_compile():
  """Members holding a long maxLength stay unembedded until the final DFA (one
  counted loop each): the same minimal DFA as unrolling every repetition plainly."""
  schema = {'type': 'object', 'properties': {
      'a': {'type': 'string', 'maxLength': 20},
      'b': {'type': 'array', 'items': {'type': 'object', 'properties': {
          'c': {'type': 'string', 'minLength': 2, 'maxLength': 15}, 'd': {'type': 'integer'}},
          'required': ['c']}, 'maxItems': 2},
      'e': {'enum': ['x', 'y']}}, 'required': ['b']}
  plain = constraints.Options(limits=automaton.Limits(region_min=10**6))
  fast, ref = constraints.compile_schema(schema), constraints.compile_schema(schema, plain)
  assert fast.n_states == ref.n_states
  assert _equivalent(fast, ref)


def test_one_time_cap_for_the_whole_schema():
  """`Limits.max_seconds` bounds the schema's compilation as a whole (every member
  DFA), not only each `to_dfa`: past it, one SchemaError naming the limit."""
  schema = {'type': 'object', 'properties': {
      f'p{i}': {'type': 'object', 'properties': {'q': {'type': 'integer', 'maximum': i}}}
      for i in range(4)}}
  rushed = constraints.Options(limits=automaton.Limits(max_seconds=1e-6))
  with pytest.raises(constraints.SchemaError, match='max_seconds'):
    constraints.schema_regex(schema, rushed)
  assert constraints.compile_schema(schema).matches('{"p0":{"q":0}}')


def test_large_optional_members_are_shed_soundly():
  # Past max_object_states the largest optional member is left out (fewer texts,
  # all valid); required members and the small optional one stay.
  big = {'type': 'string', 'pattern': '^[a-f0-9]{40}$'}
  schema = {'type': 'object', 'required': ['id'],
            'properties': {'id': {'type': 'integer'}, 'big': big,
                           'flag': {'type': 'boolean'}}}
  full = constraints.compile_schema(schema)
  shed = constraints.compile_schema(schema, constraints.Options(max_object_states=30))
  with_big = '{"id":1,"big":"' + 'a' * 40 + '","flag":true}'
  assert full.matches(with_big) and not shed.matches(with_big)
  for text in ('{"id":1}', '{"id":-7,"flag":false}'):
    assert shed.matches(text)
    jsonschema.validate(json.loads(text), schema)
  # Never silent: the compiler reports the member it left out, and the token
  # index (what the server and the benchmark read) carries the warning.
  _, warns = constraints.compile_schema_report(schema, constraints.Options(max_object_states=30))
  assert len(warns) == 1 and "['big']" in warns[0] and 'max_object_states' in warns[0]
  assert constraints.compile_schema_report(schema)[1] == ()
  index = constraints.for_schema(schema, options=constraints.Options(max_object_states=30))
  assert index.warnings == warns and constraints.for_schema(schema).warnings == ()


def test_long_strings_are_sized_by_states_not_byte_sets():
  # Each pattern member's value unrolls 256 characters of ~5 DFA states (not of
  # the ~23 byte sets of every UTF-8 form): well under max_object_states, so the
  # extra members are written (counted by byte sets, all of them were shed).
  schema = {'type': 'object', 'patternProperties': {
      '^a[a-z]{0,20}$': {'type': 'string', 'maxLength': 300},
      '^b[a-z]{0,20}$': {'type': 'string', 'maxLength': 300}}}
  dfa, warns = constraints.compile_schema_report(schema)
  assert warns == () and dfa.matches('{"ab":"x","bc":"y"}')


def test_color_walks_pass_the_draft3_format_checker():
  # Draft 2020-12 treats `color` as an annotation; jsonschema's own checker (all
  # formats, draft 3's `color` among them with webcolors) must accept every text.
  schema = {'type': 'string', 'format': 'color'}
  dfa = constraints.compile_schema(schema)
  checker = jsonschema.FormatChecker()
  for data in _walks(constraints.build_index(dfa), dfa, np.random.default_rng(1), 30):
    assert checker.conforms(json.loads(data), 'color'), data


@pytest.mark.parametrize('schema, texts, not_texts', [
    # if/then merges a `const` beside an `enum` (JSONSchemaStore's ui5.yaml): both
    # hold, so a const outside the enum leaves nothing to write (only instances of
    # `if` are written: none here).
    ({'type': 'object', 'required': ['t'], 'properties': {'t': {'enum': ['p', 'q']}},
      'if': {'properties': {'t': {'const': None}}}, 'then': {}}, [], ['{"t":null}']),
    ({'const': 1, 'enum': [1.0, 2]}, ['1'], ['2']),
    ({'const': 'x', 'enum': ['y']}, [], ['"x"', '"y"']),
])
def test_const_beside_enum_needs_both(schema, texts, not_texts):
  try:
    dfa = constraints.compile_schema(schema)
  except constraints.SchemaError:
    assert not texts  # Nothing can be written.
    return
  for t in texts:
    assert dfa.matches(t), t
    jsonschema.validate(json.loads(t), schema)
  for t in not_texts:
    assert not dfa.matches(t), t


def test_if_then_nested_in_then_keeps_the_inner_then():
  # JSONSchemaStore's ui5.yaml: the inner `then` requires `type`; it was dropped
  # when the outer `then` was merged, so `{"v":"2"}` was written (invalid).
  schema = {'type': 'object', 'required': ['v'], 'properties': {'v': {'enum': ['1', '2']}},
            'if': {'properties': {'v': {'const': '2'}}},
            'then': {'if': {'properties': {'k': {'enum': ['p', None]}}},
                     'then': {'required': ['t'], 'properties': {'t': {'enum': ['a']}}}}}
  dfa = constraints.compile_schema(schema)
  assert not dfa.matches('{"v":"2"}')
  for text in ('{"v":"2","t":"a"}', '{"v":"2","k":"p","t":"a"}'):
    assert dfa.matches(text), text
    jsonschema.validate(json.loads(text), schema)


def test_not_pattern_alone_is_applied():
  # JSONSchemaStore's madness.json: a string with only `not: {pattern}` (no
  # pattern, format or length) was written as any string, e.g. ending in ','.
  schema = {'oneOf': [{'type': 'string', 'not': {'pattern': ',,|^,|,$'}},
                      {'type': 'null'}]}
  dfa = constraints.compile_schema(schema)
  for text in ('"a,b"', '"pdf"', 'null'):
    assert dfa.matches(text), text
    jsonschema.validate(json.loads(text), schema)
  for text in ('"a,"', '",a"', '"a,,b"', '"é"'):
    assert not dfa.matches(text), text


@pytest.mark.parametrize('schema,texts,not_texts', [
    # anyOf: the branch with an unsupported `not` is left out (JSONSchemaStore's
    # golangci-lint); the other one is written.
    ({'anyOf': [{'type': 'string', 'not': {'properties': {'a': {'const': 1}}}},
                {'type': 'integer', 'minimum': 0}]}, ['0', '12'], ['"x"', '-1']),
    # oneOf: a branch with a remote $ref is left out; the kept branch excludes it
    # by type, so what is written matches exactly one branch.
    ({'oneOf': [{'type': 'string', 'maxLength': 2},
                {'type': 'object', 'properties': {'r': {'$ref': 'http://x.org/s#/a'}},
                 'required': ['r']}]}, ['""', '"ab"'], ['{}', '"abc"']),
    # An optional member the compiler cannot enforce is never written (swagger's
    # remote `title`); the required ones still are.
    ({'type': 'object', 'required': ['n'],
      'properties': {'n': {'type': 'integer'}, 't': {'$ref': 'http://x.org/s#/t'},
                     'p': {'type': 'string', 'pattern': '(?=a)b'}}},
     ['{"n":1}'], ['{"n":1,"t":1}', '{}']),
])
def test_unenforceable_branches_and_optional_members_are_left_out_and_reported(
    schema, texts, not_texts):
  index = constraints.for_schema(schema)
  dfa = constraints.compile_schema(schema)
  assert index.warnings and all('never written' in w for w in index.warnings)
  with pytest.raises(constraints.SchemaError):  # Options.strict: an error instead.
    constraints.compile_schema(schema, constraints.Options(strict=True))
  check = _validator(schema)
  for t in texts:
    assert dfa.matches(t), t
    assert check.is_valid(json.loads(t)), t
  for t in not_texts:
    assert not dfa.matches(t), t
  for data in _walks(index, dfa, np.random.default_rng(1), 30):
    assert check.is_valid(json.loads(data.decode('utf-8'))), data


@pytest.mark.parametrize('schema,keyword', [
    # Malformed (not unsupported): still one error, not a left-out branch.
    ({'anyOf': [{'type': 'string', 'minLength': 1.5}, {'type': 'integer'}]}, 'minLength'),
    # Every branch unenforceable: the first one's error.
    ({'anyOf': [{'$ref': 'http://x.org/a'}, {'type': 'string', 'pattern': '(?=a)b'}]},
     '$ref'),
    # A required member cannot be left out.
    ({'type': 'object', 'required': ['t'], 'properties': {'t': {'$ref': 'http://x.org/t'}}},
     '$ref'),
])
def test_what_cannot_be_left_out_still_raises(schema, keyword):
  with pytest.raises(constraints.SchemaError) as e:
    constraints.compile_schema(schema)
  assert e.value.keyword == keyword, str(e.value)


def test_warnings_are_capped_with_a_count():
  n = constraints.MAX_WARNINGS + 10
  schema = {'type': 'object', 'properties': {
      f'p{i}': {'type': 'object', 'properties': {'r': {'$ref': f'http://x.org/{i}'}}}
      for i in range(n)}}
  index = constraints.for_schema(schema)
  assert len(index.warnings) == constraints.MAX_WARNINGS + 1
  assert index.warnings[-1].startswith('... and 10 more places')


def test_past_a_state_cap_more_optional_members_are_left_out():
  # Four optional strings of ~900 states each pass a 2000-state cap within an
  # 8000-state object budget; compiled again with a quarter of the budget, the
  # largest optional members are left out (reported) and the rest is written.
  schema = {'type': 'object', 'required': ['id'], 'properties': {
      'id': {'type': 'integer'},
      **{f's{i}': {'type': 'string', 'maxLength': 100} for i in range(4)}}}
  opts = constraints.Options(limits=automaton.Limits(max_states=2000),
                             max_object_states=8000)
  with pytest.raises((constraints.SchemaError, automaton.LimitError)):  # First attempt.
    automaton.to_dfa(constraints.schema_regex(schema, opts), opts.limits)
  index = constraints.for_schema(schema, options=opts)
  assert index.warnings and 'never written' in index.warnings[0]
  dfa = constraints.compile_schema(schema, opts)
  assert dfa.matches('{"id":1}') and dfa.n_states <= 2000
  check = _validator(schema)
  for data in _walks(index, dfa, np.random.default_rng(2), 30):
    assert check.is_valid(json.loads(data.decode('utf-8'))), data


def test_approx_states_of_a_deep_ast_needs_no_recursion():
  # JSONSchemaStore's venvironment-basic-schema built intermediate ASTs nested past
  # Python's recursion limit ("nested too deeply" under the benchmark's default).
  from lattice.decode.jsonschema import containers  # pylint: disable=g-import-not-at-top
  node = automaton.one(1)
  for _ in range(3000):
    node = ('alt', (node, automaton.cat(automaton.one(2), automaton.one(4))))
  assert containers.approx_states(node) == 1 + 3000 * 2
  memo = {}
  assert containers.approx_states(('chain', ((node, True),), automaton.one(8)), memo) == 6002
  assert containers.approx_states(node, memo) == 6001  # From the memo.


def _has_counted_loop_reference(node, region_min):
  """The loop test `Compiler.minimal` used before `_embeddable` (recursive)."""
  kind = node[0]
  if kind in ('set', 'dfa'):
    return False
  if kind in ('cat', 'alt'):
    return any(_has_counted_loop_reference(p, region_min) for p in node[1])
  if kind == 'chain':
    return (any(_has_counted_loop_reference(m, region_min) for m, _ in node[1])
            or _has_counted_loop_reference(node[2], region_min))
  _, body, lo, hi = node
  return (max(lo, hi or 0) > region_min and automaton.is_char(body)) or (
      _has_counted_loop_reference(body, region_min))


def test_embeddable_is_no_counted_loop_and_within_the_size_budget():
  """`compile._embeddable` (one walk) decides as the counted-loop test and
  `automaton._size_at_most` did together, at budgets around each node's size."""
  from lattice.decode.jsonschema import compile as compile_lib  # pylint: disable=g-import-not-at-top
  word = automaton.lit('abc')
  small = automaton.to_dfa(automaton.alt(word, automaton.lit('d')))
  nodes = [
      automaton.rep(automaton.one(1 << 97), 0, 100),           # a counted loop
      automaton.rep(automaton.one(1 << 97), 0, 5),             # short: unrolled
      automaton.rep(word, 0, 40),                              # not one character
      automaton.cat(word, automaton.embed(small), automaton.rep(word, 2, 7)),
      automaton.chain(((word, True), (automaton.rep(automaton.one(1 << 98), 20, None),
                                      False)), automaton.lit(',')),
      automaton.alt(*(automaton.lit(f'k{i}') for i in range(30))),
      automaton.rep(automaton.alt(automaton.embed(small), word), 1, None),
  ]
  for node in nodes:
    for budget in (0, 3, 10, 40, 100, 1000):
      want = (not _has_counted_loop_reference(node, 12)
              and automaton._size_at_most(node, budget))  # pylint: disable=protected-access
      assert compile_lib._embeddable(node, 12, budget) == want, (node[0], budget)  # pylint: disable=protected-access
