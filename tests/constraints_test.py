"""Constrained decoding: regex/schema -> DFA -> token tables, checked against references.

References: Python's `re.fullmatch` for regexes, `lattice.decode.schema.validate`
(which reads the schema directly) for JSON schemas, and a byte-by-byte DFA walk
for the token tables.
"""

import json
import random
import re

import flax.linen as nn
import jax
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.data import tokenizer as tok_lib
from lattice.decode import automaton, constraints, sampling
from lattice.decode import schema as schema_lib
from lattice.nn import transformer

from conftest import tiny_config

PATTERNS = [r'a(b|c)*d', r'[0-9]{2,4}', r'-?(0|[1-9]\d*)(\.\d+)?', r'\w+@\w+\.(com|org)',
            r'.{1,3}', r'[^a-c]x?', r'(ab|a)*b', r'é+|ü', r'^(?:x|y){0,2}z$', r'\s\S',
            r'[a\-c.]+', r'\x41\u00e9?', r'(a|)+b?']
ALPHABET = 'abcdxyz0123456789-.@éü\n AÉ'


@pytest.mark.parametrize('pattern', PATTERNS)
def test_regex_dfa_matches_python_re(pattern):
  dfa = automaton.compile_regex(pattern)
  rng = random.Random(pattern)
  hits = 0
  for _ in range(1500):
    s = ''.join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))
    want = re.fullmatch(pattern, s, re.ASCII) is not None
    assert dfa.matches(s) == want, (pattern, s)
    hits += want
  # Strings the automaton generates (random walks) must match too.
  for text in _dfa_samples(dfa, rng, 200):
    assert re.fullmatch(pattern, text.decode('utf-8'), re.ASCII), (pattern, text)


def _dfa_samples(dfa, rng, n, max_len=16):
  """Random matches: walks that keep an accepting state within the byte budget."""
  index = constraints.build_index(dfa)
  out = []
  for _ in range(n):
    state, data = 0, bytearray()
    for step in range(max_len):
      moves = np.flatnonzero(index.need_SxV[state] <= max_len - 1 - step).tolist()
      t = rng.choice(moves)
      if t == tok_lib.EOS_ID:
        break
      data.append(t)
      state = int(index.next_SxV[state, t])
    assert dfa.accepting[state]
    out.append(bytes(data))
  return out


def test_dfa_is_minimal_and_rejects_invalid_utf8():
  dfa = automaton.compile_regex('(a|a)(b*|b*)')
  assert dfa.n_states == 2
  any_char = automaton.compile_regex('.')
  assert any_char.matches('€'.encode()) and not any_char.matches(b'\xe2\x82')
  assert not any_char.matches(b'\xc0\x80') and not any_char.matches(b'\xed\xa0\x80')


@pytest.mark.parametrize('bad', ['a(b', '*a', '(?=x)', r'\b', 'a{3,1}', '[z-a]'])
def test_bad_regex_is_a_clear_error(bad):
  with pytest.raises(automaton.RegexError):
    automaton.compile_regex(bad)


SCHEMAS = [schema_lib.random_schema(random.Random(i), depth=3) for i in range(30)]


def _mutations(text: str, rng: random.Random, n: int) -> list[str]:
  out = []
  for _ in range(n):
    s = list(text)
    i = rng.randrange(len(s) + 1)
    op = rng.randrange(3)
    if op == 0:
      s.insert(i, rng.choice('{}[],:"0a-. \\étrue'))
    elif op == 1 and i < len(s):
      del s[i]
    elif i < len(s):
      s[i] = rng.choice('{}[],:"0a-.')
    out.append(''.join(s))
  return out


@pytest.mark.parametrize('k', range(len(SCHEMAS)))
def test_schema_dfa_against_reference_validator(k):
  schema = SCHEMAS[k]
  dfa = constraints.compile_schema(schema)
  rng = random.Random(k)
  accepted = rejected = 0
  for _ in range(15):
    value = schema_lib.random_instance(schema, rng)
    assert schema_lib.validate(value, schema)
    text = schema_lib.canonical(value, schema)
    assert dfa.matches(text), (json.dumps(schema), text)  # Complete on canonical text.
    for m in _mutations(text, rng, 6):
      # Sound: whatever the automaton accepts parses and validates.
      if dfa.matches(m):
        assert schema_lib.parses_and_validates(m, schema), (json.dumps(schema), m)
        accepted += 1
      else:
        rejected += 1
  assert rejected > 0


# A multi-byte vocabulary: bytes, specials, then JSON-ish pieces in the padded ids.
PIECES = ['{"', '":', '",', '"}', 'true', 'null', 'fals', 'e,', '[]', '1', '23', 'é',
          '\\"', '"', 'x"', ',"', '},{', 'ab', '0.5', '-', 'name', '€"']
MULTI_VOCAB = constraints.byte_vocab() + [p.encode() for p in PIECES]


@pytest.mark.parametrize('k', range(0, 30, 3))
def test_token_tables_equal_byte_walks(k):
  dfa = constraints.compile_schema(SCHEMAS[k])
  index = constraints.build_index(dfa, MULTI_VOCAB, vocab_size=384)
  S = dfa.n_states
  assert index.n_states % 64 == 0 and index.n_states >= S
  for s in range(S):
    for v, piece in enumerate(MULTI_VOCAB):
      want = dfa.step(s, piece) if piece else -1
      got = int(index.next_SxV[s, v])
      if v == tok_lib.EOS_ID:
        assert (index.need_SxV[s, v] == 0) == dfa.accepting[s] and (
            got == (s if dfa.accepting[s] else -1))
      else:
        assert got == want, (s, piece)
        assert (index.need_SxV[s, v] < constraints.INF) == (want >= 0)
  assert (index.need_SxV[:, 384 - 1] >= constraints.INF).all()  # Past the vocabulary.
  # No state is a trap: every state has an allowed token (EOS counts).
  assert (index.need_SxV[:S] < constraints.INF).any(axis=1).all()


@pytest.mark.parametrize('k', range(1, 30, 7))
def test_byte_vocab_tables_equal_the_token_walk(k):
  # The one-byte fast path (S x C tables gathered by class) against the general
  # walk: a two-byte token no DFA ever reads (invalid UTF-8) sends the same DFA
  # down the general path without changing any distance.
  dfa = constraints.compile_schema(SCHEMAS[k])
  fast = constraints.build_index(dfa, vocab_size=384)
  walked = constraints.build_index(dfa, constraints.byte_vocab() + [b'\xff\xff'],
                                   vocab_size=384)
  n = len(constraints.byte_vocab())
  np.testing.assert_array_equal(fast.next_SxV[:, :n], walked.next_SxV[:, :n])
  np.testing.assert_array_equal(fast.need_SxV[:, :n], walked.need_SxV[:, :n])
  assert fast.min_tokens == walked.min_tokens


def test_unsupported_schemas_are_clear_errors():
  # More cases, each naming its keyword and JSON pointer: tests/jsonschema_test.py.
  for bad in ({'not': {'minimum': 1}}, {'type': 'string', 'pattern': '(?<=a)'},
              {'type': 'object', 'required': ['a'], 'additionalProperties': False},
              {'type': 'string', 'maxLength': 2.5}, {'enum': []},
              {'type': 'tuple'}, {'$ref': '#/nowhere'}):
    with pytest.raises(schema_lib.SchemaError):
      constraints.compile_schema(bad)


CFG = config_lib.build(tiny_config(model={'vocab_size': 384, 'max_len': 96})).model
PROMPT = jax.random.randint(jax.random.key(1), (6, 4), 0, 256)
N_NEW = 80


@pytest.fixture(scope='module')
def variables():
  return nn.unbox(transformer.Transformer(CFG).init(jax.random.key(0), PROMPT))


def _texts(tokens: np.ndarray, vocab) -> list[bytes]:
  out = []
  for row in np.asarray(tokens).tolist():
    row = row[:row.index(tok_lib.EOS_ID)] if tok_lib.EOS_ID in row else row
    out.append(b''.join(vocab[t] for t in row))
  return out


def _constrained(variables, index, seed, s):
  return sampling.generate(variables, PROMPT, jax.random.key(seed), model_cfg=CFG,
                           max_new_tokens=N_NEW, sampling=s, constraint=index,
                           pad_id=tok_lib.PAD_ID)


@pytest.mark.parametrize('vocab', ['bytes', 'multi'])
def test_constrained_generation_always_validates(variables, vocab):
  vocab = constraints.byte_vocab() if vocab == 'bytes' else MULTI_VOCAB
  rng = random.Random(7)
  n_checked = 0
  hot = sampling.SamplingConfig(3.0)  # Near-uniform: explores the whole automaton.
  for k in range(12):
    schema = schema_lib.random_schema(rng, depth=3)
    # One padded table size for all schemas: one compiled sampler.
    index = constraints.for_schema(schema, vocab, vocab_size=384, state_multiple=512)
    if index.min_tokens > N_NEW:
      continue
    for s in (hot, sampling.SamplingConfig(0.0)):
      tokens = _constrained(variables, index, k, s)
      for text in _texts(tokens, vocab):
        assert schema_lib.parses_and_validates(text, schema), (json.dumps(schema), text)
        n_checked += 1
  assert n_checked >= 100


def test_regex_constraint_and_budget(variables):
  index = constraints.for_regex(r'(ab|cd)+!', vocab_size=384, state_multiple=512)
  tokens = _constrained(variables, index, 0, sampling.SamplingConfig(3.0))
  for text in _texts(tokens, constraints.byte_vocab(384)):
    assert re.fullmatch(r'(ab|cd)+!', text.decode()), text
  # A budget below the shortest match is refused before sampling.
  short = constraints.for_regex('x{90}', vocab_size=384)
  with pytest.raises(ValueError, match='shortest match'):
    _constrained(variables, short, 0, sampling.SamplingConfig(0.0))
  with pytest.raises(ValueError, match='eos_id'):
    sampling.generate(variables, PROMPT, jax.random.key(0), model_cfg=CFG,
                      max_new_tokens=4, constraint=index, eos_id=tok_lib.PAD_ID)
