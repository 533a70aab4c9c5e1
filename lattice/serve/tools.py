"""Tool calls: the call schema, the grammar of a tool-call turn, and its parsing.

A turn of tool calls is written in the Hermes function-calling format (a
`<tool_call>` marker before each call, calls separated by a newline), each call
compact JSON under its tool's schema:

  <tool_call>{"name":"add","arguments":{"a":1}}\\n<tool_call>{"name":"mul",...}

The turn's grammar is `MARKER call (SEP call){0,k-1}` with `call` the anyOf over
the tools of `{"name": const, "arguments": parameters}` and `k` the bound on calls
per turn (`max_tool_calls`; 1 when `parallel_tool_calls` is false). It is enforced
by `CallsHook` (an engine mask hook) around ONE compiled call constraint, which
the hook re-enters for each call, so the per-state tables do not grow with k:

  tool_choice=required   the marker is forced, then 1..k calls
  tool_choice=auto       free text, unless the output starts with the marker: then
                         1..k calls (the marker's last token is only allowed when
                         a whole call still fits)
  tool_choice=<named f>  one call, the output being f's arguments (a plain
                         constraint on f's `parameters`; no hook)

A new call (its separator's first token) is only allowed when the separator and the
shortest call fit in the tokens left, and EOS only between calls, so every turn
that the token budget allows ends with whole calls: each call parses, names a
declared tool and validates under that tool's `parameters`, the soundness of
`lattice.decode.constraints` applied call by call.

`CallStream` turns the growing text into OpenAI `tool_calls` entries: a call's id
and name once its name is written, then its arguments as they are written (the
generated JSON text itself, so streamed pieces join to the non-streamed answer).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

from lattice.serve import output

MARKER = '<tool_call>'
SEP = '\n' + MARKER
ANY_OBJECT = {'type': 'object', 'properties': {}}
DEFAULT_MAX_CALLS = 8  # calls per turn when the server and the request set no bound
_HEAD, _ARGS = '{"name":', ',"arguments":'
_DECODER = json.JSONDecoder()


def parameters(tool: dict) -> dict:
  """A tool's arguments schema (an empty object when it declares none)."""
  return tool['function'].get('parameters') or ANY_OBJECT


def call_schema(tools: Sequence[dict]) -> dict:
  """`{"name": const, "arguments": parameters}` for any one of `tools`."""
  calls = [{'type': 'object', 'properties': {
      'name': {'const': t['function']['name']}, 'arguments': parameters(t)},
      'required': ['name', 'arguments']} for t in tools]
  return calls[0] if len(calls) == 1 else {'anyOf': calls}


def new_call(name: str, arguments: str) -> dict:
  """An OpenAI `tool_calls` entry with a fresh id."""
  return {'id': f'call_{uuid.uuid4().hex[:24]}', 'type': 'function',
          'function': {'name': name, 'arguments': arguments}}


def _fewest_tokens(literal: bytes, parts: list[tuple[int, bytes]]) -> list[int]:
  """cost[j]: fewest tokens spelling literal[j:] exactly (1 << 30: impossible)."""
  cost = [0] * (len(literal) + 1)
  for j in range(len(literal) - 1, -1, -1):
    cost[j] = min((1 + cost[j + len(b)] for _, b in parts
                   if literal.startswith(b, j)), default=1 << 30)
  return cost


class Literal:
  """A fixed text (marker or separator) spelled in tokens that end inside it.

  `cost[j]`: fewest tokens spelling the text from byte j on (1 << 30: this
  vocabulary cannot); `past[j]`: bool[V], the tokens that would run past its end.
  """

  def __init__(self, text: str, token_bytes: list[bytes]):
    self.token_bytes = token_bytes
    self.data = text.encode()
    self.parts = [(t, b) for t, b in enumerate(token_bytes) if b and b in self.data]
    self.cost = _fewest_tokens(self.data, self.parts)
    # Tokens that would run past the literal's end from each position.
    self.past = [np.array([bool(b) and b.startswith(self.data[j:]) and b != self.data[j:]
                           for b in token_bytes]) for j in range(len(self.data))]

  def continuing(self, j: int) -> list[int]:
    """The tokens that spell the literal on from byte j (without passing its end)."""
    return [t for t, b in self.parts if self.data.startswith(b, j)]

  def extend(self, allowed: np.ndarray, j: int, left: int, after: int) -> None:
    """Allows the tokens that continue the literal from byte j when the rest of it
    plus `after` tokens fit in the `left` tokens after this one."""
    for t, b in self.parts:
      if self.data.startswith(b, j) and left - self.cost[j + len(b)] >= after:
        allowed[t] = True


def literals(vocab_size: int, token_bytes: Sequence[bytes | None] | None = None
             ) -> tuple[Literal, Literal]:
  """The marker and the separator over a vocabulary of `vocab_size` ids whose bytes
  are `token_bytes` (None for specials; default: the byte vocabulary). Build once
  per served model: it walks the vocabulary."""
  if token_bytes is None:
    token_bytes = [bytes([i]) for i in range(256)]
  tb = [b or b'' for b in token_bytes][:vocab_size]
  tb += [b''] * (vocab_size - len(tb))
  return Literal(MARKER, tb), Literal(SEP, tb)


class CallsHook:
  """The tool-call turn as an engine mask hook (see the module docstring).

  `call_index` is the compiled `call_schema(tools)` (a `TokenIndex`); `max_calls`
  the bound k; `required` forces the marker (else the `auto` rule); `lits` is
  `literals(...)` of the model's vocabulary. Per-sequence progress lives in
  `seq.hook_state`; each token is read once. Raises ValueError if max_calls < 1.
  """

  def __init__(self, call_index: Any, eos_id: int, lits: tuple[Literal, Literal], *,
               max_calls: int, required: bool):
    if max_calls < 1:
      raise ValueError(f'max_tool_calls: expected a positive integer, got {max_calls}')
    self.call_index, self.eos_id = call_index, eos_id
    self.max_calls, self.required = max_calls, required
    self.marker, self.sep = lits
    self.token_bytes = self.marker.token_bytes
    self.vocab = len(self.token_bytes)

  @property
  def min_tokens(self) -> int:
    """Fewest tokens of a whole turn (marker + the shortest call)."""
    return self.marker.cost[0] + self.call_index.min_tokens

  def _advance(self, seq: Any) -> dict:
    """Reads the tokens written since the last step into `seq.hook_state`: how
    much of the marker or separator is spelled, or 'free' once it is not."""
    st = seq.hook_state
    if st is None:
      st = seq.hook_state = {'phase': 'marker', 'at': 0, 'calls': 0, 'seen': 0}
    for t in seq.tokens[st['seen']:]:
      if st['phase'] in ('marker', 'sep'):
        lit = self.marker if st['phase'] == 'marker' else self.sep
        b = self.token_bytes[t] if t < len(self.token_bytes) else b''
        if b and lit.data.startswith(b, st['at']):
          st['at'] += len(b)
        else:
          st['phase'] = 'free'  # auto's free text (or EOS): no call is written
    st['seen'] = len(seq.tokens)
    return st

  def __call__(self, seq: Any, left: int) -> np.ndarray | None:
    st = self._advance(seq)
    phase = st['phase']
    if phase == 'free':
      return None
    if phase in ('marker', 'sep'):
      lit = self.marker if phase == 'marker' else self.sep
      if st['at'] == len(lit.data):  # a call starts: its own constraint takes over
        st['phase'], st['calls'] = 'call', st['calls'] + 1
        seq.set_constraint(self.call_index)
        return None
    elif phase == 'call':
      if (seq.constraint is None or st['calls'] >= self.max_calls
          or not output.complete(seq.constraint, seq.cstate)):
        return None  # inside a call, or the last call allowed: the constraint rules
      st['phase'], st['at'] = 'sep', 0  # a whole call: end the turn or start another
      seq.set_constraint(None)
      phase, lit = 'sep', self.sep
    j = st['at']
    if phase == 'marker' and not self.required:
      allowed = np.ones(self.vocab, bool)  # free text stays possible, but not
      allowed[lit.continuing(j)] = False   # a marker that leaves no room for a call
      allowed[lit.past[j]] = False         # nor one that runs into it: a call
    else:                                  # starts at a token boundary
      allowed = np.zeros(self.vocab, bool)
    if phase == 'sep' and j == 0:
      allowed[self.eos_id] = True  # the turn may end after a whole call
    lit.extend(allowed, j, left, self.call_index.min_tokens)
    return allowed


class CallStream:
  """One choice's tool calls, parsed from its text as it grows (see the module
  docstring). `named`: the output is that tool's arguments (tool_choice naming
  it). `feed(text)` returns the new `delta.tool_calls` pieces; `calls` holds the
  entries so far, arguments as written."""

  def __init__(self, named: str | None = None):
    self.named = named
    self.calls: list[dict] = []
    self._pos = 0                  # where the next marker/separator starts
    self._call: int | None = None  # the open call's '{' (None: between calls)
    self._sent = 0                 # end of the open call's arguments already given
    self._broken = False

  def _piece(self, pieces: list[dict], fragment: str, header: dict | None = None) -> None:
    j = len(self.calls) - 1
    self.calls[j]['function']['arguments'] += fragment
    if header is not None:
      pieces.append({'index': j, **header,
                     'function': {**header['function'], 'arguments': fragment}})
    elif fragment:
      if pieces and pieces[-1]['index'] == j:
        pieces[-1]['function']['arguments'] += fragment
      else:
        pieces.append({'index': j, 'function': {'arguments': fragment}})

  def feed(self, text: str) -> list[dict]:
    """Pieces for what `text` (the whole output so far) adds since the last feed."""
    pieces: list[dict] = []
    if self.named is not None:
      header = None
      if not self.calls:
        header = new_call(self.named, '')
        self.calls.append(copy.deepcopy(header))
      self._piece(pieces, text[self._sent:], header)
      self._sent = len(text)
      return pieces
    while not self._broken:
      if self._call is None and not self._open(text, pieces):
        break
      try:
        _, end = _DECODER.raw_decode(text, self._call)
      except ValueError:  # the call is still being written: all of it is arguments
        self._piece(pieces, text[self._sent:])
        self._sent = len(text)
        break
      self._piece(pieces, text[self._sent:end - 1])  # end - 1: the call's '}'
      self._pos, self._call = end, None
    return pieces

  def _open(self, text: str, pieces: list[dict]) -> bool:
    """Reads the next `<marker>{"name":N,"arguments":`; False while incomplete."""
    head = (SEP if self.calls else MARKER) + _HEAD
    rest = text[self._pos:self._pos + len(head)]
    if not head.startswith(rest):
      self._broken = True
    if self._broken or len(rest) < len(head):
      return False
    try:
      name, end = _DECODER.raw_decode(text, self._pos + len(head))
    except ValueError:
      return False
    tail = text[end:end + len(_ARGS)]
    if not isinstance(name, str) or not _ARGS.startswith(tail):
      self._broken = True
    if self._broken or len(tail) < len(_ARGS):
      return False
    self._call = self._pos + len(head) - len(_HEAD)
    self._sent = end + len(_ARGS)
    call = new_call(name, '')
    self.calls.append(copy.deepcopy(call))
    self._piece(pieces, '', call)
    return True
