"""Counted loops as a decode-loop counter (`lattice.decode.counted`): the same
language as the unrolled DFA, the same masks and needs as its S x V tables, and
generated outputs that validate."""

import json
import random
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import jsonschema
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import tokenizer as tok_lib
from lattice.decode import automaton, constraints, counted, dfa_native, sampling
from lattice.nn import transformer

from conftest import tiny_config

pytestmark = pytest.mark.skipif(not dfa_native.available(),
                                reason='counted loops are kept by the native compiler')

PATTERNS = [r'a{20,30}b', r'(ab){15,}', r'.{0,40}', r'é{14}x|y', r'x{0,20};?',
            r'[a-z]{0,20}[0-9]{0,20}', r'(x{0,20};)*', r'[a-c]{13}', r'(é|ab){2,16}',
            r'"[a-z]{3,14}"(,"[0-9é]{0,15}")*']
# Kept as counters (the others may share loop states with other branches).
COUNTED = [r'a{20,30}b', r'.{0,40}', r'[a-c]{13}',
           r'"[a-z]{3,14}"(,"[0-9é]{0,15}")*']

# Length bounds at the top, in members, in array items (a loop left and entered
# again), next to patterns and formats.
SCHEMAS = [
    {'type': 'string', 'maxLength': 20},
    {'type': 'string', 'minLength': 14, 'maxLength': 16},
    {'type': 'string', 'minLength': 13},
    {'type': 'object', 'properties': {
        'a': {'type': 'string', 'maxLength': 15},
        'b': {'type': 'array', 'items': {'type': 'string', 'minLength': 2, 'maxLength': 14},
              'maxItems': 3},
        'c': {'type': 'integer'}}, 'required': ['b']},
    {'type': 'array', 'items': {'type': 'string', 'minLength': 13, 'maxLength': 14}},
    {'type': 'object', 'properties': {
        'id': {'type': 'string', 'pattern': '^[a-f0-9]{16}$'},
        'u': {'type': 'string', 'format': 'uri', 'maxLength': 40},
        'n': {'type': 'string', 'minLength': 1, 'maxLength': 300}}},
]


def _random_bytes(rng, n_max):
  alphabet = 'abxyé;0\n"[],:'
  s = ''.join(rng.choice(alphabet) for _ in range(rng.randint(0, n_max)))
  if rng.random() < 0.5:
    s = rng.choice('axb0') * rng.randint(0, n_max)
  return s.encode()


@pytest.mark.parametrize('pattern', PATTERNS)
def test_counted_dfa_reads_like_the_unrolled_dfa_and_the_regex(pattern):
  cdfa = automaton.to_counted_dfa(automaton.parse(pattern))
  dfa = automaton.compile_regex(pattern)
  if pattern in COUNTED:
    assert isinstance(cdfa, automaton.CountedDfa), pattern
  if isinstance(cdfa, automaton.CountedDfa):
    assert cdfa.n_states < dfa.n_states
    u = cdfa.unrolled  # The DFA to_dfa gives, table for table.
    assert np.array_equal(u.delta_SxC, dfa.delta_SxC) and np.array_equal(
        u.accepting, dfa.accepting)
  else:  # Loops in step with other states are unrolled the ordinary way.
    assert cdfa is dfa
  rng = random.Random(0)
  for _ in range(300):
    data = _random_bytes(rng, 45)
    want = re.fullmatch(pattern, data.decode('utf-8', 'replace')) is not None and (
        data.decode('utf-8', 'replace').encode() == data)
    got = (counted.matches(cdfa, data) if isinstance(cdfa, automaton.CountedDfa)
           else cdfa.matches(data))
    assert got == dfa.matches(data) == want, (pattern, data)


def _lockstep(plain, index, rng, n_walks, max_len):
  """Walks the unrolled TokenIndex and the CountedIndex together: every need row
  must be equal (both are the exact fewest tokens to acceptance). Returns the
  counted states visited."""
  seen = []
  for _ in range(n_walks):
    a, b = plain.start_state, index.start_state
    budget = rng.randint(index.min_tokens + 1, index.min_tokens + max_len)
    for step in range(budget):
      need_a, need_b = plain.need_row(a), index.need_row(b)
      np.testing.assert_array_equal(need_a, need_b, err_msg=f'{b}')
      seen.append(b)
      moves = np.flatnonzero(need_b <= budget - 1 - step)
      assert len(moves)
      letters = moves[(moves >= 0x61) & (moves <= 0x7a)]  # Long strings: reach the bounds.
      t = int(rng.choice((letters if len(letters) and rng.random() < 0.7 else moves).tolist()))
      if t == tok_lib.EOS_ID:
        break
      a, b = plain.step(a, t), index.step(b, t)
  return seen


@pytest.mark.parametrize('pattern', PATTERNS)
def test_counted_tables_equal_the_unrolled_tables_on_walks(pattern):
  dfa = automaton.compile_regex(pattern)
  cdfa = automaton.to_counted_dfa(automaton.parse(pattern))
  plain = constraints.build_index(dfa)
  index = constraints.build_index(cdfa, classes=True)
  assert isinstance(index, counted.CountedIndex) and index.min_tokens == plain.min_tokens
  _lockstep(plain, index, random.Random(1), 60, 60)


@pytest.mark.parametrize('k', range(len(SCHEMAS)))
def test_schema_tables_equal_and_walks_validate(k):
  schema = SCHEMAS[k]
  dfa = constraints.compile_schema(schema)
  cdfa = constraints.compile_schema_report(schema, counted=True)[0]
  assert isinstance(cdfa, automaton.CountedDfa) and cdfa.n_states < dfa.n_states
  plain = constraints.build_index(dfa)
  index = constraints.for_schema(schema)
  assert isinstance(index, counted.CountedIndex) and index.min_tokens == plain.min_tokens
  rng = random.Random(k)
  seen = _lockstep(plain, index, rng, 40, 80)
  # In-graph rows (jitted) equal the host rows.
  s_B = jnp.array([s for s, _ in seen[:64]], jnp.int32)
  c_B = jnp.array([c for _, c in seen[:64]], jnp.int32)
  rows = np.asarray(jax.jit(lambda ix, st: ix.need_rows(st))(index, (s_B, c_B)))
  for row, st in zip(rows, seen[:64]):
    np.testing.assert_array_equal(row, index.need_row(st))
  # Random walks over the counted tables validate (walks biased to long strings).
  check = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
  for _ in range(40):
    state, data = index.start_state, bytearray()
    for step in range(400):
      moves = np.flatnonzero(index.need_row(state) <= 399 - step)
      plain_bytes = moves[(moves >= 0x61) & (moves <= 0x7a)]
      t = int(rng.choice((plain_bytes if len(plain_bytes) and rng.random() < 0.7
                          else moves).tolist()))
      if t == tok_lib.EOS_ID:
        break
      data.append(t)
      state = index.step(state, t)
    assert index.need_row(state)[tok_lib.EOS_ID] == 0
    value = json.loads(data.decode('utf-8'))
    assert check.is_valid(value), (schema, data)


def test_long_bounds_need_no_states_per_character():
  exact = constraints.Options(max_length_unroll=5000)
  index = constraints.for_schema({'type': 'string', 'minLength': 4000, 'maxLength': 5000},
                                 options=exact)
  assert index.n_states <= 64 and index.min_tokens == 4002
  state = index.start_state
  for t in b'"' + 'é'.encode() * 4000:
    assert index.need_row(state)[t] < constraints.INF
    state = index.step(state, t)
  assert index.need_row(state)[ord('"')] == 0  # 4000 characters (8000 bytes): may close.
  for t in b'a' * 1000:
    state = index.step(state, t)
  assert index.need_row(state)[ord('a')] >= constraints.INF  # The 5001st is refused.
  assert index.need_row(state)[ord('"')] == 0
  assert index.accepts(list(b'"' + b'x' * 4500 + b'"'))
  assert not index.accepts(list(b'"' + b'x' * 3999 + b'"'))


def test_other_vocabularies_use_the_unrolled_tables():
  vocab = constraints.byte_vocab() + [b'ab']
  index = constraints.for_schema({'type': 'string', 'maxLength': 20}, vocab)
  assert isinstance(index, constraints.TokenIndex)
  assert index.accepts([ord('"'), len(vocab) - 1, ord('"')])


GEN_SCHEMAS = [
    {'type': 'string', 'minLength': 14, 'maxLength': 20},
    {'type': 'array', 'items': {'type': 'string', 'minLength': 13, 'maxLength': 15},
     'maxItems': 4},
    {'type': 'object', 'properties': {'a': {'type': 'string', 'maxLength': 16},
                                      'b': {'type': 'string', 'minLength': 13}},
     'required': ['a', 'b']},
]


def test_generated_outputs_validate_with_jsonschema():
  """sampling.generate carries (state, counter) through its jitted loop."""
  cfg = config_lib.build(tiny_config(model={'vocab_size': 384, 'max_len': 140})).model
  prompt = jax.random.randint(jax.random.key(1), (6, 4), 0, 256)
  variables = nn.unbox(transformer.Transformer(cfg).init(jax.random.key(0), prompt))
  n = 0
  for k, schema in enumerate(GEN_SCHEMAS):
    index = constraints.for_schema(schema, constraints.byte_vocab(384), vocab_size=384)
    assert isinstance(index, counted.CountedIndex)
    check = jsonschema.Draft202012Validator(schema)
    for s in (sampling.SamplingConfig(3.0), sampling.SamplingConfig(0.0)):
      out = sampling.generate(variables, prompt, jax.random.key(k), model_cfg=cfg,
                              max_new_tokens=120, sampling=s, constraint=index,
                              pad_id=tok_lib.PAD_ID)
      for row in np.asarray(out).tolist():
        row = row[:row.index(tok_lib.EOS_ID)] if tok_lib.EOS_ID in row else row
        value = json.loads(bytes(row).decode('utf-8'))
        assert check.is_valid(value), (schema, value)
        n += 1
  assert n == 6 * 2 * len(GEN_SCHEMAS)
