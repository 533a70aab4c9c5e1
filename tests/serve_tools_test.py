"""lattice.serve.tools without a server: the tool-call turn's grammar (CallsHook
around one compiled call constraint) and its parsing (CallStream).

Random walks over the hook's masks stand in for a model: whatever token is picked
among the allowed ones, the turn is 1..k calls that each parse and validate under
their tool's schema, and streamed pieces join to the one-shot parse.
"""

import json

import numpy as np
import pytest

from lattice.decode import constraints
from lattice.decode import schema as schema_lib
from lattice.serve import engine as engine_lib
from lattice.serve import output
from lattice.serve import tools

V, EOS = 272, 257
TOOLS = [
    {'type': 'function', 'function': {'name': 'add', 'parameters': {
        'type': 'object', 'properties': {'a': {'type': 'integer'},
                                         's': {'type': 'string', 'maxLength': 3}},
        'required': ['a']}}},
    {'type': 'function', 'function': {'name': 'neg', 'parameters': {
        'type': 'object', 'properties': {'x': {'type': 'boolean'}}, 'required': ['x']}}},
]
PARAMS = {t['function']['name']: t['function']['parameters'] for t in TOOLS}


@pytest.fixture(scope='module')
def call_index():
  return constraints.for_schema(tools.call_schema(TOOLS), constraints.byte_vocab(V),
                                eos_id=EOS, vocab_size=V)


def _walk(hook, max_tokens, rng):
  """One sequence decoded the way the engine masks it, tokens picked at random
  (marker and separator bytes preferred, so auto turns reach calls; a special
  token other than EOS is never picked)."""
  seq = engine_lib.Sequence(np.array([256], np.int32), max_tokens, mask_hook=hook)
  while len(seq.tokens) < max_tokens:
    left = max_tokens - 1 - len(seq.tokens)
    allowed = hook(seq, left)
    if seq.constraint is not None:
      fits = seq.constraint.need_row(seq.cstate) <= left
      allowed = fits if allowed is None else allowed & fits
    if allowed is None:
      allowed = np.ones(V, bool)
    allowed = allowed & ((np.arange(V) < 256) | (np.arange(V) == EOS))
    ids = np.flatnonzero(allowed)
    assert len(ids), f'no token allowed after {seq.tokens}'
    out, marker = bytes(seq.tokens), tools.MARKER.encode()
    nxt = marker[len(out)] if marker.startswith(out) and len(out) < len(marker) else None
    pref = [t for t in ids if t < 256 and (t == nxt if nxt is not None else t in b'\n<')]
    t = int(rng.choice(pref if pref and rng.random() < 0.8 else ids))
    seq.tokens.append(t)
    if seq.constraint is not None and t != EOS:
      seq.cstate = seq.constraint.step(seq.cstate, t)
    if t == EOS:
      break
  return bytes(t for t in seq.tokens if t < 256).decode('utf-8', 'replace')


@pytest.mark.parametrize('required', [True, False])
@pytest.mark.parametrize('max_calls', [1, 3])
def test_every_turn_is_whole_valid_calls(call_index, required, max_calls):
  rng = np.random.default_rng(max_calls + 10 * required)
  lits = tools.literals(V, constraints.byte_vocab(V))
  counts = set()
  for _ in range(60):
    hook = tools.CallsHook(call_index, EOS, lits, max_calls=max_calls, required=required)
    max_tokens = int(rng.integers(hook.min_tokens if required else 3, 200))
    text = _walk(hook, max_tokens, rng)
    stream = tools.CallStream()
    stream.feed(text)
    if not text.startswith(tools.MARKER):
      assert not required and not stream.calls
      continue
    calls = stream.calls
    assert 1 <= len(calls) <= max_calls, text
    counts.add(len(calls))
    for c in calls:  # each call parses and validates under its own tool's schema
      assert schema_lib.validate(json.loads(c['function']['arguments']),
                                 PARAMS[c['function']['name']]), text
    # The calls are the whole text: marker, calls joined by the separator.
    assert text == tools.MARKER + tools.SEP.join(
        f'{{"name":{json.dumps(c["function"]["name"])},"arguments":'
        f'{c["function"]["arguments"]}}}' for c in calls)
    # Fed a character at a time, the pieces join to the same calls.
    pieces, joined = tools.CallStream(), {}
    for i in range(len(text) + 1):
      for p in pieces.feed(text[:i]):
        if 'id' in p:
          assert p['index'] == len(joined) and p['function']['name']
          joined[p['index']] = ''
        joined[p['index']] += p['function']['arguments']
    assert list(joined.values()) == [c['function']['arguments'] for c in calls]
  # The walks reach every count up to the bound (so the bound is what stops them).
  assert counts == set(range(1, max_calls + 1))


def test_auto_marker_only_starts_a_call_that_fits(call_index):
  lits = tools.literals(V, constraints.byte_vocab(V))
  hook = tools.CallsHook(call_index, EOS, lits, max_calls=2, required=False)
  marker = tools.MARKER.encode()
  need = len(marker) - 4 + call_index.min_tokens  # marker bytes after the 4th + call
  seq = engine_lib.Sequence(np.array([256], np.int32), max_tokens=200, mask_hook=hook)
  seq.tokens = list(marker[:3])
  assert hook(seq, need)[marker[3]] and not hook(seq, need - 1)[marker[3]]
  assert hook(seq, need - 1).sum() == V - 1     # everything else stays allowed
  seq.tokens.append(ord('x'))                    # no longer the marker: free text
  assert hook(seq, 0) is None and seq.constraint is None
  seq = engine_lib.Sequence(np.array([256], np.int32), max_tokens=200, mask_hook=hook)
  seq.tokens = list(marker)
  assert hook(seq, 100) is None and seq.constraint is call_index
  required = tools.CallsHook(call_index, EOS, lits, max_calls=2, required=True)
  seq = engine_lib.Sequence(np.array([256], np.int32), max_tokens=200)
  assert np.flatnonzero(required(seq, 100)).tolist() == [ord('<')]
  assert required.min_tokens == len(marker) + call_index.min_tokens


def test_literals_count_subword_pieces(call_index):
  # A vocabulary spelling the marker in 3 pieces ('<tool', '_call', '>') or bytes.
  vocab = [bytes([i]) for i in range(256)] + [b'<tool', b'_call', b'>{', b'\n<tool']
  marker, sep = tools.literals(len(vocab), vocab)
  assert marker.cost[0] == 3 and sep.cost[0] == 3   # '\n<tool' '_call' '>'
  hook = tools.CallsHook(call_index, EOS, (marker, sep), max_calls=2, required=False)
  seq = engine_lib.Sequence(np.array([1], np.int32), max_tokens=200, mask_hook=hook)
  seq.tokens = [256]                                 # '<tool'
  m = call_index.min_tokens
  allowed = hook(seq, m + 1)           # '_call', then '>' + the shortest call
  assert allowed[257] and not allowed[ord('_')] and allowed[ord('x')]
  seq.tokens = [256, 257]
  assert not hook(seq, 100)[258]                     # '>{' runs past the marker
  seq.tokens = [256, 257, ord('>')]
  assert hook(seq, 100) is None and seq.constraint is call_index


def test_named_stream_and_bound_errors():
  stream = tools.CallStream('add')
  first = stream.feed('{"a"')
  assert first[0]['function'] == {'name': 'add', 'arguments': '{"a"'} and first[0]['id']
  assert stream.feed('{"a":1}') == [{'index': 0, 'function': {'arguments': ':1}'}}]
  assert stream.calls[0]['function']['arguments'] == '{"a":1}'
  assert tools.CallStream().feed('plain text') == []
  with pytest.raises(ValueError, match='max_tool_calls'):
    tools.CallsHook(None, EOS, tools.literals(V), max_calls=0, required=True)


def test_stop_strings_do_not_cut_tool_calls():
  def run(text):
    deltas = []
    choice = output.Choice(0, [':'], deltas.append, eos_id=EOS, hold=tools.MARKER)
    seq = engine_lib.Sequence(np.array([256], np.int32), 64)
    for b in text.encode():
      choice.on_token(seq, engine_lib.Token(b, 0.0, np.zeros(1, np.int32),
                                            np.zeros(1, np.float32)))
    choice.on_done(seq, None)
    return choice.text, ''.join(d.text for d in deltas), deltas[-1].so_far
  call = tools.MARKER + '{"name":"add","arguments":{"a":1}}'
  assert run(call) == (call, call, call)            # held, then given whole
  assert run('a:b')[:2] == ('a', 'a')               # plain text: the stop applies
