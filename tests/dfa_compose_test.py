"""`dfa_compose` builds the same language as the subset construction, and falls back
where pieces overlap."""

import numpy as np
import pytest

from lattice.decode import automaton, constraints, dfa_compose, dfa_native, dfa_ops, regex_parse
from lattice.decode.jsonschema import search
from lattice.decode.regex_ast import EPS, RegexError, alt, cat, chain, embed, lit, one, rep


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


# -- dfa_compose.native: the AST in one native call --------------------------------------

_native_only = pytest.mark.skipif(not dfa_native.can_compose(),
                                  reason='lattice.decode._dfa_native is not built')
_LIM = automaton.DEFAULT_LIMITS


def _python_subsets(node, limits=_LIM):
  """automaton's Python NFA and native subset construction (the path before
  `dfa_compose.native`)."""
  return automaton._to_dfa(node, limits, set())  # pylint: disable=protected-access


def _native(node, limits=_LIM):
  """(delta, byte_class, accepting) by `dfa_compose.native` (as `_tables`), or None."""
  got = dfa_compose.native(node, limits.max_states, limits.max_seconds, limits.region_min)
  return None if got is None else (got[0], got[2], got[1])


def _tables(dfa):
  return dfa.delta_SxC, dfa.byte_class, dfa.accepting


_STRING = embed(automaton.to_dfa(regex_parse.parse('[a-z"\\\\\n\x01]{1,5}x?')),
                json_escape=True)
_SEARCH = embed(search.search_dfa('^ab|c[0-9]'), json_escape=True)


@_native_only
@pytest.mark.parametrize('node', [
    lit('abc'),
    EPS,
    alt(lit('ab'), lit('ac'), cat(lit('a'), rep(one(automaton.byte_set((48, 57))), 0, None))),
    chain(((lit('"a":1'), False), (lit('"ab":2'), True), (lit('"b":3'), False)), lit(',')),
    chain(((_DIGITS, False), (lit('x'), False), (_DIGITS, True)), lit(',')),
    rep(chain(((lit('ab'), False), (lit('ac'), False)), lit(';')), 0, None),
    rep(lit('ab'), 2, 5),
    rep(cat(lit(','), _DIGITS), 1, 3),
    cat(lit('"'), _STRING, lit('"')),
    cat(lit('"'), _SEARCH, lit('"'), rep(cat(lit(','), lit('"'), _SEARCH, lit('"')), 0, 2)),
    cat(lit('['), automaton.NON_ASCII, regex_parse.parse('[^a]*'), lit(']')),
    regex_parse.parse('(a|b)*abb[0-9]{2,4}'),
    # Separated lists `X (s X)*` (X built once natively; ComposeNfa::separated_list):
    # an embedded item, a multi-part item (a literal, flattened into the cat), a
    # two-part separator, a prefix before X, and near misses (another item, a
    # bounded or non-empty repetition) built as written.
    cat(lit('['), rep(cat(_STRING, rep(cat(lit(','), _STRING), 0, None)), 0, 1), lit(']')),
    cat(lit('['), rep(cat(lit('"a"'), _SEARCH, rep(cat(lit(','), lit('"a"'), _SEARCH), 0,
                                                     None)), 0, 1), lit(']')),
    cat(lit('x'), _DIGITS, rep(cat(lit(', '), _DIGITS), 0, None)),
    cat(lit('['), lit('ab'), rep(cat(lit(','), lit('ab')), 0, None), lit(']')),
    cat(_DIGITS, rep(cat(lit(','), lit('7')), 0, None)),
    cat(_DIGITS, rep(cat(lit(','), _DIGITS), 0, 3)),
    cat(_DIGITS, rep(cat(lit(','), _DIGITS), 1, None)),
])
def test_native_equals_the_python_nfa(node):
  for got, want in zip(_native(node), _tables(_python_subsets(node))):
    np.testing.assert_array_equal(got, want)


@_native_only
def test_native_leaves_counted_loops_to_automaton():
  assert _native(cat(lit('"'), rep(one(automaton.byte_set((97, 122))), 0, 40), lit('"'))) is None


@_native_only
def test_native_caps_and_errors_say_what_automaton_says():
  tiny = automaton.Limits(max_states=2)
  for node in (lit('abcdefghij'), alt(lit('ab'), lit('cd'), lit('ef'))):
    for limits in (tiny, automaton.Limits(max_states=4)):  # NFA cap, DFA cap
      with pytest.raises(RegexError) as want:
        _python_subsets(node, limits)
      with pytest.raises(RegexError) as got:
        _native(node, limits)
      assert str(got.value) == str(want.value) and type(got.value) is type(want.value)
  with pytest.raises(RegexError, match='matches nothing'):
    _native(cat(lit('a'), one(0)))
  # A count past int32: left to automaton, which stops at its NFA cap.
  huge = rep(embed(automaton.to_dfa(lit('ab'))), 0, 2**31)  # (not a counted loop)
  assert _native(huge, tiny) is None
  with pytest.raises(automaton.LimitError, match='NFA states'):
    automaton.to_dfa(huge, tiny)


@_native_only
def test_a_dfa_reentering_its_start_does_not_reenter_what_precedes_it():
  """x*(ab)*: the embedded DFA's back edge into its start must not lead back to
  the x loop it follows (`abx` is not a match)."""
  ab = embed(automaton.to_dfa(rep(lit('ab'), 0, None)))
  for node in (cat(rep(lit('x'), 0, None), ab),  # after a loop
               cat(rep(lit('x'), 0, None), rep(ab, 0, 2))):  # an optional copy
    native = automaton.to_dfa(node)
    python = _python_subsets(node)
    for dfa in (native, python):
      for s in ('', 'x', 'xxab', 'abab', 'xabab'):
        assert dfa.matches(s), s
      for s in ('abx', 'xabx', 'aba', 'xa'):
        assert not dfa.matches(s), s
    for got, want in zip(_tables(native), _tables(python)):
      np.testing.assert_array_equal(got, want)


@_native_only
@pytest.mark.parametrize('schema', SCHEMAS + [
    {'type': 'object', 'properties': {
        'a': {'type': 'array', 'items': {'type': 'string', 'pattern': '^[a-z]+$'}},
        'b': {'anyOf': [{'type': 'null'}, {'type': 'object', 'properties': {
            'c': {'type': 'string', 'format': 'email'}, 'd': {'enum': [1, 'x', None]}}}]},
        'e': {}}, 'required': ['a']},
])
def test_schemas_compile_to_the_same_tables_natively(schema, monkeypatch):
  def compile_fresh():
    automaton._to_dfa_cached.cache_clear()  # pylint: disable=protected-access
    constraints._compile_cached.cache_clear()  # pylint: disable=protected-access
    return constraints.compile_schema_report(schema)

  new, new_warnings = compile_fresh()
  monkeypatch.setattr(dfa_native, 'can_compose', lambda: False)
  old, old_warnings = compile_fresh()
  for got, want in zip(_tables(new), _tables(old)):
    np.testing.assert_array_equal(got, want)
  assert new_warnings == old_warnings
