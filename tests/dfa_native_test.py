"""The native DFA core (`lattice.decode.dfa_native`) against automaton's numpy/scipy
fallback: distances, breadth-first renumbering and minimisation agree exactly, and
schemas compile to the same automata either way."""

import json

import numpy as np
import pytest

from lattice.decode import automaton, constraints, dfa_native, regex_parse

pytestmark = pytest.mark.skipif(not dfa_native.available(),
                                reason='lattice.decode._dfa_native is not built')


def _random_dfa(rng, S, K, p_edge=0.6):
  delta = np.where(rng.random((S, K)) < p_edge, rng.integers(0, S, (S, K)), -1)
  return delta.astype(np.int32), rng.random(S) < 0.3


@pytest.fixture
def fallback(monkeypatch):
  """Runs the body with the library unloaded (automaton's numpy/scipy code)."""
  def use(on: bool):
    monkeypatch.setattr(dfa_native, 'LIB', None if not on else _LIB)
  return use


_LIB = dfa_native.LIB


@pytest.mark.parametrize('seed', range(6))
def test_distances_and_bfs_order_match_the_fallback(seed, fallback):
  rng = np.random.default_rng(seed)
  delta, acc = _random_dfa(rng, int(rng.integers(1, 300)), int(rng.integers(1, 12)),
                           p_edge=float(rng.uniform(0.05, 0.9)))
  native = dfa_native.distances(delta, acc)
  fallback(False)
  np.testing.assert_array_equal(native, automaton.distances_to_accept(delta, acc))
  fallback(True)
  d_native, a_native = automaton._renumber(delta, acc)  # pylint: disable=protected-access
  fallback(False)
  d_py, a_py = automaton._renumber(delta, acc)  # pylint: disable=protected-access
  np.testing.assert_array_equal(d_native, d_py)
  np.testing.assert_array_equal(a_native, a_py)


@pytest.mark.parametrize('seed', range(12))
def test_partition_is_moores_fixpoint(seed):
  rng = np.random.default_rng(100 + seed)
  S, K = int(rng.integers(1, 400)), int(rng.integers(1, 10))
  # Few targets: many equivalent states, so blocks really merge.
  n_t = min(int(rng.integers(1, 6)), S)
  delta = np.where(rng.random((S, K)) < 0.7, rng.integers(0, n_t, (S, K)), -1)
  delta = delta.astype(np.int32)
  internal = (rng.random((S, K)) < 0.2) & (delta >= 0) if seed % 2 else np.zeros(
      (S, K), bool)
  block0 = np.unique(rng.integers(0, int(rng.integers(1, 4)), S),
                     return_inverse=True)[1].reshape(-1)
  native = dfa_native.partition(delta, internal, block0)
  moore = automaton._refine(delta, internal, block0, hashed=False)  # pylint: disable=protected-access
  # Same partition: a bijection between the two labelings.
  pairs = set(zip(native.tolist(), moore.tolist()))
  assert len(pairs) == len(set(native.tolist())) == len(set(moore.tolist()))
  # Ids dense from 0, in order of each block's first state.
  _, first = np.unique(native, return_index=True)
  assert (np.diff(first) > 0).all() and native.max() + 1 == len(first)


def test_partition_of_a_long_chain_merges_it():
  # 3000 links: Moore needs a round per link (the fallback's budget stops it).
  S = 3000
  delta = np.full((2 * S + 1, 2), -1, np.int32)
  delta[:S, 0] = np.arange(1, S + 1)          # chain a^S
  delta[S + 1:, 0] = np.arange(S + 2, 2 * S + 2) % (2 * S + 1)
  delta[2 * S, 0] = S                          # second chain joins the first's end
  delta[0, 1] = S + 1
  acc = np.zeros(2 * S + 1, bool)
  acc[S] = True
  block0 = acc.astype(np.int64)
  block = dfa_native.partition(delta, None, block0)
  # The two chains' states at equal distance from the end merge (but the start,
  # which also moves on class 1, and the second chain's first state).
  assert block.max() + 1 == S + 2
  np.testing.assert_array_equal(block[S + 2:], block[1:S])


SCHEMAS = [
    {'type': 'object', 'properties': {'a': {'type': 'string', 'maxLength': 20},
                                      'b': {'type': 'integer', 'minimum': -5,
                                            'maximum': 1234}},
     'required': ['a']},
    {'type': 'array', 'items': {'enum': ['red', 'green', 'blue', 1, None]},
     'maxItems': 5},
    {'type': 'string', 'pattern': '^[a-z]{2,30}@[a-z]+\\.(com|org)$'},
    {'type': 'object', 'properties': {f'p{i}': {'type': 'boolean'} for i in range(12)}},
    {'anyOf': [{'type': 'string', 'format': 'date-time'}, {'type': 'number'}]},
    # JSON-escaped embeds (a pattern's quote, backslash and control characters).
    {'type': 'object', 'properties': {
        'q': {'type': 'string', 'pattern': '^[a-z"\\\t]{1,5}$'},
        'e': {'enum': ['a"b', 'c\\d', 'x\ny']}}},
    # Nested objects through a $ref used twice (composition on the fallback path).
    {'$defs': {'p': {'type': 'object', 'properties': {
        'x': {'type': 'integer'}, 'y': {'type': 'string', 'maxLength': 3}},
        'required': ['x']}},
     'type': 'object', 'properties': {'a': {'$ref': '#/$defs/p'},
                                      'b': {'type': 'array', 'items': {'$ref': '#/$defs/p'},
                                            'maxItems': 3}}},
]


@pytest.mark.parametrize('i', range(len(SCHEMAS)))
def test_schemas_compile_to_the_same_tables(i, fallback):
  # Native: the subset construction of the whole AST; fallback: composition and
  # the Python subset construction. Canonical numbering of states and classes
  # makes the minimal automata equal table for table.
  schema = SCHEMAS[i]
  opts = constraints.Options()
  node = constraints.schema_regex(schema, opts)
  fallback(True)
  automaton._to_dfa_cached.cache_clear()  # pylint: disable=protected-access
  automaton._subset_dfa_cached.cache_clear()  # pylint: disable=protected-access
  a = automaton._to_dfa_uncached(node, opts.limits)  # pylint: disable=protected-access
  fallback(False)
  automaton._to_dfa_cached.cache_clear()  # pylint: disable=protected-access
  automaton._subset_dfa_cached.cache_clear()  # pylint: disable=protected-access
  b = automaton._to_dfa_uncached(node, opts.limits)  # pylint: disable=protected-access
  np.testing.assert_array_equal(a.delta_SxC, b.delta_SxC)
  np.testing.assert_array_equal(a.byte_class, b.byte_class)
  np.testing.assert_array_equal(a.accepting, b.accepting)


def test_past_the_fallback_budget_native_is_smaller_and_equal(fallback):
  # A long chain the fallback leaves unminimised: the native DFA is minimal and
  # accepts the same texts.
  node = regex_parse.parse('(a|b){300}c|b{300}d')
  fallback(True)
  a = automaton._subset_dfa(node, automaton.Limits(region_min=10_000))  # pylint: disable=protected-access
  fallback(False)
  b = automaton._subset_dfa(node, automaton.Limits(region_min=10_000))  # pylint: disable=protected-access
  assert a.n_states <= b.n_states
  rng = np.random.default_rng(0)
  for _ in range(200):
    n = int(rng.integers(295, 305))
    text = ''.join(rng.choice(list('ab'), n)) + str(rng.choice(list('cd')))
    if rng.random() < 0.3:
      text = 'b' * n + 'd'
    assert a.matches(text) == b.matches(text)


@pytest.mark.parametrize('i', [0, 2, 5])
def test_token_tables_match_the_fallback(i, fallback):
  dfa = constraints.compile_schema(SCHEMAS[i])
  # Specials both after the bytes and among them (ids 3 and 7 spell nothing).
  vocab = constraints.byte_vocab(300)
  vocab[3] = vocab[7] = None
  fallback(True)
  a = constraints.build_index(dfa, vocab, eos_id=3, vocab_size=320, state_multiple=64)
  fallback(False)
  b = constraints.build_index(dfa, vocab, eos_id=3, vocab_size=320, state_multiple=64)
  np.testing.assert_array_equal(a.next_SxV, b.next_SxV)
  np.testing.assert_array_equal(a.need_SxV, b.need_SxV)
  assert a.n_states % 64 == 0 and a.n_states >= dfa.n_states
  assert (a.next_SxV[:, 7] == -1).all() and (a.need_SxV[dfa.n_states:] == constraints.INF).all()


@pytest.mark.parametrize('seed', range(8))
def test_finish_matches_the_python_steps(seed, fallback):
  rng = np.random.default_rng(200 + seed)
  S, C = int(rng.integers(1, 200)), int(rng.integers(1, 12))
  n_t = min(int(rng.integers(1, 40)), S)
  delta = np.where(rng.random((S, C)) < 0.5, rng.integers(0, n_t, (S, C)), -1)
  delta = delta.astype(np.int32)
  acc = rng.random(S) < 0.2
  byte_class = rng.permutation(np.arange(256) % C).astype(np.int32)
  native = dfa_native.finish(delta, acc, byte_class)
  fallback(False)
  tag = np.full(S, -1, np.int64)
  try:
    d, a, tag, _ = automaton._prune(delta, acc, tag, np.zeros(delta.shape, bool))  # pylint: disable=protected-access
  except automaton.RegexError:
    assert native is None
    return
  d, a, _, _ = automaton._minimise(d, a, tag, np.zeros(d.shape, bool))  # pylint: disable=protected-access
  d, a = automaton._renumber(d, a, byte_class)  # pylint: disable=protected-access
  d, bc = automaton._canonical_classes(d, byte_class)  # pylint: disable=protected-access
  np.testing.assert_array_equal(native[0], d)
  np.testing.assert_array_equal(native[1], a)
  np.testing.assert_array_equal(native[2], bc)


@pytest.mark.parametrize('seed', range(4))
def test_byte_classes_partition_like_numpy(seed):
  from lattice.decode import regex_ast  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(300 + seed)
  masks = sorted({int.from_bytes(rng.integers(0, 256, 32, dtype=np.uint8).tobytes() if i % 3
                                 else bytes(16) + b'\xff' * 16, 'little')
                  for i in range(int(rng.integers(1, 80)))})
  bc, (off, cls) = dfa_native.byte_classes(masks)
  ref_bc, ref_held = regex_ast.byte_classes(masks)
  # The same partition of the bytes, classes numbered by their smallest byte.
  assert len(set(zip(bc.tolist(), ref_bc.tolist()))) == len(set(bc.tolist())) == len(
      set(ref_bc.tolist()))
  _, first = np.unique(bc, return_index=True)
  assert (np.diff(first) > 0).all()
  for m, mask in enumerate(masks):
    held = cls[off[m]:off[m + 1]].tolist()
    assert held == sorted({int(bc[b]) for b in range(256) if mask >> b & 1})
  assert dfa_native.byte_classes([])[0].tolist() == [0] * 256


@pytest.mark.parametrize('pattern', [
    '[\\x00-\\x7f]{0,3}',              # Every escaped byte, short and \\u00XX forms.
    '(a[\\x01\\x1f]|"b|\\\\\\\\)*c',    # Some escapes, in a loop, to several targets.
    '[\\x10-\\x1f]x|[\\x00-\\x0f]y',    # Only one high digit each.
    'abc',                               # None at all.
])
def test_json_escaped_embed_matches_the_fallback(pattern, fallback):
  # The native path writes a DFA's escaped bytes as shared escape states
  # (`_Nfa._escapes_bulk`), the fallback as one literal chain per byte and state:
  # the same language, so the same canonical tables; and the escaped automaton
  # spells exactly the JSON-escaped texts of the raw one.
  raw = automaton.to_dfa(regex_parse.parse(pattern))
  node = automaton.cat(automaton.lit('"'), automaton.embed(raw, json_escape=True),
                       automaton.lit('"'))
  a, b = _subset_both_ways(node, fallback)
  rng = np.random.default_rng(0)
  alphabet = [chr(i) for i in range(0x80)]
  for _ in range(300):
    text = ''.join(rng.choice(alphabet, int(rng.integers(0, 4))))
    quoted = json.dumps(text, ensure_ascii=False)
    assert a.matches(quoted) == raw.matches(text), text
    assert not a.matches(quoted[:-1] + '\\u0041"') or raw.matches(text + 'A')


@pytest.mark.parametrize('pattern', [
    'a{0,20}',                          # The start inside a loop.
    'x[a-c]{5,40}y',                    # lo inside the region bound: X^lo X{0,hi-lo}.
    'x[a-c]{20,}y',                     # Unbounded, lo above the region bound.
    '(\\w{13,30}|z)@.{0,15}',           # Two loops, one of multi-byte characters.
    'q[^"]{14}',                        # Exactly hi copies.
    'a{15,16}b{0,14}|c',                # Loops one after another, and another branch.
])
def test_counted_loops_unroll_like_the_fallback(pattern, fallback):
  # Native: _unroll, _renumber and _canonical_classes in one call
  # (`dfa_native.unroll`); fallback: the numpy steps. Same tables, same language.
  node = regex_parse.parse(pattern)
  limits = automaton.Limits(region_min=12)
  fallback(True)
  a = automaton._subset_dfa(node, limits)  # pylint: disable=protected-access
  fallback(False)
  b = automaton._subset_dfa(node, limits)  # pylint: disable=protected-access
  np.testing.assert_array_equal(a.delta_SxC, b.delta_SxC)
  np.testing.assert_array_equal(a.byte_class, b.byte_class)
  np.testing.assert_array_equal(a.accepting, b.accepting)
  c = automaton._subset_dfa(node, automaton.Limits(region_min=10_000))  # pylint: disable=protected-access
  assert a.n_states == c.n_states  # Unrolled as a loop or by the subset construction.


_RAW = automaton.to_dfa(regex_parse.parse('[a-c]+x?'))


@pytest.mark.parametrize('node', [
    automaton.one(automaton.byte_set((0x61, 0x63))),  # Byte edges, no epsilon edge.
    automaton.embed(_RAW),                              # Only an embed's edge arrays.
    automaton.cat(automaton.embed(_RAW), automaton.embed(_RAW)),
    automaton.alt(automaton.lit('ab'), automaton.EPS),  # The empty text too.
    automaton.EPS,                                      # No byte edge at all.
], ids=['set', 'embed', 'embed2', 'alt_eps', 'eps'])
def test_nfa_edge_columns_in_corner_cases(node, fallback):
  # The native path reads the NFA's listed edges and epsilon edges as flat columns
  # (`_to_dfa`, `dfa_native.subset_construction`): NFAs without listed edges,
  # without epsilon edges, or without any byte edge compile as on the fallback.
  a, b = _subset_both_ways(node, fallback)
  for text in ['', 'a', 'ab', 'c', 'abx', 'axa', 'abxabx', 'd']:
    assert a.matches(text) == b.matches(text)
  assert a.matches('') == (node[0] == 'alt' or node is automaton.EPS)


def _subset_both_ways(node, fallback):
  """The subset-construction DFA of `node` on the fallback and on the native path,
  after checking that their tables are equal."""
  fallback(True)
  a = automaton._subset_dfa(node, automaton.DEFAULT_LIMITS)  # pylint: disable=protected-access
  fallback(False)
  b = automaton._subset_dfa(node, automaton.DEFAULT_LIMITS)  # pylint: disable=protected-access
  np.testing.assert_array_equal(a.delta_SxC, b.delta_SxC)
  np.testing.assert_array_equal(a.byte_class, b.byte_class)
  np.testing.assert_array_equal(a.accepting, b.accepting)
  return a, b


def test_intern_shares_equal_tables_with_the_native_hash(fallback):
  """`automaton.intern` keyed by `dfa_native.hash_array`: equal tables give one
  object (as with Python's hash of the bytes), a one-entry change does not, and
  the hash reads every byte (a tail shorter than a word included)."""
  rng = np.random.default_rng(0)
  delta, acc = _random_dfa(rng, 37, 5)
  bc = np.zeros(256, np.int32)
  bc[:5] = np.arange(5)
  a = automaton.intern(automaton.Dfa(delta, bc, acc))
  b = automaton.intern(automaton.Dfa(delta.copy(), bc.copy(), acc.copy()))
  assert a is b
  other = delta.copy()
  other[36, 4] = -1 if other[36, 4] >= 0 else 0
  assert automaton.intern(automaton.Dfa(other, bc, acc)) is not a
  raw = np.frombuffer(bytes(range(45)), np.uint8)
  for i in range(45):
    changed = raw.copy()
    changed[i] ^= 1
    assert dfa_native.hash_array(changed) != dfa_native.hash_array(raw)
  assert dfa_native.hash_array(raw) == dfa_native.hash_array(raw.copy())
  fallback(False)  # Python's hash of the bytes: the same sharing.
  c = automaton.intern(automaton.Dfa(delta.copy(), bc.copy(), acc.copy()))
  assert automaton.intern(automaton.Dfa(delta.copy(), bc.copy(), acc.copy())) is c
