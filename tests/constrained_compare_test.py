"""The engine-comparison harness of benchmarks.constrained_decode, in process (cheap).

Other engines (llguidance, xgrammar, outlines-core) are optional (`lattice[bench]`)
and skipped when absent.
"""

import numpy as np
import pytest

from benchmarks import constrained_compare as cc
from benchmarks import constrained_engines as ce

SCHEMA = {'type': 'object', 'properties': {'a': {'type': 'integer', 'minimum': 3},
                                           'b': {'type': 'string', 'maxLength': 4}},
          'required': ['a'], 'additionalProperties': False}


@pytest.mark.parametrize('name', ['lattice', 'llguidance', 'xgrammar'])
def test_engine_walks_are_checked(name):
  if name not in ce.available():
    pytest.skip(f'{name} not installed')
  engine = ce.ENGINES[name]()
  g = engine.compile(SCHEMA)
  rng = np.random.default_rng(0)
  outs = []
  for _ in range(6):
    data, finished, _, n_mask = cc._walk(engine, g, rng, 128)  # pylint: disable=protected-access
    assert n_mask >= 1
    if finished:
      outs.append(data)
  assert outs
  checked, invalid, non_utf8 = cc._check(outs, SCHEMA)  # pylint: disable=protected-access
  assert checked == len(outs) and non_utf8 == 0
  if name == 'lattice':
    assert invalid == 0


def test_check_counts_invalid_and_non_utf8_outputs():
  outs = [b'{"a":3}', b'{"a":2}', b'{"a":3,"b":"\xff"}', b'{"a":']
  assert cc._check(outs, SCHEMA) == (4, 3, 1)  # pylint: disable=protected-access


def test_summary_fields():
  recs = [{'ok': True, 'compile_s': 0.002, 'mask_us': 1.0, 'checked': 2, 'invalid': 1,
           'non_utf8': 0}, {'ok': False, 'error': 'SchemaError: x'}]
  s = cc.summarise(recs)
  assert s['coverage'] == 0.5 and s['compile_ms_median'] == 2.0
  assert s['invalid_outputs'] == 1 and s['schemas_with_invalid'] == 1
  assert s['top_errors'] == {'SchemaError: x': 1}
  assert 'coverage  50.0%' in cc.format_row(s)


def test_markdown_table_and_p95():
  recs = [{'ok': True, 'compile_s': t, 'mask_us': 1.0, 'checked': 1, 'invalid': 0,
           'non_utf8': 0} for t in (0.001, 0.002)]
  s = cc.summarise(recs)
  assert s['compile_ms_p95'] == 2.0  # Nearest rank: never below the median.
  table = cc.markdown_table({'Sub': {'lattice': s}})
  assert table.splitlines()[2].startswith('| Sub | lattice | 100.0% (2/2) | 1.50 | 2.0 |')


def test_census_phases_errors_and_buckets():
  from benchmarks import constrained_census as census  # pylint: disable=g-import-not-at-top
  ok = census.census_one(SCHEMA, cap=60)
  assert ok['ok'] and ok['states'] > 1 and min(ok['ast_s'], ok['dfa_s'], ok['index_s']) >= 0
  bad = census.census_one({'type': 'string', 'pattern': '(?<=a)b'}, cap=60)
  assert not bad['ok'] and 'pattern' in bad['error']
  assert census.bucket("SchemaError: /properties/x: not: 'a' 12") == \
      "SchemaError: /… not: '…' N"
