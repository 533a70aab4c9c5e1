"""Chat messages -> one prompt, and tool calls: their schemas, marker and parsing.

A lattice model is trained on raw text, so a conversation is rendered to one
prompt by a template: `raw` joins the message texts with newlines (what a model
trained on plain documents expects), `tagged` writes `role: text` lines and ends
with `assistant: `. Both render the same way:

  tools        one line `tools: [{"name", "description", "parameters"}, ...]` first
  tool calls   an assistant turn's calls as `<tool_call>{"name":..,"arguments":..}`
  tool results a `role: tool` message's content (tagged: `tool: ...`)

Tool calls are generated under a constraint (`lattice.decode.constraints`), in the
Hermes function-calling format (a `<tool_call>` marker, then compact JSON):

  tool_choice=<named f>  the output is f's arguments, under f's `parameters` schema
  tool_choice=required   the output is `{"name": N, "arguments": A}` for one tool
                         (anyOf over the tools, each name a const)
  tool_choice=auto       free text, except that output starting with `<tool_call>`
                         continues under the `required` schema; the marker's last
                         byte is only allowed when a whole call still fits
  tool_choice=none       free text, tools only shown in the prompt
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

MARKER = '<tool_call>'
ANY_OBJECT = {'type': 'object', 'properties': {}}


def _text(content: Any) -> str:
  """A message's content: a string, a list of text parts, or None."""
  if content is None:
    return ''
  if isinstance(content, str):
    return content
  return ''.join(part['text'] for part in content)


def render_call(call: dict) -> str:
  """An assistant tool call as the model writes it (arguments is a JSON string)."""
  fn = call['function']
  try:
    args = json.loads(fn['arguments'])
  except ValueError:
    args = fn['arguments']
  return MARKER + json.dumps({'name': fn['name'], 'arguments': args},
                             separators=(',', ':'))


def _message_text(m: dict) -> str:
  parts = [_text(m.get('content'))] if m.get('content') else []
  parts += [render_call(c) for c in m.get('tool_calls') or []]
  return '\n'.join(parts)


def _tools_line(tools: Sequence[dict] | None) -> list[str]:
  if not tools:
    return []
  fns = [{k: t['function'][k] for k in ('name', 'description', 'parameters')
          if t['function'].get(k) is not None} for t in tools]
  return ['tools: ' + json.dumps(fns, separators=(',', ':'))]


def raw_template(messages: Sequence[dict], tools: Sequence[dict] | None = None) -> str:
  """The message texts (tools line first) joined by newlines."""
  return '\n'.join(_tools_line(tools) + [_message_text(m) for m in messages])


def tagged_template(messages: Sequence[dict], tools: Sequence[dict] | None = None) -> str:
  """`role: text` lines, then `assistant: ` for the model to continue."""
  lines = _tools_line(tools) + [f'{m["role"]}: {_message_text(m)}' for m in messages]
  return ''.join(l + '\n' for l in lines) + 'assistant: '


TEMPLATES = {'raw': raw_template, 'tagged': tagged_template}


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


def parse_calls(text: str, named: str | None) -> list[dict] | None:
  """The tool calls in a generated text; None when it is plain content."""
  if named is not None:
    return [new_call(named, text)]
  body = text[len(MARKER):] if text.startswith(MARKER) else text
  try:
    value = json.loads(body)
  except ValueError:
    return None
  if not (isinstance(value, dict) and isinstance(value.get('name'), str)
          and 'arguments' in value):
    return None
  return [new_call(value['name'], json.dumps(value['arguments'],
                                             separators=(',', ':')))]


class MarkerHook:
  """The `auto` rule as an engine mask hook (see the module docstring).

  While the output so far spells a proper prefix of MARKER, a token that extends it
  is allowed only if the rest of the marker (spelled in the fewest tokens of the
  vocabulary) plus the shortest call fit in the tokens left, and a token that runs
  past the marker's end is not (the call starts at a token boundary); once the
  marker is complete, the sequence switches to the call constraint. With the byte
  tokenizer each marker byte is one token.
  """

  def __init__(self, call_index: Any, vocab_size: int,
               token_bytes: Sequence[bytes | None] | None = None):
    self.call_index, self.vocab = call_index, vocab_size
    self.marker = MARKER.encode()
    if token_bytes is None:  # the byte vocabulary
      token_bytes = [bytes([i]) for i in range(256)]
    self.token_bytes = [b or b'' for b in token_bytes][:vocab_size]
    # Tokens that spell part of the marker, and the fewest tokens spelling
    # marker[j:] for each j (INF when the vocabulary cannot).
    n = len(self.marker)
    self.parts = [(t, b) for t, b in enumerate(self.token_bytes)
                  if b and b in self.marker]
    self.cost = [0] * (n + 1)
    for j in range(n - 1, -1, -1):
      self.cost[j] = min((1 + self.cost[j + len(b)] for _, b in self.parts
                          if self.marker.startswith(b, j)), default=1 << 30)

  def __call__(self, seq: Any, left: int) -> np.ndarray | None:
    written = [self.token_bytes[t] if t < len(self.token_bytes) else b''
               for t in seq.tokens]
    out = b''.join(written)
    if seq.constraint is not None or not self.marker.startswith(out) or not all(written):
      return None  # free text (or a special token): not a tool call
    if out == self.marker:
      seq.set_constraint(self.call_index)
      return None
    j, allowed = len(out), np.ones(self.vocab, bool)
    rest = self.marker[j:]
    for t, b in enumerate(self.token_bytes):
      if b and b.startswith(rest) and b != rest:
        allowed[t] = False  # would run past the marker
    for t, b in self.parts:
      if rest.startswith(b) and left - self.cost[j + len(b)] < self.call_index.min_tokens:
        allowed[t] = False
    return allowed
