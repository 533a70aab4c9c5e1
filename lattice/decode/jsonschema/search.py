"""`pattern` (regex search semantics) as a DFA, built where the plain AST is slow.

`regex_parse.parse_search` reads an unanchored pattern X as `.*X.*`. The subset
construction of that is slow when X is a large alternation (a list of 130 zone
names: > 60 s), although `.*X` alone is fast: every state keeps all of X's
partial matches and, after the first match, again all of them beside the `.*`
that already accepts. Built here instead as D·`.*` where D is `.*X`'s DFA with the
moves out of its accepting states removed (the strings whose first match of X ends
at their end): every string holding a match has exactly one such shortest prefix,
so the language is the same, and the pieces compose without overlap.

A leading negative lookahead `^(?!L)R` (the one lookaround form supported) is the
DFA difference `^R` minus `L.*`, kept to printable ASCII, where every regex dialect
(Python, ECMA) reads L alike (the portable parse of L is a subset of its matches
elsewhere, so subtracting it is sound only there).
"""

from __future__ import annotations

import functools

from lattice.decode import automaton, dfa_ops, regex_parse
from lattice.decode.automaton import Dfa, alt, cat, embed, one, rep
from lattice.decode.regex_ast import ANY_STRING_CHAR, EPS

_ANYTHING = rep(ANY_STRING_CHAR, 0, None)


@functools.lru_cache(maxsize=1024)
def search_dfa(pattern: str, limits: automaton.Limits = automaton.DEFAULT_LIMITS) -> Dfa:
  """The DFA of the strings in which `pattern` is found (`re.search`, read
  portably as `regex_parse.parse_search`). Raises RegexError (unsupported or
  empty) or LimitError (past `limits`)."""
  split = regex_parse.leading_lookahead(pattern)
  if split is not None:
    banned, rest = split
    dfa = dfa_ops.intersect(search_dfa(rest, limits), _printable(limits), limits.max_states)
    bad = automaton.to_dfa(cat(regex_parse.parse(banned, portable=True), _ANYTHING), limits)
    return dfa_ops.difference(dfa, bad, limits.max_states)
  # Branches anchored alike as one alternation (`(a|b|c)` splits into three
  # unanchored branches: `.*(a|b|c)` is one small DFA, three `.*x` are not).
  groups: dict[tuple[bool, bool], list] = {}
  for anchored_start, node, anchored_end in regex_parse.search_parts(pattern):
    groups.setdefault((anchored_start, anchored_end), []).append(node)
  parts = []
  for (anchored_start, anchored_end), nodes in groups.items():
    head = cat(EPS if anchored_start else _ANYTHING, alt(*nodes))
    if anchored_end:
      parts.append(head)
    else:
      parts.append(cat(embed(_first_match(automaton.to_dfa(head, limits))), _ANYTHING))
  return automaton.to_dfa(alt(*parts), limits)


def _first_match(dfa: Dfa) -> Dfa:
  """`dfa` without moves out of its accepting states (every state still reaches
  one: the first accepting state on a path comes before any removed move)."""
  delta = dfa.delta_SxC.copy()
  delta[dfa.accepting] = -1
  return automaton.intern(Dfa(delta, dfa.byte_class, dfa.accepting))


@functools.lru_cache(maxsize=8)
def _printable(limits: automaton.Limits) -> Dfa:
  return automaton.to_dfa(rep(one(automaton.byte_set((0x20, 0x7E))), 0, None), limits)
