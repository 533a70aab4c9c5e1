"""`dfa_compose` builds the same language as the subset construction, and falls back
where pieces overlap."""

import pytest

from lattice.decode import automaton, constraints, dfa_compose, dfa_ops, regex_parse
from lattice.decode.regex_ast import RegexError, chain, embed, lit, rep


def _same_language(a, b) -> bool:
  for x, y in ((a, b), (b, a)):
    try:
      dfa_ops.difference(x, y)
      return False
    except RegexError as e:
      assert 'match nothing' in str(e)
  return True


def _both(node):
  lim = automaton.DEFAULT_LIMITS
  return automaton._composed_dfa(node, lim), automaton._subset_dfa(node, lim)  # pylint: disable=protected-access


_DIGITS = embed(automaton.to_dfa(regex_parse.parse('[0-9]+')))
SCHEMAS = [
    {'type': 'object', 'properties': {'ab': {'type': 'integer'}, 'ac': {'type': 'string'},
                                      'b': {'type': 'boolean'}}, 'required': ['b']},
    {'type': 'object', 'properties': {'a': {'$ref': '#/$defs/p'}, 'b': {'$ref': '#/$defs/p'}},
     '$defs': {'p': {'type': 'object', 'properties': {'x': {'type': 'number'},
                                                      'xy': {'enum': ['u', 'v', 1]}}}}},
    {'type': 'array', 'items': {'anyOf': [{'type': 'string', 'maxLength': 20},
                                          {'type': 'integer', 'minimum': -3}]},
     'maxItems': 5},
    {'type': 'object', 'additionalProperties': {'type': 'string', 'format': 'date'},
     'properties': {'k': {'const': 'v'}}, 'minProperties': 1},
]


@pytest.mark.parametrize('schema', SCHEMAS)
def test_composed_schema_dfa_equals_subset_construction(schema):
  composed, subset = _both(constraints.schema_regex(schema))
  assert _same_language(composed, subset)


@pytest.mark.parametrize('node', [
    chain(((lit('"a":1'), False), (lit('"ab":2'), True), (lit('"b":3'), False)), lit(',')),
    chain(((_DIGITS, False), (lit('x'), False)), lit(',')),
    rep(chain(((lit('ab'), False), (lit('ac'), False)), lit(';')), 0, None),
    rep(lit('ab'), 2, 5),
])
def test_composed_pieces_equal_subset_construction(node):
  composed, subset = _both(node)
  assert _same_language(composed, subset)


def test_overlapping_pieces_fall_back_and_stay_exact():
  node = regex_parse.parse('[0-9]+1')  # A loop continuing on the byte after it.
  with pytest.raises(dfa_compose.Fallback):
    dfa_compose.compose(node, 1000, 10.0, 12, lambda n: automaton.to_dfa(n))
  dfa = automaton.to_dfa(node)
  assert dfa.matches('11') and dfa.matches('2301') and not dfa.matches('1')
