"""`search_dfa`: pattern search as a DFA (first-match split, leading lookahead)."""

import itertools
import re

import pytest

from lattice.decode import regex_parse
from lattice.decode.jsonschema import search

_ALPHABET = 'abcy1-'
_STRINGS = [''.join(p) for n in range(5) for p in itertools.product(_ALPHABET, repeat=n)]


@pytest.mark.parametrize('pattern', [
    'ab', '(ab|c|y1)', '^a|b$|c', '^(ab|b)+$', 'a[b-c]{2}', '(a-|-b)1', '^$', 'b*'])
def test_search_dfa_equals_re_search(pattern):
  dfa = search.search_dfa(pattern)
  for s in _STRINGS:
    assert dfa.matches(s) == bool(re.search(pattern, s)), (pattern, s)


def test_leading_lookahead_is_exact_on_printable_ascii_and_never_writes_more():
  pattern = '^(?!ab|c)[a-c1-]+$'
  assert regex_parse.leading_lookahead(pattern) == ('ab|c', '^[a-c1-]+$')
  dfa = search.search_dfa(pattern)
  for s in _STRINGS:
    assert dfa.matches(s) == bool(re.search(pattern, s)), s
  # Outside printable ASCII nothing is written (dialects may read L differently).
  wide = search.search_dfa('^(?!ab|c).+$')
  assert re.search('^(?!ab|c).+$', 'b\u00e9') and not wide.matches('b\u00e9')
  assert wide.matches('bb') and not wide.matches('abb') and not wide.matches('c')
  assert regex_parse.leading_lookahead('a(?!b)') is None


@pytest.mark.parametrize('pattern', [r'^[^\s]*$', r'^\S+$', r'^[^\d\s]+$', r'^\W*$',
                                     r'^[^\w]+$'])
def test_negated_class_escapes_are_sound_in_both_dialects(pattern):
  # Python's Unicode \s holds \x1c-\x1f and non-ASCII spaces; its \d and \w
  # non-ASCII digits and letters (JSONSchemaBench's meta-runtime wrote '\x1f' for
  # `^[^\s]*$`). Nothing either dialect reads differently is accepted.
  dfa = search.search_dfa(pattern)
  chars = [chr(i) for i in range(128)] + ['\x85', '\xa0', '\u2003', '\u3000', '\u0663',
                                          'é', 'ж', '\ufeff']
  for ch in chars:
    if dfa.matches(ch):
      assert re.search(pattern, ch), (pattern, ch)
      assert ch.isascii()
  assert dfa.matches('a') or pattern in (r'^\W*$', r'^[^\w]+$')
