"""`dfa_ops`: intersection and difference by product construction, natively
(`dfa_native.product`) the same tables as the Python product."""

import numpy as np
import pytest

from lattice.decode import automaton, dfa_native, dfa_ops, regex_parse
from lattice.decode.automaton import Dfa
from lattice.decode.jsonschema import search

pytestmark = pytest.mark.skipif(not dfa_native.can_compose(),
                                reason='lattice.decode._dfa_native is not built')


def _random_dfa(rng) -> Dfa:
  C = int(rng.integers(1, 8))
  S = int(rng.integers(1, 40))
  byte_class = rng.integers(0, C, 256).astype(np.int32)
  byte_class[:C] = np.arange(C)  # every class has a byte
  delta = np.where(rng.random((S, C)) < 0.7, rng.integers(0, S, (S, C)), -1).astype(np.int32)
  return Dfa(delta, byte_class, rng.random(S) < 0.4)


def _both_ways(op, a, b, monkeypatch, **kw):
  """(native result or error text, Python result or error text)."""
  out = []
  for native in (True, False):
    monkeypatch.setattr(dfa_native, 'can_compose', (lambda: True) if native else (lambda: False))
    try:
      d = op(a, b, **kw)
      out.append((d.delta_SxC, d.byte_class, d.accepting))
    except automaton.RegexError as e:
      out.append(f'{type(e).__name__}: {e}')
  return out


def _assert_same(got, want):
  assert type(got) is type(want), (got, want)
  if isinstance(got, str):
    assert got == want
  else:
    for x, y in zip(got, want):
      assert x.dtype == y.dtype
      np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize('seed', range(16))
@pytest.mark.parametrize('op', [dfa_ops.intersect, dfa_ops.difference])
def test_native_product_equals_the_python_product(seed, op, monkeypatch):
  rng = np.random.default_rng(seed)
  a, b = _random_dfa(rng), _random_dfa(rng)
  _assert_same(*_both_ways(op, a, b, monkeypatch))


@pytest.mark.parametrize('op', [dfa_ops.intersect, dfa_ops.difference])
def test_native_product_of_schema_languages(op, monkeypatch):
  a = search.search_dfa('^[a-z]+(-[a-z0-9]+)*$')
  b = automaton.to_dfa(regex_parse.parse('[a-c].{0,6}'))
  _assert_same(*_both_ways(op, a, b, monkeypatch))
  names = automaton.to_dfa(regex_parse.parse('[ -!#-\\[\\]-~]*'))
  declared = automaton.to_dfa(regex_parse.parse('name|type|value|values|id'))
  _assert_same(*_both_ways(op, names, declared, monkeypatch))


def test_native_product_caps_and_empty_results(monkeypatch):
  a = automaton.to_dfa(regex_parse.parse('[a-z]{0,20}'))
  b = automaton.to_dfa(regex_parse.parse('[a-m]*'))
  got, want = _both_ways(dfa_ops.intersect, a, b, monkeypatch, max_states=5)
  _assert_same(got, want)
  assert 'product above 5 states' in got
  digits = automaton.to_dfa(regex_parse.parse('[0-9]+'))
  got, want = _both_ways(dfa_ops.intersect, a, digits, monkeypatch)
  _assert_same(got, want)
  assert 'match nothing' in got
  got, want = _both_ways(dfa_ops.difference, digits, digits, monkeypatch)
  _assert_same(got, want)
  assert 'match nothing' in got
