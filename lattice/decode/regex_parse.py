"""A recursive-descent parser of the regex subset `lattice.decode.automaton` compiles.

Python/ECMA syntax read over characters (with `re.ASCII` meaning for \\d \\w \\s);
each character is matched as its UTF-8 bytes. Supported: literals, `.`, classes
(`[...]`, `[^...]` with ASCII members and ranges), `\\d \\w \\s \\D \\W \\S`, escapes
(`\\n \\t \\xHH \\uHHHH`...), groups `(...)`, `(?:...)`, alternation, `* + ? {m}
{m,} {m,n}` (lazy/possessive suffixes: same language), `^` at the start and `$` at
the end. Anything else (lookaround, backreferences, `\\b`, inner anchors, named
groups, flags) raises `RegexError` naming the position.
"""

from __future__ import annotations

from lattice.decode.regex_ast import (ANY_CHAR, ANY_STRING_CHAR, EPS, Node, RegexError,
                                      _ASCII, alt, byte_set, cat, chars, lit, one, rep)
from lattice.decode.regex_ast import _CHAR_ESCAPES, _CLASS_ESCAPES  # pylint: disable=unused-import

# ASCII characters Python's Unicode `\\s` matches beyond [ \\t\\n\\r\\f\\v] (file, group,
# record and unit separators: str.isspace() is True for them).
_PY_SPACE_EXTRA = byte_set((0x1C, 0x1F))


class _Parser:
  """Recursive descent over Python regex syntax (the subset documented above)."""

  def __init__(self, pattern: str, portable: bool = False):
    self.p, self.i, self.portable = pattern, 0, portable
    self.anchored_start = self.anchored_end = False

  def error(self, msg: str) -> RegexError:
    return RegexError(f'regex {self.p!r} at {self.i}: {msg}')

  def peek(self) -> str | None:
    return self.p[self.i] if self.i < len(self.p) else None

  def take(self) -> str:
    if self.i >= len(self.p):
      raise self.error('unexpected end')
    self.i += 1
    return self.p[self.i - 1]

  def parse(self) -> Node:
    if self.peek() == '^':
      self.i += 1
      self.anchored_start = True
    node = self.alternation()
    if self.i != len(self.p):
      raise self.error(f'unexpected {self.p[self.i]!r}')
    return node

  def alternation(self) -> Node:
    parts = [self.sequence()]
    while self.peek() == '|':
      self.i += 1
      parts.append(self.sequence())
    return alt(*parts)

  def sequence(self) -> Node:
    parts = []
    while self.peek() not in (None, '|', ')'):
      if self.peek() == '$' and self.i == len(self.p) - 1:
        self.i += 1
        self.anchored_end = True
        break
      parts.append(self.quantified(self.atom()))
    return cat(*parts) if parts else EPS

  def number(self) -> int | None:
    start = self.i
    while self.peek() is not None and self.peek().isdigit():
      self.i += 1
    return int(self.p[start:self.i]) if self.i > start else None

  def quantified(self, node: Node) -> Node:
    while self.peek() in ('*', '+', '?', '{'):
      c = self.take()
      if c == '*':
        node = rep(node, 0, None)
      elif c == '+':
        node = rep(node, 1, None)
      elif c == '?':
        node = rep(node, 0, 1)
      else:
        lo = self.number()
        hi = lo
        if self.peek() == ',':
          self.i += 1
          hi = self.number()
        if lo is None or self.take() != '}':
          raise self.error('bad {m,n} repetition')
        node = rep(node, lo, hi)
      if self.peek() in ('?', '+'):  # Lazy/possessive: the same language.
        self.i += 1
    return node

  def atom(self) -> Node:
    c = self.take()
    if c == '(':
      if self.p.startswith('?:', self.i):
        self.i += 2
      elif self.peek() == '?':
        raise self.error('only (...) and (?:...) groups are supported')
      node = self.alternation()
      if self.take() != ')':
        raise self.error('missing )')
      return node
    if c == '[':
      return self.char_class()
    if c == '.':
      return ANY_CHAR if self.portable else chars(1 << 10, negated=True)
    if c == '\\':
      return self.escape(in_class=False)
    if c in '*+?{)':
      raise self.error(f'nothing to repeat or unbalanced {c!r}')
    if c in '^$':
      raise self.error('anchors are only allowed at the ends')
    return lit(c)

  def escape(self, in_class: bool) -> Node | int | str:
    """An escape: a Node outside classes; a mask or a character inside them."""
    c = self.take()
    if c.lower() in _CLASS_ESCAPES:
      mask = _CLASS_ESCAPES[c.lower()]
      if c.isupper():
        if in_class:
          raise self.error(f'\\{c} inside a class is not supported')
        # ASCII-only complement: Python's Unicode \\D \\W \\S exclude non-ASCII
        # digits/letters/spaces, ECMA's do not; the intersection is sound for both.
        # (Python's Unicode \\s also holds \\x1c-\\x1f: \\S leaves them out.)
        if self.portable:
          return one(_ASCII & ~mask & ~(_PY_SPACE_EXTRA if c == 'S' else 0))
        return chars(mask, negated=True)
      return mask if in_class else one(mask)
    if c in _CHAR_ESCAPES:
      ch = chr(_CHAR_ESCAPES[c])
    elif c in 'xu':
      width = 2 if c == 'x' else 4
      digits = self.p[self.i:self.i + width]
      if len(digits) != width or any(d not in '0123456789abcdefABCDEF' for d in digits):
        raise self.error(f'bad \\{c} escape')
      self.i += width
      ch = chr(int(digits, 16))
    elif c.isalnum():
      raise self.error(f'unsupported escape \\{c}')
    else:
      ch = c
    return ch if in_class else lit(ch)

  def char_class(self) -> Node:
    negated = self.peek() == '^'
    if negated:
      self.i += 1
    mask, extra, first, escapes = 0, [], True, set()
    while True:
      c = self.take()
      if c == ']' and not first:
        break
      first = False
      if c == '\\':
        escapes.add(self.p[self.i])
        item = self.escape(in_class=True)
        if isinstance(item, int):
          mask |= item
          continue
        c = item
      if self.peek() == '-' and self.p[self.i + 1:self.i + 2] not in ('', ']'):
        self.i += 1
        hi = self.take()
        if hi == '\\':
          hi = self.escape(in_class=True)
          if isinstance(hi, int):
            raise self.error('class escape as a range end')
        if ord(hi) < ord(c) or ord(hi) > 127:
          raise self.error(f'bad or non-ASCII range {c}-{hi}')
        mask |= byte_set((ord(c), ord(hi)))
      elif ord(c) < 128:
        mask |= 1 << ord(c)
      else:
        extra.append(c)
    if negated and self.portable and escapes & set('dws'):
      # `[^\\s...]`: Python reads \\d \\w \\s as Unicode classes (non-ASCII digits,
      # letters, spaces and \\x1c-\\x1f), ECMA as ASCII ones: the complement both
      # agree on is ASCII, without \\x1c-\\x1f where \\s is in the class.
      if extra:
        raise self.error('negated classes with non-ASCII members are not supported')
      return one(_ASCII & ~mask & ~(_PY_SPACE_EXTRA if 's' in escapes else 0))
    return chars(mask, negated, tuple(extra))


def parse(pattern: str, portable: bool = False) -> Node:
  """The AST of `re.fullmatch(pattern, ., re.ASCII)` (see the module docstring);
  `portable`: as in `parse_search`."""
  return _Parser(pattern, portable).parse()


def parse_search(pattern: str) -> Node:
  """The AST of the strings in which `pattern` is found (`re.search`, the JSON
  Schema `pattern` semantics): an unanchored side gets any characters.

  Read portably: `.` also excludes \\r, U+2028 and U+2029 (ECMA) and \\D \\W \\S
  are ASCII-only (Python's Unicode classes), so every match is one in ECMA-262,
  Python `re` and `re.ASCII` alike.
  """
  anything = rep(ANY_STRING_CHAR, 0, None)
  return alt(*(cat(EPS if a else anything, node, EPS if z else anything)
               for a, node, z in search_parts(pattern)))


def search_parts(pattern: str) -> list[tuple[bool, Node, bool]]:
  """`pattern`'s top-level branches as (anchored at the start, the branch's AST
  read portably, anchored at the end); `parse_search` is their union with any
  characters on each unanchored side."""
  inner = _whole_group(pattern)
  if inner is not None:  # `(^\S+$)`: an unquantified group around it all is transparent.
    return search_parts(inner)
  branches = _top_level_branches(pattern)
  if len(branches) > 1:  # `^$|^\d+$`: each branch anchored on its own.
    return [part for b in branches for part in search_parts(b)]
  parser = _Parser(pattern, portable=True)
  node = parser.parse()
  return [(parser.anchored_start, node, parser.anchored_end)]


def leading_lookahead(pattern: str) -> tuple[str, str] | None:
  """(L, R) when `pattern` is `^(?!L)R` (a negative lookahead right after the start
  anchor, none elsewhere at the top), else None."""
  if not pattern.startswith('^(?!'):
    return None
  for i, c, depth in _outside_classes(pattern):
    if c == ')' and depth == 0:
      return pattern[4:i], '^' + pattern[i + 1:]
  return None


def _outside_classes(pattern: str):
  """(index, char, depth) of each character of `pattern` outside escapes and classes.

  depth counts the groups open around the character: a `(` reports the depth before
  it opens, a `)` the depth after it closes, so a top-level group's parentheses
  both report 0.
  """
  depth, i, in_class = 0, 0, False
  while i < len(pattern):
    c = pattern[i]
    if c == '\\':
      i += 2
      continue
    if in_class:
      in_class = c != ']'
    elif c == '[':
      in_class = True
      if pattern[i + 1:i + 2] == '^':
        i += 1
      if pattern[i + 1:i + 2] == ']':  # A leading `]` is a member.
        i += 1
    else:
      depth -= c == ')'
      yield i, c, depth
      depth += c == '('
    i += 1


def _whole_group(pattern: str) -> str | None:
  """X when `pattern` is `(X)` or `(?:X)` with that group closing at its very end."""
  if pattern.startswith('(?:'):
    body = 3
  elif pattern.startswith('(') and not pattern.startswith('(?'):
    body = 1
  else:
    return None
  for i, c, depth in _outside_classes(pattern):
    if c == ')' and depth == 0:
      return pattern[body:i] if i == len(pattern) - 1 else None
  return None


def _top_level_branches(pattern: str) -> list[str]:
  """`pattern` split at the `|` outside groups, classes and escapes."""
  out, start = [], 0
  for i, c, depth in _outside_classes(pattern):
    if c == '|' and depth == 0:
      out.append(pattern[start:i])
      start = i + 1
  return out + [pattern[start:]]
