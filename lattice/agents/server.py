"""An OpenAI-compatible HTTP server over a Generator (`lattice serve`).

  GET  /v1/models             the one served model
  POST /v1/completions        {prompt: str | [str], max_tokens, temperature, n, stop}
  POST /v1/chat/completions   {messages: [{role, content}], max_tokens, temperature,
                               n, stop}

Either POST may constrain its output with `response_format` {type: json_schema,
json_schema: {schema}} (OpenAI) or `guided_json` / `guided_regex` (vLLM's names),
compiled by `lattice.decode.constraints` for a lattice model.

Standard library only (`http.server.ThreadingHTTPServer`), loopback by default. A bad
request gets a 4xx answer with an OpenAI-style body
`{"error": {"message": ..., "type": ...}}` and the server keeps serving; a failure
inside generation is a 500 with the same body. Generation calls are serialized (one
model, one accelerator). Chat messages are rendered to one prompt by `chat_template`
(default: the contents joined by newlines, for models trained on raw text).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lattice.agents import generator as generator_lib

MAX_BODY_BYTES = 1 << 20
MAX_N = 16


class RequestError(Exception):
  """A client mistake: becomes a 4xx JSON error."""

  def __init__(self, message: str, status: int = 400,
               kind: str = 'invalid_request_error'):
    super().__init__(message)
    self.status, self.kind = status, kind


def raw_chat_template(messages: Sequence[dict[str, str]]) -> str:
  return '\n'.join(m['content'] for m in messages)


def tagged_chat_template(messages: Sequence[dict[str, str]]) -> str:
  return ''.join(f'{m["role"]}: {m["content"]}\n' for m in messages) + 'assistant: '


def _field(body: dict, name: str, kinds: tuple[type, ...], default: Any,
           what: str) -> Any:
  if name not in body or body[name] is None:
    return default
  value = body[name]
  if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
    raise RequestError(f'{name}: expected {what}, got {json.dumps(value)[:60]}')
  return value


def _sampling_fields(body: dict) -> tuple[int, float, int, list[str]]:
  max_tokens = _field(body, 'max_tokens', (int,), 16, 'a positive integer')
  if max_tokens < 1:
    raise RequestError(f'max_tokens: expected a positive integer, got {max_tokens}')
  temperature = float(_field(body, 'temperature', (int, float), 1.0, 'a number'))
  if not 0.0 <= temperature <= 2.0:
    raise RequestError(f'temperature: expected a number in [0, 2], got {temperature}')
  n = _field(body, 'n', (int,), 1, 'a positive integer')
  if not 1 <= n <= MAX_N:
    raise RequestError(f'n: expected an integer in [1, {MAX_N}], got {n}')
  stop = _field(body, 'stop', (str, list), [], 'a string or a list of strings')
  stop = [stop] if isinstance(stop, str) else stop
  if not all(isinstance(s, str) and s for s in stop):
    raise RequestError('stop: expected non-empty strings')
  return max_tokens, temperature, n, stop


def _constraint(body: dict) -> dict | None:
  """`response_format` json_schema (OpenAI) or `guided_regex` / `guided_json`
  (vLLM) -> the Generator's constraint dict."""
  fmt = body.get('response_format')
  if fmt is not None:
    if not isinstance(fmt, dict) or fmt.get('type') not in ('text', 'json_schema'):
      raise RequestError("response_format: expected {\"type\": \"json_schema\", "
                         "\"json_schema\": {\"schema\": ...}} or type \"text\"")
    if fmt['type'] == 'json_schema':
      schema = (fmt.get('json_schema') or {}).get('schema')
      if not isinstance(schema, dict):
        raise RequestError('response_format.json_schema.schema: expected an object')
      return {'json_schema': schema}
  if body.get('guided_json') is not None:
    if not isinstance(body['guided_json'], dict):
      raise RequestError('guided_json: expected a JSON schema object')
    return {'json_schema': body['guided_json']}
  if body.get('guided_regex') is not None:
    if not isinstance(body['guided_regex'], str):
      raise RequestError('guided_regex: expected a string')
    return {'regex': body['guided_regex']}
  return None


def _cut(text: str, stop: list[str]) -> tuple[str, bool]:
  cuts = [text.find(s) for s in stop if s in text]
  return (text[:min(cuts)], True) if cuts else (text, False)


class Service:
  """The request logic, separate from HTTP plumbing (and testable without it)."""

  def __init__(self, gen: generator_lib.Generator, model_name: str = 'lattice',
               chat_template: Callable[[Sequence[dict]], str] = raw_chat_template):
    self.gen, self.model_name, self.chat_template = gen, model_name, chat_template
    self._lock = threading.Lock()

  def models(self) -> dict:
    return {'object': 'list', 'data': [{'id': self.model_name, 'object': 'model',
                                        'created': 0, 'owned_by': 'lattice'}]}

  def _run(self, prompts: list[str], body: dict) -> tuple[list[str], list[str], int]:
    max_tokens, temperature, n, stop = _sampling_fields(body)
    fits = getattr(self.gen, 'max_tokens_for', None)
    if fits is not None:
      for p in prompts:
        if fits(p) < max_tokens:
          raise RequestError(f'max_tokens: the prompt ({len(p)} characters) leaves '
                             f'room for {max(fits(p), 0)} new tokens in the model\'s '
                             f'context, fewer than max_tokens={max_tokens}')
    constraint = _constraint(body)
    if constraint is not None:
      compile_ = getattr(self.gen, 'compile_constraint', None)
      if compile_ is not None:
        try:
          constraint = compile_(constraint)
        except NotImplementedError as e:
          raise RequestError(str(e), 400) from None
        except Exception as e:  # pylint: disable=broad-except
          raise RequestError(f'constraint: cannot compile: {type(e).__name__}: {e}'
                             ) from None
    rows = [p for p in prompts for _ in range(n)]
    with self._lock:
      texts = self.gen.generate(rows, max_tokens, temperature, constraint)
    out, reasons = [], []
    for text in texts:
      text, stopped = _cut(text, stop)
      out.append(text)
      # A byte model emits one token per byte: fewer than max_tokens means EOS.
      full = len(text.encode('utf-8')) >= max_tokens
      reasons.append('stop' if stopped or not full else 'length')
    return out, reasons, sum(len(p.encode('utf-8')) for p in rows)

  def _envelope(self, kind: str, choices: list[dict], texts: list[str],
                prompt_tokens: int) -> dict:
    completion = sum(len(t.encode('utf-8')) for t in texts)
    prefix = 'chatcmpl' if kind.startswith('chat') else 'cmpl'
    return {'id': f'{prefix}-{uuid.uuid4().hex[:12]}', 'object': kind,
            'created': int(time.time()), 'model': self.model_name, 'choices': choices,
            'usage': {'prompt_tokens': prompt_tokens, 'completion_tokens': completion,
                      'total_tokens': prompt_tokens + completion}}

  def completions(self, body: dict) -> dict:
    if 'prompt' not in body:
      raise RequestError('prompt: missing required field')
    prompt = body['prompt']
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(
        isinstance(p, str) for p in prompts):
      raise RequestError('prompt: expected a string or a non-empty list of strings')
    texts, reasons, used = self._run(prompts, body)
    choices = [{'index': i, 'text': t, 'logprobs': None, 'finish_reason': r}
               for i, (t, r) in enumerate(zip(texts, reasons))]
    return self._envelope('text_completion', choices, texts, used)

  def chat(self, body: dict) -> dict:
    messages = body.get('messages')
    if messages is None:
      raise RequestError('messages: missing required field')
    if not isinstance(messages, list) or not messages:
      raise RequestError('messages: expected a non-empty list of {role, content}')
    for i, m in enumerate(messages):
      if not (isinstance(m, dict) and isinstance(m.get('role'), str)
              and isinstance(m.get('content'), str)):
        raise RequestError(f'messages[{i}]: expected {{"role": str, "content": str}}')
    texts, reasons, used = self._run([self.chat_template(messages)], body)
    choices = [{'index': i, 'message': {'role': 'assistant', 'content': t},
                'finish_reason': r} for i, (t, r) in enumerate(zip(texts, reasons))]
    return self._envelope('chat.completion', choices, texts, used)


ROUTES = {('GET', '/v1/models'): 'models', ('POST', '/v1/completions'): 'completions',
          ('POST', '/v1/chat/completions'): 'chat'}


def make_handler(service: Service) -> type[BaseHTTPRequestHandler]:

  class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
      del format, args  # quiet: tests and experiments drive many requests

    def _send(self, status: int, payload: dict) -> None:
      data = json.dumps(payload).encode()
      self.send_response(status)
      self.send_header('Content-Type', 'application/json')
      self.send_header('Content-Length', str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def _error(self, status: int, message: str, kind: str) -> None:
      self._send(status, {'error': {'message': message, 'type': kind,
                                    'code': status}})

    def _handle(self, method: str) -> None:
      path = self.path.split('?', 1)[0].rstrip('/')
      try:
        name = ROUTES.get((method, path))
        if name is None:
          if any(p == path for _, p in ROUTES):
            raise RequestError(f'{method} not allowed on {path}', 405)
          raise RequestError(f'no route {method} {path}; try /v1/models, '
                             '/v1/completions or /v1/chat/completions', 404,
                             'not_found_error')
        if method == 'GET':
          self._send(200, getattr(service, name)())
          return
        size = int(self.headers.get('Content-Length') or 0)
        if size > MAX_BODY_BYTES:
          raise RequestError(f'request body of {size} bytes exceeds '
                             f'{MAX_BODY_BYTES}', 413)
        raw = self.rfile.read(size)
        try:
          body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
          raise RequestError(f'body is not valid JSON: {e}') from None
        if not isinstance(body, dict):
          raise RequestError('body: expected a JSON object')
        self._send(200, getattr(service, name)(body))
      except RequestError as e:
        self._error(e.status, str(e), e.kind)
      except Exception as e:  # pylint: disable=broad-except
        # The request failed, not the server: answer and keep serving.
        self._error(500, f'{type(e).__name__}: {e}', 'server_error')

    def do_GET(self):  # noqa: N802
      self._handle('GET')

    def do_POST(self):  # noqa: N802
      self._handle('POST')

  return Handler


class Server:
  """A running server; `with Server(gen) as s:` serves on `s.url` in a thread."""

  def __init__(self, gen: generator_lib.Generator, *, host: str = '127.0.0.1',
               port: int = 0, model_name: str = 'lattice',
               chat_template: Callable[[Sequence[dict]], str] = raw_chat_template):
    self.service = Service(gen, model_name, chat_template)
    self.httpd = ThreadingHTTPServer((host, port), make_handler(self.service))
    self.httpd.daemon_threads = True
    self.host, self.port = self.httpd.server_address[:2]
    self._thread: threading.Thread | None = None

  @property
  def url(self) -> str:
    return f'http://{self.host}:{self.port}'

  def start(self) -> Server:
    self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self._thread.start()
    return self

  def serve_forever(self) -> None:
    self.httpd.serve_forever()

  def close(self) -> None:
    if self._thread is not None:
      self.httpd.shutdown()
      self._thread.join()
    self.httpd.server_close()

  def __enter__(self) -> Server:
    return self.start()

  def __exit__(self, *exc) -> None:
    self.close()


def main(argv: list[str]) -> None:
  """`lattice serve --workdir DIR [--config FILE.py:MODE] [--host H] [--port P]`."""
  import argparse
  parser = argparse.ArgumentParser(
      prog='lattice serve', description='Serve a trained lattice model over an '
      'OpenAI-compatible API (/v1/models, /v1/completions, /v1/chat/completions).')
  parser.add_argument('--workdir', required=True,
                      help='training run folder holding checkpoints/')
  parser.add_argument('--config', default=None,
                      help='the run\'s FILE.py:MODE (default: WORKDIR/config.json)')
  parser.add_argument('--host', default='127.0.0.1',
                      help='bind address (default loopback; 0.0.0.0 exposes it)')
  parser.add_argument('--port', type=int, default=8000)
  parser.add_argument('--model-name', default=None)
  parser.add_argument('--chat-template', choices=('raw', 'tagged'), default='raw')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step')
  args = parser.parse_args(argv)
  from lattice import config as config_lib
  cfg = None
  if args.config:
    from lattice import experiment
    filename, *mode = args.config.split(':', 1)
    cfg = config_lib.build(experiment.load_experiment_module(filename).get_config(*mode))
  gen = generator_lib.LatticeGenerator.from_workdir(args.workdir, cfg, step=args.step)
  template = raw_chat_template if args.chat_template == 'raw' else tagged_chat_template
  server = Server(gen, host=args.host, port=args.port,
                  model_name=args.model_name or gen.name, chat_template=template)
  print(f'[lattice] serving {server.service.model_name} on {server.url}/v1', flush=True)
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.httpd.server_close()
