"""The OpenAI-compatible ASGI app (FastAPI on uvicorn) over one or more served models.

  GET  /v1/models              every served model id
  POST /v1/completions         prompt (string, strings, token ids), echo, logprobs
  POST /v1/chat/completions    messages (content parts, tool calls, tool results),
                               tools / tool_choice / parallel_tool_calls (and
                               lattice's max_tool_calls), logprobs / top_logprobs

Both POSTs take max_tokens (chat: max_completion_tokens too), temperature, top_p,
n, stop, seed, stream (+ stream_options.include_usage, Server-Sent Events ending in
`data: [DONE]`), response_format (json_object, json_schema) and vLLM's
guided_json / guided_regex. Every client error is a 4xx
`{"error": {"message", "type", "param", "code"}}` whose message starts with the
field; an unknown model is a 404. Request bodies are read by the ASGI stack, so
an error answer never leaves bytes on a keep-alive connection.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lattice.serve import format as fmt
from lattice.serve import protocol
from lattice.serve import run as run_lib
from lattice.serve import served as served_lib
from lattice.serve import tools as tools_lib

MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class RequestError(Exception):
  """A client mistake: becomes a 4xx JSON error."""

  def __init__(self, message: str, status: int = 400,
               kind: str = 'invalid_request_error'):
    super().__init__(message)
    self.status, self.kind = status, kind


def _error(status: int, message: str, kind: str) -> JSONResponse:
  param = message.split(':', 1)[0] if ':' in message else None
  return JSONResponse({'error': {'message': message, 'type': kind, 'param': param,
                                 'code': status}}, status_code=status)


def create_app(models: Sequence[served_lib.ServedModel], *,
               max_tool_calls: int = tools_lib.DEFAULT_MAX_CALLS) -> FastAPI:
  """The app serving `models` (the first is the default when a request names none).

  `max_tool_calls` bounds the tool calls of one chat turn (a request may ask for
  fewer). Raises ValueError when `models` is empty or the bound is outside
  [1, protocol.MAX_TOOL_CALLS].
  """
  if not models:
    raise ValueError('create_app: no models to serve')
  if not 1 <= max_tool_calls <= protocol.MAX_TOOL_CALLS:
    raise ValueError(f'--max-tool-calls: expected 1..{protocol.MAX_TOOL_CALLS}, got '
                     f'{max_tool_calls}')
  by_name = {m.name: m for m in models}
  app = FastAPI(title='lattice', docs_url=None, redoc_url=None, openapi_url=None)

  @app.exception_handler(RequestError)
  async def _request_error(_, e: RequestError):
    return _error(e.status, str(e), e.kind)

  @app.exception_handler(RequestValidationError)
  async def _invalid(_, e: RequestValidationError):
    return _error(400, protocol.describe(list(e.errors())), 'invalid_request_error')

  @app.exception_handler(HTTPException)
  async def _http(request: Request, e: HTTPException):
    if isinstance(e.__cause__, RequestError):  # raised while the body was read
      return _error(e.__cause__.status, str(e.__cause__), e.__cause__.kind)
    if e.status_code == 404:
      return _error(404, f'no route {request.method} {request.url.path}; try '
                    '/v1/models, /v1/completions or /v1/chat/completions', 'not_found_error')
    if e.status_code == 405:
      return _error(405, f'{request.method} not allowed on {request.url.path}',
                    'invalid_request_error')
    return _error(e.status_code, str(e.detail), 'invalid_request_error')

  @app.exception_handler(Exception)
  async def _crash(_, e: Exception):
    # The request failed, not the server: answer and keep serving.
    return _error(500, f'{type(e).__name__}: {e}', 'server_error')

  def pick(name: str | None) -> served_lib.ServedModel:
    if not name:
      return models[0]
    if name not in by_name:
      raise RequestError(f'model: {name!r} is not served here; served: '
                         f'{", ".join(by_name)}', 404, 'model_not_found')
    return by_name[name]

  @app.get('/v1/models')
  async def list_models():
    return {'object': 'list', 'data': [m.card() for m in models]}

  @app.post('/v1/completions')
  async def completions(req: protocol.CompletionRequest):
    served = pick(req.model)
    prompts = _encode_prompts(served, req.prompt)
    max_tokens = DEFAULT_MAX_TOKENS if req.max_tokens is None else req.max_tokens
    if max_tokens == 0 and not req.echo:
      raise RequestError('max_tokens: expected a positive integer (0 only with echo)')
    _check_room(served, prompts, max_tokens)
    index = await _constraint(served, req, max_tokens)
    settings = _settings(req, max_tokens, index, prompt_logprobs=req.echo and (
        req.logprobs is not None))
    run = run_lib.Run(served, prompts, req.n, settings)
    view = fmt.CompletionView(served.name, run, req)
    if req.stream:
      return _warned(_sse(run, view, _include_usage(req)), index)
    return _warned(await view.collect(), index)

  @app.post('/v1/chat/completions')
  async def chat_completions(req: protocol.ChatRequest):
    served = pick(req.model)
    messages = [m.model_dump(exclude_none=True) for m in req.messages]
    _check_messages(messages)
    tools = [t.model_dump(exclude_none=True) for t in req.tools or []]
    choice = req.tool_choice or ('auto' if tools else 'none')
    prompt = served.template(messages, tools)
    prompts = [served.tok.encode(prompt, bos=True)]
    room = served.engine.room(len(prompts[0]))
    if room < 1:
      raise RequestError(f'messages: the prompt ({len(prompts[0])} tokens) leaves no '
                         f'room in the model\'s context of {served.engine.max_len}')
    if req.max_tokens == 0:
      raise RequestError('max_tokens: expected a positive integer')
    max_tokens = req.max_completion_tokens or req.max_tokens or room
    _check_room(served, prompts, max_tokens)
    index, named, hold, hook = await _tool_plan(served, req, tools, choice, max_tokens,
                                                _max_calls(req, max_tool_calls))
    settings = _settings(req, max_tokens, index, hold=hold, mask_hook=hook)
    run = run_lib.Run(served, prompts, req.n, settings)
    view = fmt.ChatView(served.name, run, req, tool_mode=choice != 'none' and bool(tools),
                        named=named)
    if req.stream:
      return _warned(_sse(run, view, _include_usage(req)), index)
    return _warned(await view.collect(), index)

  app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
  return app


class BodyLimit:
  """ASGI middleware: a body over `limit` bytes is a 413, whether it declares its
  length or arrives chunked (counted as it is read)."""

  def __init__(self, app, limit: int):
    self.app, self.limit = app, limit

  async def __call__(self, scope, receive, send):
    if scope['type'] != 'http':
      return await self.app(scope, receive, send)
    size = dict(scope['headers']).get(b'content-length', b'')
    if size.isdigit() and int(size) > self.limit:
      return await _error(413, f'body: {int(size)} bytes exceed the limit of '
                          f'{self.limit}', 'invalid_request_error')(scope, receive, send)
    seen = 0

    async def counted():
      nonlocal seen
      message = await receive()
      seen += len(message.get('body', b''))
      if seen > self.limit:
        raise RequestError(f'body: more than {self.limit} bytes (the limit)', 413)
      return message

    return await self.app(scope, counted, send)


async def _tool_plan(served, req, tools: list[dict], choice, max_tokens: int,
                     max_calls: int):
  """(constraint, named tool, held text prefix, mask hook) for a chat request's
  tool_choice (see lattice.serve.tools)."""
  if choice != 'none' and not tools:
    raise RequestError('tool_choice: needs tools')
  if choice == 'none':
    return await _constraint(served, req, max_tokens), None, None, None
  if req.response_format is not None and req.response_format.type != 'text':
    raise RequestError('response_format: cannot be combined with tools unless '
                       'tool_choice is "none"')
  if isinstance(choice, protocol.NamedToolChoice):
    named = choice.function.name
    tool = next((t for t in tools if t['function']['name'] == named), None)
    if tool is None:
      raise RequestError(f'tool_choice.function.name: no tool named {named!r}')
    index = await _compile(served, 'json_schema', tools_lib.parameters(tool),
                           'tools.function.parameters', max_tokens,
                           tool['function'].get('strict'))
    return index, named, '', None
  call = await _compile(served, 'json_schema', tools_lib.call_schema(tools), 'tools',
                        None, any(t['function'].get('strict') for t in tools))
  lits = await asyncio.to_thread(served.tool_literals)  # walks the vocabulary once
  hook = tools_lib.CallsHook(call, served.tok.eos_id, lits, max_calls=max_calls,
                             required=choice == 'required')
  if choice == 'required' and hook.marker.cost[0] >= 1 << 30:
    raise RequestError(f'tool_choice: this model\'s vocabulary cannot spell the tool '
                       f'call marker {tools_lib.MARKER}')
  if choice == 'required' and hook.min_tokens > max_tokens:
    raise RequestError(f'max_tokens: the shortest tool call (marker included) takes '
                       f'{hook.min_tokens} tokens, more than max_tokens={max_tokens}')
  return None, None, tools_lib.MARKER, hook


def _max_calls(req, cap: int) -> int:
  """The bound on tool calls in this turn: 1 without parallel_tool_calls, else the
  request's max_tool_calls (at most the server's cap) or the cap."""
  if req.max_tool_calls is not None and req.max_tool_calls > cap:
    raise RequestError(f'max_tool_calls: at most {cap} on this server (lattice serve '
                       '--max-tool-calls)')
  if req.parallel_tool_calls is False:
    return 1
  return req.max_tool_calls or cap


def _check_messages(messages: list[dict]) -> None:
  """Content where a role needs it, and each tool result (`role: tool`) answering
  by tool_call_id a call of the nearest assistant message before it, as OpenAI
  requires; raises RequestError naming the message."""
  calls: set[str] = set()
  for i, m in enumerate(messages):
    if m['role'] in ('system', 'developer', 'user', 'tool') and 'content' not in m:
      raise RequestError(f'messages[{i}].content: required for role {m["role"]}')
    if m['role'] == 'assistant':
      if 'content' not in m and not m.get('tool_calls'):
        raise RequestError(f'messages[{i}]: an assistant message needs content or '
                           'tool_calls')
      calls = {c['id'] for c in m.get('tool_calls') or []}
    if m['role'] == 'tool':
      if 'tool_call_id' not in m:
        raise RequestError(f'messages[{i}].tool_call_id: required for role tool')
      if m['tool_call_id'] not in calls:
        raise RequestError(f'messages[{i}].tool_call_id: {m["tool_call_id"]!r} answers '
                           'no tool call of the preceding assistant message')


def _include_usage(req) -> bool:
  return bool(req.stream_options and req.stream_options.include_usage)


def _warned(response, index):
  """`response` with the constraint compiler's warnings (valid outputs the schema
  allows that will never be written, e.g. optional members shed past a size cap):
  a `warnings` list in a JSON body, an `X-Lattice-Warnings` header (JSON list) on a
  stream. Unchanged when there are none."""
  warnings = list(getattr(index, 'warnings', ()) or ())
  if not warnings:
    return response
  if isinstance(response, dict):
    return {**response, 'warnings': warnings}
  response.headers['X-Lattice-Warnings'] = json.dumps(warnings)
  return response


def _sse(run: run_lib.Run, view, include_usage: bool) -> StreamingResponse:
  async def events():
    try:
      async for chunk in view.chunks(include_usage):
        yield f'data: {json.dumps(chunk)}\n\n'
    except Exception as e:  # pylint: disable=broad-except
      # Headers are gone: the error travels as an event, as OpenAI's does.
      yield f'data: {json.dumps({"error": {"message": f"{type(e).__name__}: {e}", "type": "server_error"}})}\n\n'
    finally:
      run.cancel()
    yield 'data: [DONE]\n\n'
  return StreamingResponse(events(), media_type='text/event-stream',
                           headers={'Cache-Control': 'no-cache'})


def _encode_prompts(served: served_lib.ServedModel, prompt) -> list:
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(prompt, str):
    return [served.tok.encode(prompt, bos=True)]
  if not prompt:
    raise RequestError('prompt: expected a string, strings or token ids, got []')
  rows = [prompt] if isinstance(prompt[0], int) else prompt
  out = []
  for i, row in enumerate(rows):
    if isinstance(row, str):
      out.append(served.tok.encode(row, bos=True))
      continue
    bad = [t for t in row if not 0 <= t < served.engine.vocab]
    if bad:
      raise RequestError(f'prompt[{i}]: token id {bad[0]} outside the vocabulary '
                         f'[0, {served.engine.vocab})')
    out.append(np.asarray([served.tok.bos_id, *row], np.int32))
  return out


def _check_room(served, prompts, max_tokens: int) -> None:
  for ids in prompts:
    room = served.engine.room(len(ids))
    if room < max_tokens:
      raise RequestError(f'max_tokens: the prompt ({len(ids)} tokens) leaves room for '
                         f'{max(room, 0)} new tokens in the model\'s context of '
                         f'{served.engine.max_len}, fewer than max_tokens={max_tokens}')


async def _compile(served, kind: str, spec, field: str, max_tokens: int | None,
                   strict: bool | None = None):
  """Compiles off the event loop; compiler errors and a shortest match longer than
  max_tokens are 400s naming `field`. `strict` (OpenAI's json_schema / function
  `strict`): every unsupported part is a 400, not a warning (served.compile)."""
  try:
    index = await asyncio.to_thread(served.compile, kind, spec, bool(strict))
  except (ValueError, TypeError, RecursionError) as e:
    raise RequestError(f'{field}: cannot be enforced: {e}') from None
  if max_tokens is not None and index.min_tokens > max_tokens:
    raise RequestError(f'max_tokens: the shortest output matching {field} takes '
                       f'{index.min_tokens} tokens, more than max_tokens={max_tokens}')
  return index


async def _constraint(served, req, max_tokens: int):
  fmt_ = req.response_format
  if fmt_ is not None and fmt_.type == 'json_schema':
    if fmt_.json_schema is None:
      raise RequestError('response_format.json_schema: required for type json_schema')
    return await _compile(served, 'json_schema', fmt_.json_schema.schema_,
                          'response_format.json_schema.schema', max_tokens,
                          fmt_.json_schema.strict)
  if fmt_ is not None and fmt_.type == 'json_object':
    return await _compile(served, 'json_object', None, 'response_format', max_tokens)
  if req.guided_json is not None:
    return await _compile(served, 'json_schema', req.guided_json, 'guided_json',
                          max_tokens)
  if req.guided_regex is not None:
    return await _compile(served, 'regex', req.guided_regex, 'guided_regex', max_tokens)
  return None


def _settings(req, max_tokens: int, index, **kwargs) -> run_lib.Settings:
  if any(not s for s in req.stops()):
    raise RequestError('stop: expected non-empty strings')
  return run_lib.Settings(
      max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
      seed=secrets.randbits(31) if req.seed is None else req.seed,
      stops=tuple(req.stops()), constraint=index, **kwargs)


