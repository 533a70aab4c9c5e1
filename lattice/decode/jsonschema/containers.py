"""Arrays and objects: `prefixItems`/`items`, member chains, extra members.

Arrays: `[` prefix items in order, then items of the `items` schema, `,` between,
with `minItems`..`maxItems` elements (`maxItems` above `Options.max_items_unroll` is
clamped there unless the array is unbounded: a bounded repetition of a non-trivial
item unrolls). `uniqueItems: true` is kept sound by writing at most one element.

Objects: declared properties as an O(n) chain (`regex_ast.chain`): required ones
always, optional ones skippable. Extra members come after them when
`additionalProperties` is a schema (or true and `Options.extra_properties`, or the
object declares nothing) and for `patternProperties`: names are printable ASCII,
never a declared name, and match exactly the patterns whose schemas the value
satisfies (a DFA difference/intersection per pattern). `minProperties` promotes
optional properties to required; `maxProperties` keeps the first ones, and extra
members only up to what is left (at most `_EXTRAS_UNDER_MAX`).
`dependentRequired`/`dependencies` leave out optional properties whose
dependencies are not all required. An object whose members' automata sum past
`Options.max_object_states` leaves out its largest optional members until it fits
(sound: fewer texts; a flat DFA copies each member's value once per object, so
a large definition under many optional members otherwise passes the state cap),
and says so: one line in `comp.warnings` naming the object's JSON pointer and the
members left out.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from lattice.decode import automaton, dfa_ops, regex_parse
from lattice.decode.automaton import EPS, Node, alt, cat, chain, lit, one, rep
from lattice.decode.jsonschema import formats, search
from lattice.decode.jsonschema.common import KEY_CHAR as _KEY_CHAR
from lattice.decode.jsonschema.common import dumps as _dumps
from lattice.decode.jsonschema.common import nonneg_int as _nonneg_int
from lattice.decode.jsonschema.resolve import SchemaError, merge, ptr


def array(comp: Any, s: dict, where: str, depth: int) -> Node | None:
  lo = _nonneg_int(s, 'minItems', where, 0)
  hi = _nonneg_int(s, 'maxItems', where)
  items = s.get('items', True)
  prefix = s.get('prefixItems', [])
  if isinstance(items, list):  # Drafts 4-2019: items as a tuple.
    prefix, items = items, s.get('additionalItems', True)
  if not isinstance(prefix, list):
    raise SchemaError(where, 'prefixItems', f'expected an array, got {prefix!r}')
  if s.get('uniqueItems') is True:
    hi = 1 if hi is None else min(hi, 1)
  if hi is not None and hi < lo:
    return None
  pnodes = [comp.node(p, ptr(where, 'prefixItems', i), depth + 1)
            for i, p in enumerate(prefix)]
  # A prefix position nothing fits ends the array there.
  for i, n in enumerate(pnodes):
    if n is None:
      if lo > i:
        return None
      pnodes, hi, items = pnodes[:i], i if hi is None else min(hi, i), False
      break
  m = len(pnodes)
  item = None if items is False else comp.node(items, ptr(where, 'items'), depth + 1)
  item = None if item is None else comp.minimal(item)
  pnodes = [comp.minimal(n) if n is not None else None for n in pnodes]
  if item is None:
    if lo > m:
      return None
    hi = m if hi is None else min(hi, m)
  if hi is not None and hi > comp.opts.max_items_unroll and item is not None:
    hi = max(lo, comp.opts.max_items_unroll)
  # tail(k): elements k.. given k already written (k >= 1 means a comma first).
  def rest(k: int) -> Node:
    if hi is not None and k >= hi:
      return EPS
    if k >= m:  # Items of `items`: count in [max(lo - k, 0), hi - k].
      return rep(cat(lit(','), item), max(lo - k, 0), None if hi is None else hi - k)
    more = cat(lit(','), pnodes[k], rest(k + 1))
    return more if k < lo else rep(more, 0, 1)

  if hi == 0:
    return lit('[]')
  first = pnodes[0] if m else item
  body = cat(first, rest(1))
  return cat(lit('['), body if lo > 0 else rep(body, 0, 1), lit(']'))


@functools.lru_cache(maxsize=4096)
def _key_lit(name: str) -> Node:
  """`"name":` (cached: the same names recur across objects and schemas)."""
  return lit(_dumps(name) + ':')


def obj(comp: Any, s: dict, where: str, depth: int) -> Node | None:
  props = s.get('properties', {})
  if not isinstance(props, dict):
    raise SchemaError(where, 'properties', f'expected an object, got {props!r}')
  required = s.get('required', [])
  if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
    raise SchemaError(where, 'required', f'expected an array of strings, got {required!r}')
  patterns = s.get('patternProperties', {})
  if not isinstance(patterns, dict):
    raise SchemaError(where, 'patternProperties', f'expected an object, got {patterns!r}')
  addl = s.get('additionalProperties', s.get('unevaluatedProperties', True))
  lo = _nonneg_int(s, 'minProperties', where, 0)
  hi = _nonneg_int(s, 'maxProperties', where)
  deps = {**_deps(s.get('dependencies', {})), **_deps(s.get('dependentRequired', {}))}
  names_schema = s.get('propertyNames', True)
  name_dfa = None
  if names_schema not in (True, {}):
    name_dfa = _name_dfa(comp, names_schema, ptr(where, 'propertyNames'))

  # Declared members, then required names that are not declared.
  req = set(required)
  grew = True
  while grew:  # A required member's dependencies are required too.
    grew = False
    for name in list(req):
      dep = deps.get(name, ())
      if '\0never' in dep:
        raise SchemaError(where, 'dependentSchemas', f'{name!r} is required and has a '
                          f'schema dependency: not supported')
      if set(dep) - req:
        req |= set(dep)
        grew = True
  order = list(props) + [r for r in sorted(req) if r not in props]
  # minProperties: promote optional declared members in order.
  for name in order:
    if len(req) >= lo:
      break
    req.add(name)
  members = []
  for name in order:
    sub = props.get(name)
    for pat, psub in patterns.items():  # A matching pattern's schema applies too.
      if _search(pat, name, ptr(where, 'patternProperties', pat)):
        sub = psub if sub is None else merge(sub, psub, ptr(where, 'patternProperties', pat))
    if sub is None:
      sub = addl
    is_req = name in req
    ok_name = name_dfa is None or name_dfa.matches(name)
    if not is_req and (not ok_name or not all(d in req for d in deps.get(name, ()))):
      continue
    try:
      value = comp.node(sub, ptr(where, 'properties', name), depth + 1) if ok_name else None
    except SchemaError as e:
      # An optional member the compiler cannot enforce (unsupported keyword or
      # regex, remote $ref, size cap) is never written: sound, and reported.
      if is_req or not comp.droppable(e):
        raise
      comp.warnings.append(f'{where or "/"}: optional property {name!r} is never written '
                           f'({e})')
      continue
    if value is None:
      if is_req:
        return None
      continue
    key, value = _key_lit(name), comp.minimal(value)
    member = cat(key, value)
    # Its size for `_shed`, from the value's (memoised per value: a definition's
    # node recurs; the key's bytes are one state each), so `approx_states` does not
    # walk the key's bytes again for every object (the same sum).
    comp.sizes[id(member)] = (member, len(key[1]) + approx_states(value, comp.sizes))
    members.append((member, is_req, name))
  # One member short of minProperties: an extra member (below) becomes required.
  need_extra = len(req) == lo - 1
  if len(req) < lo - need_extra or (hi is not None and len(req) > hi):
    return None
  if hi is not None:  # Keep required members and the first optional ones.
    n_opt = hi - sum(r for _, r, _ in members)
    kept = []
    for node, r, name in members:
      if r or n_opt > 0:
        kept.append((node, r, name))
        n_opt -= not r
    members = kept
  # Under maxProperties, extra members fill what the declared ones leave (all of
  # those may be written), at most _EXTRAS_UNDER_MAX (each is a copy in the automaton).
  room = None if hi is None else min(hi - len(members), _EXTRAS_UNDER_MAX)
  write_extra = ((room is None or room > 0) and
                 (patterns or isinstance(addl, dict) and addl != {} or
                  (addl is not False and (comp.opts.extra_properties or not props))))
  if write_extra:
    # Extra names are never a member's name (a duplicate key would count once) nor
    # a name with dependencies (they might be missing: only members check them).
    extra = _extras(comp, s, list(dict.fromkeys([*order, *deps])), patterns, addl,
                    name_dfa, where, depth)
    if extra is not None:
      members.append((cat(extra, rep(cat(lit(','), extra), 0,
                                      None if room is None else room - 1)), need_extra,
                      '(additional members)'))
  if need_extra and not (write_extra and extra is not None):
    return None
  shed, dropped = _shed([m[:2] for m in members], comp.opts.max_object_states, comp.sizes)
  if dropped:
    comp.warnings.append(
        f'{where or "/"}: optional properties {[members[i][2] for i in dropped]} are '
        f'never written (the object would pass Options.max_object_states='
        f'{comp.opts.max_object_states} states)')
  return cat(lit('{'), chain(tuple(shed), lit(',')), lit('}'))


# Extra members written at most under `maxProperties` (a bounded repetition of a
# member unrolls: each is a copy of its value's automaton).
_EXTRAS_UNDER_MAX = 4


def approx_states(node: Node, memo: dict | None = None) -> float:
  """About how many DFA states `node` builds (embedded DFAs at their size).

  `memo` (id -> (node, size), the node held so its id stays its own) spares
  re-walking shared subtrees: members that stay ASTs nest level in level. An
  explicit stack, not recursion: intermediate ASTs nest hundreds deep (a
  JSONSchemaStore schema passed Python's recursion limit here)."""
  memo = {} if memo is None else memo
  got = memo.get(id(node))
  if got is not None:
    return got[1]

  def known(n: Node) -> float | None:
    kind = n[0]
    if kind == 'dfa':
      return n[1].n_states
    if kind == 'set':
      return 1
    got = memo.get(id(n))
    return None if got is None else got[1]

  if node[0] == 'cat':
    # (Fast path, the same sum without the walk's stack: an object's member
    # `"name":value`, its name's bytes and a value already sized; `known` inline.)
    total = 0
    for p in node[1]:
      kind = p[0]
      if kind == 'set':
        total += 1
      elif kind == 'dfa':
        total += p[1].n_states
      else:
        got = memo.get(id(p))
        if got is None:
          break
        total += got[1]
    else:
      memo[id(node)] = (node, total)
      return total

  def parts(n: Node) -> list:
    kind = n[0]
    if kind in ('cat', 'alt'):
      return n[1]
    if kind == 'chain':
      return [m for m, _ in n[1]]
    return [] if automaton.is_char(n[1]) else [n[1]]

  stack = [(node, False)]
  while stack:
    n, ready = stack.pop()
    if known(n) is not None:
      continue
    if not ready:
      stack.append((n, True))
      for p in parts(n):  # (`known(p) is None`, inline: byte sets are most parts.)
        pk = p[0]
        if pk != 'set' and pk != 'dfa' and id(p) not in memo:
          stack.append((p, False))
      continue
    kind = n[0]
    if kind in ('cat', 'alt'):
      size = 0
      for p in n[1]:
        pk = p[0]
        size += 1 if pk == 'set' else p[1].n_states if pk == 'dfa' else memo[id(p)][1]
    elif kind == 'chain':
      size = sum(known(m) for m, _ in n[1]) + len(n[1])
    else:
      _, body, lo, hi = n
      copies = max(1, hi if hi is not None else lo + 1)
      if automaton.is_char(body):
        # A character's DFA, not its byte sets: a JSON string character is ~23 sets
        # (every UTF-8 form) but 5 states, and `maxLength: 256` unrolls the states.
        size = max(1, automaton.to_dfa(body).n_states - 1) * copies
      else:
        size = known(body) * copies
    memo[id(n)] = (n, size)
  return known(node)


def _shed(members: list, budget: int, memo: dict | None = None) -> tuple[list, list]:
  """(`members` without their largest optional ones while the object's automaton
  would pass `budget` states (each member's value is copied once into it), the
  indices left out). Sound: an optional member left out only means fewer texts
  are written."""
  sizes = [approx_states(m, memo) for m, _ in members]
  total = sum(sizes)
  if total <= budget:
    return members, []
  drop = set()
  for i in sorted((i for i, (_, r) in enumerate(members) if not r), key=lambda i: -sizes[i]):
    if total <= budget:
      break
    drop.add(i)
    total -= sizes[i]
  return [m for i, m in enumerate(members) if i not in drop], sorted(drop)


def _deps(d: Any) -> dict[str, list[str]]:
  """Property -> names it requires (array-valued dependencies only)."""
  if not isinstance(d, dict):
    return {}
  out = {}
  for k, v in d.items():
    # Schema-valued dependencies: never write k unless required (checked by caller).
    out[k] = v if isinstance(v, list) else ['\0never']
  return out


_PRINTABLE = re.compile('[\x20-\x7e]*')


def _search(pattern: str, name: str, where: str) -> bool:
  try:
    if _PRINTABLE.fullmatch(name):  # `search_dfa` is exact on printable ASCII.
      return search.search_dfa(pattern).matches(name)
    return automaton.to_dfa(regex_parse.parse_search(pattern)).matches(name)
  except automaton.RegexError as e:
    raise SchemaError(where, 'patternProperties', f'unsupported regex: {e}') from e


_NAME_KEYWORDS = {'type', 'pattern', 'minLength', 'maxLength', 'format', 'enum', 'const',
                  'title', 'description', '$comment', 'examples', 'default'}


def _name_dfa(comp: Any, schema: Any, where: str) -> automaton.Dfa:
  """Raw names `propertyNames` allows: string keywords (`pattern`, lengths,
  `format`), `enum`/`const` (their string values), a local `$ref` to such a
  schema. Raises SchemaError for anything else, or when no name is allowed."""
  schema = comp.deref(schema, where, bounded=False)
  if not isinstance(schema, dict) or set(schema) - _NAME_KEYWORDS or schema.get(
      'type', 'string') not in ('string', ['string']):
    raise SchemaError(where, 'propertyNames', 'only string keywords, enum and const are '
                      'supported')
  regexes = [(regex_parse.parse_search, p, 'pattern') for p in
             ([schema['pattern']] if 'pattern' in schema else [])]
  fmt = schema.get('format')
  if fmt in formats.UNSUPPORTED:
    raise SchemaError(where, 'format', f'{fmt!r} is not supported')
  if isinstance(fmt, str) and formats.FORMATS.get(fmt):
    # (The format checker applies to names too: a sound subset, as for values.)
    regexes.append((lambda r: regex_parse.parse(r, portable=True), formats.FORMATS[fmt],
                    'format'))
  dfa = comp.string_dfa(regexes, _nonneg_int(schema, 'minLength', where, 0),
                        _nonneg_int(schema, 'maxLength', where), where)
  if dfa is not None and ('enum' in schema or 'const' in schema):
    values = schema['enum'] if 'enum' in schema else [schema['const']]
    if not isinstance(values, list):
      raise SchemaError(where, 'enum', f'expected an array, got {values!r}')
    if 'const' in schema:
      values = [v for v in values if v == schema['const']]
    # Names are strings: other values never match (and `True == 1` must not count).
    names = [v for v in values if isinstance(v, str)]
    if not names:
      dfa = None
    else:
      try:
        listed = automaton.to_dfa(alt(*(automaton.lit(v) for v in dict.fromkeys(names))),
                                  comp.opts.limits)
        dfa = dfa_ops.intersect(dfa, listed, comp.opts.limits.max_states)
      except automaton.LimitError as e:
        raise SchemaError(where, 'propertyNames', str(e)) from e
      except automaton.RegexError:
        dfa = None
  if dfa is None:
    raise SchemaError(where, 'propertyNames', 'matches no name')
  return dfa


def _extras(comp, s, props, patterns, addl, name_dfa, where, depth) -> Node | None:
  """One extra member `"name":value`, or None when none can be written."""
  for pat in patterns:
    try:
      search.search_dfa(pat, comp.opts.limits)
    except automaton.RegexError as e:
      raise SchemaError(ptr(where, 'patternProperties', pat), 'patternProperties',
                        f'unsupported regex: {e}') from e
  key_dfas, addl_keys = _extra_names(tuple(props), tuple(patterns), name_dfa,
                                     comp.opts.limits)
  parts = []
  for (pat, psub), keys in zip(patterns.items(), key_dfas):
    value = comp.node(psub, ptr(where, 'patternProperties', pat), depth + 1)
    if keys is not None and value is not None:
      parts.append(cat(lit('"'), automaton.embed(keys), lit('":'), value))
  if addl is not False:
    value = comp.node(addl, ptr(where, 'additionalProperties'), depth + 1)
    if addl_keys is not None and value is not None:
      parts.append(cat(lit('"'), automaton.embed(addl_keys), lit('":'), value))
  return alt(*parts) if parts else None


@functools.lru_cache(maxsize=1024)
def _extra_names(props: tuple, patterns: tuple, name_dfa, limits):
  """(per pattern: the names matching it and no other pattern, the names matching
  no pattern), each a DFA or None (no name), for extra members of an object that
  declares `props` (never extra names). Cached: objects of one definition ask alike.
  Raises RegexError for a pattern outside `regex_parse`."""
  names = automaton.to_dfa(cat(rep(one(_KEY_CHAR), 0, None)), limits)
  if name_dfa is not None:
    names = dfa_ops.intersect(names, name_dfa, limits.max_states)
  if props:  # Declared names (and names with dependencies): never extras.
    declared = automaton.to_dfa(alt(*(lit(n) for n in props)), limits)
    names = _diff(names, declared)
  # Names are printable ASCII (`KEY_CHAR`), where `search_dfa` is exact.
  pats = {pat: search.search_dfa(pat, limits) for pat in patterns}
  per_pattern = []
  for pat in patterns:
    # Names matching this pattern and no other (so one schema applies).
    keys = dfa_ops.intersect(names, pats[pat], limits.max_states) if names else None
    for other, d in pats.items():
      if other != pat and keys is not None:
        keys = _diff(keys, d)
    per_pattern.append(keys)
  keys = names
  for d in pats.values():
    if keys is not None:
      keys = _diff(keys, d)
  return tuple(per_pattern), keys


def _diff(a, b):
  try:
    return dfa_ops.difference(a, b)
  except automaton.LimitError:
    raise
  except automaton.RegexError:
    return None
