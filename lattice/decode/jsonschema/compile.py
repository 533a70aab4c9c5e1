"""JSON Schema (drafts 4 to 2020-12) -> the byte-regex AST of compact JSON texts.

Output policy (what the decoder may write): no whitespace; object members in
schema order (declared properties first, optional ones skippable, then any extra
members); strings without `\\u` escapes (JSON escapes a character needs are
written one fixed way); numbers as in `numbers`. Every text of the AST validates
(soundness); what is left out is listed in `lattice.decode.jsonschema` (e.g. extra
members when `additionalProperties` is absent, leap days).

`Options.max_ref_depth` bounds recursive `$ref`s (`Compiler.ref_blocked`: per
reference, and re-entries of any reference on one path): at the bound a recursive
subschema is left out where the instance may omit it (optional property, array
that may be empty, other `anyOf` branch), otherwise SchemaError. `oneOf` keeps the
branches that provably exclude every other branch (different types, a required
property whose `const`/`enum` the other branch forbids, one that it disallows or
whose additionalProperties schema excludes the value, more required members than
its maxProperties, one it requires that the branch never writes, or every branch
of the branch's own anyOf/oneOf excluding it), narrowed where that makes them
exclusive (a name another branch requires is never written, and then only
objects; a member of the branch's own that another branch's
`additionalProperties: false` forbids is always written; the JSON types another
branch admits are never written).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

from lattice.decode import automaton, dfa_ops, regex_ast, regex_parse
from lattice.decode.regex_ast import ANY_STRING_CHAR
from lattice.decode.automaton import Node, alt, cat, lit, one, rep
from lattice.decode.jsonschema import (common, containers, formats, numbers, resolve,
                                        rewrite, search)
from lattice.decode.jsonschema.resolve import (SchemaError, merge, ptr, rebase_refs,
                                               resolve_pointer, strip)

TYPES = ('null', 'boolean', 'object', 'array', 'number', 'string', 'integer')
# A string character: printable ASCII but `"` and `\`, any non-ASCII character, or
# a short escape (no \u: a surrogate pair would count as two characters).
JSON_CHAR = alt(one(automaton.byte_set((0x20, 0x7E)) & ~(1 << 0x22) & ~(1 << 0x5C)),
                automaton.NON_ASCII,
                cat(lit('\\'), one(sum(1 << ord(c) for c in '"\\/bfnrt'))))
# Characters of extra member names: printable ASCII but `"` and `\`, so a name has
# one spelling and cannot collide with a declared one.
_KEY_CHAR = common.KEY_CHAR


@dataclasses.dataclass(frozen=True)
class Options:
  """Compiler settings (all part of the compile cache key)."""
  max_ref_depth: int = 3          # expansions of one $ref on a path
  any_depth: int = 2              # nesting of free-form values ({} / no type)
  max_items_unroll: int = 64      # bounded arrays: maxItems above this is clamped
  max_length_unroll: int = 256    # strings: maxLength above this is clamped (sound)
  extra_properties: bool = False  # write extra members when additionalProperties is absent
  max_object_states: int = 20_000  # an object's members past this: largest optional ones left out
  embed_max_states: int = 4_000   # larger members stay ASTs (`Compiler.minimal`)
  # (4000: WashingtonPost's nested ANS schemas time out with every member a DFA;
  # 1000 / 4000 / 16000 gave about the same medians on Github_ultra,
  # WashingtonPost, JsonSchemaStore and Github_hard at 30 a subset.)
  limits: automaton.Limits = automaton.DEFAULT_LIMITS
  # False: an optional member or an anyOf/oneOf branch the compiler cannot enforce
  # (unsupported keyword or regex, remote $ref, size cap) is left out and reported
  # in `Compiler.warnings` (sound: fewer texts); True: a SchemaError, as anywhere.
  strict: bool = False


_dumps = common.dumps


_nonneg_int = common.nonneg_int


class Compiler:
  """One schema's compilation; `node(self.root)` is the AST (None: no instance fits).

  `self.root` is the schema with references inside nested `$id` resources made
  relative to the document root (`resolve.rebase_refs`).
  """

  def __init__(self, root: Any, opts: Options):
    self.root, self.opts = rebase_refs(root), opts
    dialect = root.get('$schema') if isinstance(root, dict) else None
    # Drafts 4-7: a $ref's sibling keywords are ignored by validators.
    self.old_draft = isinstance(dialect, str) and any(
        d in dialect for d in ('draft-03', 'draft-04', 'draft-06', 'draft-07'))
    self.ref_stack: list[str] = []
    # node() per (subschema text, reference context): a definition used at k
    # places (or a subschema inlined k times) is compiled once.
    self._memo: dict[tuple, Node | None] = {}
    self._ref_refs: dict[str, frozenset] = {}
    # `_reach` per set of references (frozensets: their hashes are kept).
    self._reached: dict[frozenset, frozenset] = {}
    # `resolve_pointer(self.root, ref)` per reference that resolves (the root is
    # never changed, so the same object every time).
    self._targets: dict[str, Any] = {}
    # Subschemas' keys (equal exactly when their JSON texts are), bottom-up.
    self._keys = common.TreeKeys()
    # Per subschema object (by id, the object held): its key and reachable refs.
    self._texts: dict[int, tuple] = {}
    # Per AST node (by id, the node held): `containers.approx_states`.
    self.sizes: dict[int, tuple] = {}
    # Per AST node (by id, the node held): `minimal`'s result.
    self._minimal: dict[int, tuple] = {}
    # Per (branch, base) objects (by id, both held): `disjoint._prep`'s raw form.
    self.raw_branches: dict[tuple, tuple] = {}
    # Warnings for the caller (e.g. optional members left out by `max_object_states`).
    self.warnings: list[str] = []
    # One schema's whole compilation shares `Limits.max_seconds` (each `to_dfa`
    # also stops at it): checked at every subschema and member DFA.
    self.deadline = time.perf_counter() + opts.limits.max_seconds

  def check_time(self, where: str) -> None:
    """Raises SchemaError once the compilation has run past `Limits.max_seconds`."""
    if time.perf_counter() > self.deadline:
      raise SchemaError(where, 'schema', f'compiling took over '
                        f'{self.opts.limits.max_seconds} s (Limits.max_seconds)')

  # -- entry, references, combinators ---------------------------------------------------
  def node(self, s: Any, where: str = '', depth: int = 0) -> Node | None:
    self.check_time(where)
    if s is True or s == {}:
      return self.any_value(self.opts.any_depth)
    if s is False:
      return None
    if not isinstance(s, dict):
      raise SchemaError(where, 'schema', f'expected an object or boolean, got {s!r}')
    key = self._memo_key(s)
    if key is None:
      return self._node(s, where, depth)
    if key not in self._memo:
      self._memo[key] = self._node(s, where, depth)
    return self._memo[key]

  def _memo_key(self, s: dict) -> tuple | None:
    """What `node(s)` depends on: the subschema's text (as its `common.TreeKeys`
    key: equal exactly when the texts are) and, for the references reachable from
    it, how often each is on the path (and the path's re-entries): the recursion
    bound (`ref_blocked`) reads nothing else. None: not memoised (a reference that
    does not resolve: `node` raises the error itself; a value JSON cannot hold)."""
    got = self._texts.get(id(s))
    if got is None:
      try:
        text = self._keys.key(s)
        got = (s, text, self._reach(self._keys.refs(s)))
      except (SchemaError, TypeError, ValueError, RecursionError):
        got = (s, None, None)
      self._texts[id(s)] = got  # Holding `s`: its id is not reused meanwhile.
    _, text, reach = got
    if text is None:
      return None
    if not reach:
      return (text,)
    stack = self.ref_stack
    # (How often each reachable reference is on the path, as the sorted multiset of
    # those on it: equal exactly when the counts are.)
    return (text, tuple(sorted([r for r in stack if r in reach])),
            len(stack) - len(set(stack)))

  def _reach(self, refs: frozenset) -> frozenset:
    """`refs` (the references inside a subschema) and, transitively, the references
    inside their targets (memoised per `refs`)."""
    got = self._reached.get(refs)
    if got is None:
      got = self._reached[refs] = self._reach_uncached(refs)
    return got

  def _reach_uncached(self, refs: frozenset) -> frozenset:
    todo = list(refs)
    out: set[str] = set()
    while todo:
      ref = todo.pop()
      if ref in out:
        continue
      out.add(ref)
      if ref not in self._ref_refs:
        self._ref_refs[ref] = self._keys.refs(self.target(ref, ''))
      todo.extend(self._ref_refs[ref])
    return frozenset(out)

  def target(self, ref: Any, where: str) -> Any:
    """The subschema `ref` names in `self.root` (`resolve_pointer`, memoised).
    Raises SchemaError as `resolve_pointer`."""
    got = self._targets.get(ref) if isinstance(ref, str) else None
    if got is None:
      got = resolve_pointer(self.root, ref, where)
      if isinstance(ref, str) and got is not None:
        self._targets[ref] = got
    return got

  def _node(self, s: dict, where: str, depth: int) -> Node | None:
    s = strip(s)
    if '$ref' in s:
      ref = s['$ref']
      if self.ref_blocked(ref):
        return None  # Recursion bound: the caller leaves this value out if it can.
      target = self.target(ref, where)
      rest = {k: v for k, v in s.items() if k != '$ref'}
      self.ref_stack.append(ref)
      try:
        return self.node(merge(target, rest, where) if rest else target, where, depth)
      finally:
        self.ref_stack.pop()
    for k in ('$dynamicRef', '$recursiveRef'):
      if k in s:
        raise SchemaError(where, k, 'not supported')
    s = rewrite.rewrite(self, s, where)  # if, contains, not, ...: as subset schemas.
    if not isinstance(s, dict):
      return self.node(s, where, depth)
    if 'oneOf' in s and _nested_one_of(self, s.get('allOf'), where):
      # Two different oneOfs (one in an allOf member) cannot merge into one: the
      # branches first, each then merged with the allOf.
      return self.branches(s, 'oneOf', where, depth)
    if 'allOf' in s:
      subs = s['allOf']
      if not isinstance(subs, list) or not subs:
        raise SchemaError(where, 'allOf', 'expected a non-empty array')
      # The parent's unevaluatedProperties sees what every subschema evaluates.
      merged = {k: v for k, v in s.items() if k not in ('allOf', 'unevaluatedProperties')}
      for i, sub in enumerate(subs):
        merged = merge(merged, self.deref(sub, ptr(where, 'allOf', i)),
                       ptr(where, 'allOf', i))
      if 'unevaluatedProperties' in s and isinstance(merged, dict):
        merged = {**merged, 'unevaluatedProperties': merge(
            merged.get('unevaluatedProperties', True), s['unevaluatedProperties'], where)}
      return self.node(merged, where, depth)
    if 'anyOf' in s:
      return self.branches(s, 'anyOf', where, depth)
    if 'oneOf' in s:
      return self.branches(s, 'oneOf', where, depth)
    return self.typed(s, where, depth)

  def droppable(self, e: SchemaError) -> bool:
    """Whether a part that raised `e` may be left out where the instance can omit
    it: not `Options.strict`, and `e` is not a malformed schema (`_droppable`)."""
    return not self.opts.strict and _droppable(e)

  def ref_blocked(self, ref: str) -> bool:
    """Whether expanding `ref` here passes the recursion bound: `ref` already
    expanded `max_ref_depth` times on this path, or already on the path when the
    path holds `max_ref_depth - 1` re-entries of any references. The second part
    bounds cycles through several definitions (A -> B -> C -> A ...), whose
    expansions would otherwise multiply (each definition up to the bound, every
    one of them at every place it recurs): what is cut is a value the instance
    may leave out (see the module docstring), so the bound is sound."""
    stack = self.ref_stack
    if ref not in stack:
      return False
    return (stack.count(ref) >= self.opts.max_ref_depth
            or len(stack) - len(set(stack)) >= self.opts.max_ref_depth - 1)

  def deref(self, s: Any, where: str, bounded: bool = True) -> Any:
    """`s` with a top-level `$ref` inlined (for merging), recursion-bounded; with
    `bounded=False` (reading what validates, not what is written) only a cycle of
    bare references stops it."""
    seen = set()
    while isinstance(s, dict) and '$ref' in s:
      if self.ref_blocked(s['$ref']) if bounded else s['$ref'] in seen:
        return s
      seen.add(s['$ref'])
      rest = {k: v for k, v in s.items() if k != '$ref'}
      target = self.target(s['$ref'], where)
      s = merge(target, rest, where) if rest else target
    return s

  def branches(self, s: dict, key: str, where: str, depth: int) -> Node | None:
    subs = s[key]
    if not isinstance(subs, list) or not subs:
      raise SchemaError(where, key, 'expected a non-empty array')
    base = {k: v for k, v in s.items() if k != key}
    original, subs = subs, list(subs)
    if key == 'oneOf':
      keep = []
      for i, b in enumerate(original):
        # Against the branches as written (never the narrowed ones).
        b = self._exclusive(b, [c for j, c in enumerate(original) if j != i], base, where)
        if b is not None:
          subs[i] = b
          keep.append(i)
      if not keep:
        raise SchemaError(where, 'oneOf', 'no branch provably excludes the others')
    else:
      keep = range(len(subs))
    parts, dropped = [], []
    for i in keep:
      # Not inlined here: node() expands a `$ref` on its ref_stack, which bounds
      # recursion (inlining a recursive branch would recurse without bound).
      sub = subs[i]
      try:
        parts.append(self.node(merge(base, sub, ptr(where, key, i)), ptr(where, key, i),
                               depth))
      except SchemaError as e:
        # A branch the compiler cannot enforce (an unsupported keyword or regex, a
        # size cap) is left out when another branch can be written: sound (anyOf:
        # the others validate; oneOf: each kept branch provably excludes it), and
        # reported. Malformed schemas and the time cap still raise.
        if len(keep) == 1 or not self.droppable(e):
          raise
        dropped.append((i, e))
    parts = [p for p in parts if p is not None]
    if dropped:
      if not parts:
        raise dropped[0][1]
      self.warnings.append(
          f'{where or "/"}: {key} branches {[i for i, _ in dropped]} are never written '
          f'({"; ".join(str(e) for _, e in dropped)})')
    return alt(*parts) if parts else None

  def _exclusive(self, b: Any, others: list, base: dict, where: str) -> Any:
    """Branch `b`, narrowed so that nothing written validates against `others`
    (a name another branch requires is never written; a member of b's own that
    another branch's `additionalProperties: false` forbids is always written), or
    None if unprovable."""
    from lattice.decode.jsonschema import disjoint  # pylint: disable=g-import-not-at-top
    drops, banned, adds = {}, set(), {}
    for c in others:
      if _excludes(self, b, c, base):
        continue
      bd, cd = self.deref(b, where), self.deref(c, where)
      if not isinstance(bd, dict) or not isinstance(cd, dict):
        return None
      mine = set(bd.get('required', [])) | set(base.get('required', []))
      names = [q for q in cd.get('required', []) if isinstance(q, str) and q not in mine]
      if names:
        drops[names[0]] = False
        continue
      # c allows no members but its own: b always writes one of its own that c
      # does not declare (`oneOf` of single-member objects).
      own = [] if cd.get('additionalProperties') is not False or cd.get(
          'patternProperties') else [q for q, v in bd.get('properties', {}).items()
                                     if v is not False and q not in cd.get('properties', {})]
      if own:
        adds.setdefault(own[0], None)
        continue
      # Else: never write the JSON types c admits (c's own keywords bound them; an
      # integer-only c also bans numbers, which may be written as integers).
      their = disjoint.admitted_types(self, c, base)
      if their >= set(TYPES):
        return None
      banned |= their | ({'number'} if 'integer' in their else set())
    if not drops and not banned and not adds:
      return b
    narrowed = self.deref(b, where)
    if adds:
      narrowed = merge(narrowed, {'type': 'object', 'required': list(adds)}, where)
    if drops:
      narrowed = merge(narrowed, {'properties': drops}, where)
    if banned:
      narrowed = merge(narrowed, {'type': [t for t in TYPES if t not in banned]}, where)
    ok = all(_excludes(self, narrowed, c, base) for c in others)
    if not ok and drops:
      # A `required` excludes only objects (a non-object passes it vacuously):
      # narrowed to objects too.
      narrowed = merge(narrowed, {'type': 'object'}, where)
      ok = all(_excludes(self, narrowed, c, base) for c in others)
    return narrowed if ok else None

  # -- types -----------------------------------------------------------------------------
  def typed(self, s: dict, where: str, depth: int) -> Node | None:
    types = s.get('type', list(TYPES[:-1]))
    types = [types] if isinstance(types, str) else types
    if not isinstance(types, list) or any(t not in TYPES for t in types):
      raise SchemaError(where, 'type', f'expected one of {TYPES} or a list, got {types!r}')
    if 'integer' in types and 'number' in types:
      types = [t for t in types if t != 'integer']
    if 'enum' in s or 'const' in s:
      return self.literals(s, where)
    parts = []
    for t in dict.fromkeys(types):
      node = getattr(self, 't_' + t)(s, where, depth)
      if node is not None:
        parts.append(node)
    return alt(*parts) if parts else None

  def literals(self, s: dict, where: str) -> Node | None:
    values = [s['const']] if 'const' in s else s['enum']
    if 'enum' in s and not isinstance(s['enum'], list):
      raise SchemaError(where, 'enum', f'expected an array, got {s["enum"]!r}')
    if 'const' in s and 'enum' in s:  # (e.g. merged by allOf or if/then): both hold.
      values = [v for v in values if any(resolve.json_equal(v, e) for e in s['enum'])]
    rest = {k: v for k, v in s.items() if k not in ('enum', 'const')}
    values = [v for v in values if _writable(v)]
    if set(rest) - {'type'}:
      # Members must satisfy the rest of the schema: kept when the compiled rest
      # (a sound subset) writes them exactly.
      node = self.node(rest, where)
      if node is None:
        return None
      dfa = automaton.to_dfa(node, self.opts.limits)
      ok = [v for v in values if dfa.matches(_dumps(v))]
    else:
      ok = [v for v in values if _has_type(v, rest.get('type'))]
    return alt(*(lit(_dumps(v)) for v in ok)) if ok else None

  def t_null(self, s, where, depth):
    return lit('null')

  def t_boolean(self, s, where, depth):
    return alt(lit('true'), lit('false'))

  def t_integer(self, s, where, depth):
    m = s.get('multipleOf')
    if isinstance(m, float) and m > 0 and _integers_are_multiples(m):
      # Fractional step: integers in +-_INT_MULTIPLE_BOUND, each checked to pass
      # `instance / m` integral in float64 (what validators compute).
      s = merge({k: v for k, v in s.items() if k != 'multipleOf'},
                {'minimum': -_INT_MULTIPLE_BOUND, 'maximum': _INT_MULTIPLE_BOUND}, where)
    return numbers.integer_node(s, self.multiple(s, where, integer=True), self.opts.limits)

  def t_number(self, s, where, depth):
    if 'multipleOf' in s:
      return self.t_integer(s, where, depth)
    for k in ('minimum', 'maximum'):
      if k in s and (isinstance(s[k], bool) or not isinstance(s[k], (int, float))):
        raise SchemaError(where, k, f'expected a number, got {s[k]!r}')
    return numbers.number_node(s)

  def multiple(self, s: dict, where: str, integer: bool) -> int | None:
    """`multipleOf` as the integer step integers must be multiples of."""
    m = s.get('multipleOf')
    if m is None:
      return None
    if isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0:
      raise SchemaError(where, 'multipleOf', f'expected a positive number, got {m!r}')
    if float(m).is_integer() and m <= 10_000:
      return int(m)
    # 2^-k: every integer is a multiple, exactly in floating point too.
    if m < 1 and float(1 / m).is_integer() and (int(1 / m) & (int(1 / m) - 1)) == 0:
      return 1
    raise SchemaError(where, 'multipleOf', f'{m!r} is not supported (integers up to '
                      f'10000 and powers of 1/2)')

  def t_string(self, s, where, depth):
    lo = _nonneg_int(s, 'minLength', where, 0)
    hi = _nonneg_int(s, 'maxLength', where)
    if hi is not None and hi < lo:
      return None
    if hi is not None and hi > self.opts.max_length_unroll:
      # The unrolled tables hold a copy of the character's states per counted
      # character (the byte vocabulary's counter does not, but the size estimates
      # in containers.py still assume unrolling): write at most this many (still
      # valid); minLength above the cap stays exact.
      hi = max(lo, self.opts.max_length_unroll)
    pats = s.get('pattern', [])
    pats = pats if isinstance(pats, list) else [pats]
    fmts = s.get('format', [])
    fmts = fmts if isinstance(fmts, list) else [fmts]
    regexes = []
    for p in pats:
      if not isinstance(p, str):
        raise SchemaError(where, 'pattern', f'expected a string, got {p!r}')
      regexes.append((regex_parse.parse_search, p, 'pattern'))
    for f in fmts:
      if f in formats.UNSUPPORTED:
        raise SchemaError(where, 'format', f'{f!r} is not supported')
      if formats.FORMATS.get(f):
        regexes.append((_portable, formats.FORMATS[f], 'format'))
    excluded = s.get(rewrite.NOT_PATTERN, [])
    if not regexes and not excluded:
      return cat(lit('"'), rep(JSON_CHAR, lo, hi), lit('"'))
    dfa = self.string_dfa(regexes, lo, hi, where, excluded)
    return None if dfa is None else cat(lit('"'), automaton.embed(dfa, json_escape=True),
                                        lit('"'))

  def string_dfa(self, regexes, lo, hi, where, excluded=()) -> automaton.Dfa | None:
    """Raw (unescaped) strings matching every regex, with lo..hi characters, and
    (when `excluded` patterns are given) of printable ASCII, matching none of them:
    on printable ASCII every dialect (Python, ECMA) reads a pattern alike, so the
    difference with the portable parse is sound."""
    limits = self.opts.limits
    dfa = None
    bounded = False  # Some regex already writes at most `hi` characters.
    for parse, p, key in regexes:
      try:
        if parse is regex_parse.parse_search and (
            hi is None or regex_parse.leading_lookahead(p) is not None):
          d = search.search_dfa(p, limits)  # No length cap to fold into the AST.
          dfa = d if dfa is None else self._meet(dfa, d, where, key)
          if dfa is None:
            return None
          continue
        node = parse(p)
        if hi is not None:
          # Unbounded repetitions capped so the regex itself stays within maxLength
          # (a subset, sound): no regex x length product, which is large (email
          # with maxLength 256: 34k states).
          capped = regex_ast.cap_length(node, hi)
          if capped is not None:
            node, bounded = capped, True
        d = automaton.to_dfa(node, limits)
      except automaton.LimitError as e:
        raise SchemaError(where, key, str(e)) from e
      except automaton.RegexError as e:
        if 'nothing' in str(e):  # Matches no string.
          return None
        raise SchemaError(where, key, f'unsupported regex: {e}') from e
      dfa = d if dfa is None else self._meet(dfa, d, where, key)
      if dfa is None:
        return None
    if dfa is None and not (lo or hi is not None) and not excluded:
      return automaton.to_dfa(rep(ANY_STRING_CHAR, 0, None), limits)
    if bounded:
      hi = None
    if lo or hi is not None or dfa is None:
      length = automaton.to_dfa(rep(ANY_STRING_CHAR, lo, hi), limits)
      dfa = length if dfa is None else self._meet(dfa, length, where, 'maxLength')
    if excluded and dfa is not None:
      dfa = self._meet(dfa, _printable_strings(limits), where, 'not')
      for p in excluded:
        if dfa is None:
          break
        try:
          bad = search.search_dfa(p, limits)
        except automaton.LimitError as e:
          raise SchemaError(where, 'not', str(e)) from e
        except automaton.RegexError as e:
          if 'nothing' in str(e):  # Matches no string.
            continue  # Nothing to leave out.
          raise SchemaError(where, 'not', f'unsupported regex: {e}') from e
        try:
          dfa = dfa_ops.difference(dfa, bad, limits.max_states)
        except automaton.LimitError as e:
          raise SchemaError(where, 'not', str(e)) from e
        except automaton.RegexError:
          return None  # Every string left matches the pattern.
    return dfa

  def _meet(self, a, b, where, key):
    try:
      return dfa_ops.intersect(a, b, self.opts.limits.max_states)
    except automaton.LimitError as e:
      raise SchemaError(where, key, str(e)) from e
    except automaton.RegexError:
      return None

  def minimal(self, node: Node) -> Node:
    """`node` as its own minimal DFA, embedded: the parent's composition (or subset
    construction) and minimisation then see each member at its minimal size (left
    unminimised, nested members compound: four JSONSchemaBench schemas then pass
    `Limits.max_states`).

    A member past `Options.embed_max_states` (estimated: byte sets and embedded
    states) stays an AST: built as a DFA at every nesting level, a deep schema
    paid levels x its size in composition and minimisation passes; left in the
    AST, the final `to_dfa` composes it once (a WashingtonPost schema: > 10 s ->
    2.3 s).

    A node holding a long counted repetition (`maxLength` above
    `Limits.region_min`) is kept as it is: embedded, its repetition would be
    unrolled here and every enclosing level would determinise the unrolled copies
    again; left in the AST, the final `to_dfa` builds it as one counted loop and
    unrolls it once (a Snowplow schema: 2.7 s -> 0.2 s, same minimal DFA).
    """
    got = self._minimal.get(id(node))
    if got is not None:  # (A memoised subschema's node, used again.)
      return got[1]
    out = self._minimal_uncached(node)
    self._minimal[id(node)] = (node, out)  # Holding `node`: its id stays its own.
    return out

  def _minimal_uncached(self, node: Node) -> Node:
    if node[0] in ('set', 'dfa') or node[0] == 'cat' and all(p[0] == 'set' for p in node[1]):
      return node
    if not _embeddable(node, self.opts.limits.region_min, self.opts.embed_max_states):
      return node
    self.check_time('')
    try:
      return automaton.embed(automaton.to_dfa(node, self.opts.limits))
    except automaton.LimitError as e:
      raise SchemaError('', 'schema', str(e)) from e
    finally:
      self.check_time('')

  def t_array(self, s, where, depth):
    return containers.array(self, s, where, depth)

  def t_object(self, s, where, depth):
    return containers.obj(self, s, where, depth)

  def any_value(self, depth: int) -> Node:
    """Any JSON value nesting at most `depth` containers (compact, no \\u escapes)."""
    return _any_value(depth)


def _embeddable(node: Node, region_min: int, budget: int) -> bool:
  """Whether `minimal` embeds `node` as a DFA: it holds no repetition that
  `automaton.to_dfa` builds as a counted loop (a one-character body, a bound above
  `region_min`) and at most `budget` byte sets and embedded DFA states (one walk:
  `automaton._size_at_most`). It was two walks, the loop test through an lru_cache
  whose key hashed each subtree again at every level of the recursion (~0.5 ms a
  schema on JsonSchemaStore's middle half)."""
  return automaton._size_at_most(  # pylint: disable=protected-access
      node, budget, loop_above=region_min)


def _any_value_node(depth: int) -> Node:
  scalar = alt(lit('null'), lit('true'), lit('false'), numbers.NUMBER,
               cat(lit('"'), rep(JSON_CHAR, 0, None), lit('"')))
  if depth <= 0:
    return scalar
  inner = _any_value(depth - 1)
  key = cat(lit('"'), rep(one(_KEY_CHAR), 0, None), lit('"'), lit(':'))
  obj = cat(lit('{'), rep(cat(key, inner, rep(cat(lit(','), key, inner), 0, None)), 0, 1),
            lit('}'))
  arr = cat(lit('['), rep(cat(inner, rep(cat(lit(','), inner), 0, None)), 0, 1), lit(']'))
  return alt(scalar, arr, obj)


@functools.lru_cache(maxsize=8)
def _any_value(depth: int) -> Node:
  return automaton.embed(automaton.to_dfa(_any_value_node(depth)))


_INT_MULTIPLE_BOUND = 100_000


@functools.lru_cache(maxsize=64)
def _integers_are_multiples(m: float) -> bool:
  """Whether every integer n with |n| <= _INT_MULTIPLE_BOUND has n / m integral in
  float64 (`jsonschema`'s multipleOf test for a float step; mathematically true
  for any m = 1/k, k integer, e.g. 0.01), checked for all of them."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  n = np.arange(-_INT_MULTIPLE_BOUND, _INT_MULTIPLE_BOUND + 1, dtype=np.float64)
  q = n / m
  inv = 1 / m
  return bool(abs(inv - round(inv)) < 1e-9 * inv and np.all(q == np.floor(q)))


@functools.lru_cache(maxsize=8)
def _printable_strings(limits: automaton.Limits) -> automaton.Dfa:
  return automaton.to_dfa(rep(one(automaton.byte_set((0x20, 0x7E))), 0, None), limits)


def _droppable(e: SchemaError) -> bool:
  """Whether `e` says a feature is unsupported or a size cap was passed (not a
  malformed schema, nor the time cap, which ends the whole compilation)."""
  msg = str(e)
  if 'Limits.max_seconds' in msg:
    return False
  return any(k in msg for k in ('not supported', 'unsupported', 'Limits.max_states',
                               'only local references', 'only string keywords',
                               'no branch provably excludes'))


def _nested_one_of(comp: Compiler, subs: Any, where: str) -> bool:
  """Whether an allOf member (its `$ref` inlined) holds a `oneOf` of its own."""
  if not isinstance(subs, list):
    return False
  for i, sub in enumerate(subs):
    sub = comp.deref(sub, ptr(where, 'allOf', i))
    if isinstance(sub, dict) and 'oneOf' in sub:
      return True
  return False


def _portable(pattern: str) -> Node:
  return regex_parse.parse(pattern, portable=True)


def _has_type(v: Any, types: Any) -> bool:
  if types is None:
    return True
  types = [types] if isinstance(types, str) else types
  kinds = {type(None): 'null', bool: 'boolean', dict: 'object', list: 'array', str: 'string'}
  if type(v) in kinds:
    return kinds[type(v)] in types
  if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
    return 'integer' in types or 'number' in types
  return isinstance(v, float) and 'number' in types


def _writable(v: Any) -> bool:
  """Whether the compact JSON text of `v` is one the decoder may write (finite)."""
  try:
    common.STRICT.encode(v)
    return True
  except ValueError:
    return False


def _excludes(comp: Compiler, b: Any, c: Any, base: dict) -> bool:
  """Whether no instance the compiler writes for branch `b` validates against `c`."""
  from lattice.decode.jsonschema import disjoint  # pylint: disable=g-import-not-at-top
  return disjoint.excludes(comp, b, c, base)
