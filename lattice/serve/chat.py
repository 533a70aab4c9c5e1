"""Chat messages -> one prompt.

A lattice model is trained on raw text, so a conversation is rendered to one
prompt by a template: `raw` joins the message texts with newlines (what a model
trained on plain documents expects), `tagged` writes `role: text` lines and ends
with `assistant: `. Both render the same way:

  tools        one line `tools: [{"name", "description", "parameters"}, ...]` first
  tool calls   an assistant turn's calls as `<tool_call>{"name":..,"arguments":..}`,
               one per line: the form the model writes them in (lattice.serve.tools)
  tool results each `role: tool` message's content (tagged: `tool: ...`)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lattice.serve.tools import MARKER


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
                             separators=(',', ':'), ensure_ascii=False)


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

