"""The OpenAI request bodies `lattice serve` accepts, as pydantic models.

Fields follow the OpenAI API reference (completions, chat completions) plus vLLM's
`guided_json` / `guided_regex` and lattice's `max_tool_calls` (the bound on tool
calls per chat turn, see `lattice.serve.tools`). Types are strict (a string "3"
is not an integer, `true` is not a number), so a wrong field is a 400 naming it;
fields the server does not act on (`user`, `frequency_penalty`, ...) are accepted
and ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

MAX_N = 16
MAX_TOP_LOGPROBS = 20
MAX_TOOL_CALLS = 64  # the largest per-turn bound a request or server may set


class _Model(BaseModel):
  model_config = ConfigDict(extra='allow', strict=True, populate_by_name=True)


class StreamOptions(_Model):
  include_usage: StrictBool = False


class JsonSchemaSpec(_Model):
  name: StrictStr = 'response'
  description: StrictStr | None = None
  schema_: dict[str, Any] = Field(alias='schema')
  strict: StrictBool | None = None


class ResponseFormat(_Model):
  type: Literal['text', 'json_object', 'json_schema']
  json_schema: JsonSchemaSpec | None = None


class _Common(_Model):
  model: StrictStr | None = None
  max_tokens: Annotated[StrictInt, Field(ge=0)] | None = None
  temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
  top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
  n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] = 1
  stop: StrictStr | list[StrictStr] | None = None
  stream: StrictBool = False
  stream_options: StreamOptions | None = None
  seed: StrictInt | None = None
  response_format: ResponseFormat | None = None
  guided_json: dict[str, Any] | None = None
  guided_regex: StrictStr | None = None

  def stops(self) -> list[str]:
    return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class CompletionRequest(_Common):
  prompt: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]
  echo: StrictBool = False
  logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None


class TextPart(_Model):
  type: Literal['text']
  text: StrictStr


class FunctionCall(_Model):
  name: StrictStr
  arguments: StrictStr


class ToolCall(_Model):
  id: StrictStr
  type: Literal['function'] = 'function'
  function: FunctionCall


class Message(_Model):
  role: Literal['system', 'developer', 'user', 'assistant', 'tool']
  content: StrictStr | list[TextPart] | None = None
  name: StrictStr | None = None
  tool_calls: list[ToolCall] | None = None
  tool_call_id: StrictStr | None = None


class FunctionDef(_Model):
  name: StrictStr
  description: StrictStr | None = None
  parameters: dict[str, Any] | None = None
  strict: StrictBool | None = None


class Tool(_Model):
  type: Literal['function']
  function: FunctionDef


class NamedFunction(_Model):
  name: StrictStr


class NamedToolChoice(_Model):
  type: Literal['function']
  function: NamedFunction


class ChatRequest(_Common):
  messages: Annotated[list[Message], Field(min_length=1)]
  max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
  logprobs: StrictBool = False
  top_logprobs: Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
  tools: list[Tool] | None = None
  tool_choice: Literal['none', 'auto', 'required'] | NamedToolChoice | None = None
  parallel_tool_calls: StrictBool | None = None  # None: true, as OpenAI's default
  # lattice's bound on calls per turn (default: the server's --max-tool-calls).
  max_tool_calls: Annotated[StrictInt, Field(ge=1, le=MAX_TOOL_CALLS)] | None = None


_TYPE_TAGS = frozenset({'str', 'int', 'float', 'bool', 'none', 'dict', 'list'})


def field_path(loc: tuple) -> str:
  """pydantic's error location -> `messages[0].content` (`body` and union-branch
  tags such as `str` or `list[TextPart]` dropped)."""
  out = ''
  for part in loc:
    if isinstance(part, int):
      out += f'[{part}]'
    elif part != 'body' and part not in _TYPE_TAGS and not any(
        c in part for c in '[(-') and not part[:1].isupper():
      out += ('.' if out else '') + part
  return out or 'body'


def describe(errors: list[dict]) -> str:
  """One line for a failed validation: the most specific error, field first."""
  if any(e.get('type') == 'json_invalid' for e in errors):
    return 'body: not valid JSON'
  best = max(errors, key=lambda e: len(e.get('loc', ())))
  return f'{field_path(tuple(best.get("loc", ())))}: {best.get("msg", "invalid")}'
