"""The JSON-Schema-Test-Suite (draft 2020-12) against the constrained decoder's automaton.

Data: `tests/data/json_schema_test_suite/` (copied from json-schema-org/
JSON-Schema-Test-Suite, MIT; the keyword groups lattice supports, and the
`optional/format` files of the formats issue #22 names). Each test case is a schema
and instances marked valid or invalid. An instance is fed to the compiled DFA as its
compact JSON text (`common.dumps`: the spelling the decoder writes).

Soundness (absolute): for every schema that compiles, no invalid instance is
accepted. Completeness (measured): the share of valid instances accepted. Lattice
writes a sound subset by design (keys in schema order, no whitespace, no `\\u`
escapes, numbers without exponents under bounds, ... see `lattice.decode.jsonschema`),
so a valid instance outside that subset is rejected; `FLOORS` holds, per group, the
share of cases that compile and of valid instances accepted, measured on this
commit, so a regression in coverage fails here.
"""

import json
from pathlib import Path

import pytest

from lattice.decode import constraints
from lattice.decode.jsonschema import common

DATA = Path(__file__).parent / 'data' / 'json_schema_test_suite'
GROUPS = sorted(str(p.relative_to(DATA).with_suffix('')) for p in DATA.rglob('*.json'))

# group: (cases compiled, valid instances accepted), lower bounds, measured here.
# (`defs` is not copied: its cases all `$ref` the remote metaschema.)
FLOORS: dict[str, tuple[float, float]] = {
    'additionalProperties': (0.88, 0.90),
    'allOf': (0.75, 0.77),
    'anyOf': (0.87, 0.91),
    'boolean_schema': (0.50, 1.00),
    'const': (1.00, 0.77),
    'contains': (0.85, 0.40),
    'dependentRequired': (1.00, 0.64),
    'dependentSchemas': (1.00, 0.60),
    'enum': (0.93, 0.81),
    'exclusiveMaximum': (1.00, 1.00),
    'exclusiveMinimum': (1.00, 0.50),
    'format/date': (1.00, 0.91),
    'format/date-time': (1.00, 0.71),
    'format/email': (1.00, 0.50),
    'format/ipv4': (1.00, 1.00),
    'format/ipv6': (1.00, 0.41),
    'format/time': (1.00, 0.63),
    'format/uri': (1.00, 0.38),
    'format/uuid': (1.00, 1.00),
    'if-then-else': (0.83, 0.61),
    'items': (1.00, 1.00),
    'maxContains': (0.60, 0.80),
    'maxItems': (1.00, 1.00),
    'maxLength': (1.00, 1.00),
    'maxProperties': (1.00, 1.00),  # Was (1.00, 0.57): extra members under the bound.
    'maximum': (1.00, 0.66),
    'minContains': (0.75, 0.81),
    'minItems': (1.00, 1.00),
    'minLength': (1.00, 1.00),
    'minProperties': (1.00, 1.00),
    'minimum': (1.00, 0.75),
    'multipleOf': (0.60, 0.50),
    'not': (0.55, 0.85),
    # Was (0.27, 0.50), then (0.45, 0.42) with narrowed branches; branches that cannot
    # be enforced are left out (reported) when another is written.
    'oneOf': (0.63, 0.63),
    'pattern': (0.66, 1.00),
    'patternProperties': (0.83, 0.84),
    'prefixItems': (1.00, 1.00),
    'properties': (1.00, 0.93),
    'propertyNames': (0.83, 1.00),  # Was (0.50, 1.00): enum/const/$ref names.
    # Was (0.52, 1.00): optional members with a remote $ref are left out (reported),
    # so more cases compile and the valid instances holding them are not written.
    'ref': (0.61, 0.87),
    'required': (1.00, 0.83),
    'type': (1.00, 0.95),
    'unevaluatedItems': (0.86, 0.51),
    'unevaluatedProperties': (0.84, 0.69),
    'uniqueItems': (1.00, 0.50),
}


def _run(group: str):
  cases = json.loads((DATA / f'{group}.json').read_text())
  compiled = valid = accepted = 0
  unsound = []
  for case in cases:
    try:
      dfa = constraints.compile_schema(case['schema'])
    except constraints.SchemaError:
      continue
    compiled += 1
    for t in case['tests']:
      ok = dfa.matches(common.dumps(t['data']))
      if t['valid']:
        valid += 1
        accepted += ok
      elif ok:
        unsound.append(f"{case['description']} / {t['description']}")
  return compiled / len(cases), accepted / max(valid, 1), unsound


@pytest.mark.parametrize('group', GROUPS)
def test_suite_group(group):
  assert group in FLOORS, f'{group}: add its measured floors to FLOORS'
  compiled, accepted, unsound = _run(group)
  assert not unsound, f'{group}: invalid instances accepted: {unsound}'
  lo_compiled, lo_accepted = FLOORS.get(group, (0.0, 0.0))
  assert compiled >= lo_compiled - 1e-9, f'{group}: {compiled:.2f} of cases compile'
  assert accepted >= lo_accepted - 1e-9, f'{group}: {accepted:.2f} of valid accepted'


def test_suite_data_present():
  assert len(GROUPS) >= 30 and 'format/date-time' in GROUPS
