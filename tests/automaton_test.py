"""Regex/DFA edge cases of the JSON-schema compiler: per-branch anchors, counted
loops next to an empty branch, unminimised long chains, clamped maxLength."""

import re

import jsonschema
import numpy as np
import pytest

from lattice.decode import automaton, constraints, regex_parse

TEXTS = ['', 'a', '1', '12', '12.5', '12.123456', 'x' * 3, 'y', 'ab' * 5 + 'c', 'd',
         '1' * 15, '1' * 16, 'abc', 'a' * 14]


@pytest.mark.parametrize('pattern', [r'^$|^\d{1,15}(?:\.\d{1,5})?$', r'a|b[|]c',
                                     r'(a|b)$|^c', r'^x{3,}$|^y$'])
def test_search_with_anchors_per_branch_matches_python(pattern):
  dfa = automaton.to_dfa(regex_parse.parse_search(pattern))
  for text in TEXTS + ['xa', 'cx', 'b|c', 'zz']:
    assert dfa.matches(text) == bool(re.search(pattern, text)), (pattern, text)


@pytest.mark.parametrize('pattern', [r'|\d{1,15}', r'|a{1,13}', r'(ab){2,20}c|d',
                                     r'a{20,30}'])
def test_counted_loop_beside_an_empty_branch_matches_python(pattern):
  dfa = automaton.to_dfa(regex_parse.parse(pattern))
  for n in range(0, 32):
    for c in ('a', '1', 'ab'):
      text = c * n
      assert dfa.matches(text) == bool(re.fullmatch(pattern, text)), (pattern, text)


def test_long_chain_left_unminimised_is_still_exact():
  # Each pattern branch is a long chain: past the Moore budget the DFA stays as built.
  schema = {'type': 'object', 'properties': {
      'a': {'type': 'string', 'maxLength': 200},
      'b': {'type': 'string', 'pattern': '^[0-9a-f]{64}$'}}, 'required': ['a', 'b']}
  dfa = constraints.compile_schema(schema)
  assert dfa.matches('{"a":"' + 'é' * 200 + '","b":"' + 'ab' * 32 + '"}')
  assert not dfa.matches('{"a":"' + 'x' * 201 + '","b":"' + 'ab' * 32 + '"}')
  assert not dfa.matches('{"a":"","b":"' + 'ab' * 31 + '"}')


def test_huge_max_length_is_clamped_soundly():
  schema = {'type': 'string', 'maxLength': 65535}
  opts = constraints.Options(max_length_unroll=40)
  dfa = constraints.compile_schema(schema, opts)
  assert dfa.matches('"' + 'x' * 40 + '"') and not dfa.matches('"' + 'x' * 41 + '"')
  jsonschema.validate('x' * 40, schema)
  # minLength above the cap stays exact.
  dfa = constraints.compile_schema({'type': 'string', 'minLength': 50, 'maxLength': 9999},
                                   opts)
  assert dfa.matches('"' + 'x' * 50 + '"') and not dfa.matches('"' + 'x' * 49 + '"')
  assert not dfa.matches('"' + 'x' * 51 + '"')


def test_intern_shares_equal_tables_and_checks_hits_exactly():
  a = automaton.compile_regex('ab|cd')
  copy = automaton.Dfa(a.delta_SxC.copy(), a.byte_class.copy(), a.accepting.copy())
  assert automaton.intern(copy) is a
  # Tables compared as C-order bytes, whatever their layout.
  fortran = automaton.Dfa(np.asfortranarray(a.delta_SxC), a.byte_class, a.accepting)
  assert automaton.intern(fortran) is a
  other = automaton.compile_regex('ab|ce')
  assert automaton.intern(other) is other
  # A key that hits with different tables (a hash collision) is not shared.
  key = next(k for k, v in automaton._INTERNED.items() if v is other)  # pylint: disable=protected-access
  fake = automaton.Dfa(np.zeros_like(other.delta_SxC), other.byte_class, other.accepting)
  automaton._INTERNED[key] = fake  # pylint: disable=protected-access
  try:
    assert automaton.intern(other) is other
  finally:
    automaton._INTERNED[key] = other  # pylint: disable=protected-access


def test_lit_is_the_bytes_in_order_and_cached():
  assert automaton.lit('a\u00e9') == automaton.cat(
      automaton.one(1 << 0x61), automaton.one(1 << 0xC3), automaton.one(1 << 0xA9))
  assert automaton.lit(b'ab') == automaton.lit('ab')
  assert automaton.lit('x') == automaton.one(1 << 0x78)
  assert automaton.lit('') == automaton.EPS
  assert automaton.lit('null') is automaton.lit('null')  # (Nodes are immutable.)
