"""OpenAI response bodies from a `Run`'s deltas: whole responses and stream chunks.

`CompletionView` writes `text_completion` objects (logprobs as `tokens`,
`token_logprobs`, `top_logprobs`, `text_offset`; with `echo` the prompt comes
first, its tokens scored too, which is what lm-eval's loglikelihood requests read).
`ChatView` writes `chat.completion` objects (logprobs as `content` entries with
`token`, `logprob`, `bytes`, `top_logprobs`), with `tool_calls` when the output is
one or more tool calls (`lattice.serve.tools.CallStream`: streamed as
`delta.tool_calls` pieces with `index`, id and name first, then the arguments as
they are written). `collect()` gives the whole body, `chunks(include_usage)` the
stream's chunk objects; both read the same deltas, so they carry the same text
and the same calls.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from lattice.serve import output
from lattice.serve import run as run_lib
from lattice.serve import tools as tools_lib


def _id(prefix: str) -> str:
  return f'{prefix}-{uuid.uuid4().hex[:24]}'


class _View:
  object_name = ''
  chunk_name = ''
  prefix = ''

  def __init__(self, model: str, run: run_lib.Run, req: Any):
    self.model, self.run, self.req = model, run, req
    self.id, self.created = _id(self.prefix), int(time.time())

  def _body(self, kind: str, choices: list[dict], usage: dict | None) -> dict:
    body = {'id': self.id, 'object': kind, 'created': self.created,
            'model': self.model, 'choices': choices}
    if usage is not None or kind == self.object_name:
      body['usage'] = usage
    return body


class CompletionView(_View):
  object_name, chunk_name, prefix = 'text_completion', 'text_completion', 'cmpl'

  def __init__(self, model, run, req):
    super().__init__(model, run, req)
    self.k = req.logprobs
    self.offsets = [0] * len(run.choices)  # characters written per choice

  def _logprobs(self, index: int, tokens: list, text: str) -> dict | None:
    """Legacy completions logprobs for `tokens`, which spell `text` (appended)."""
    if self.k is None:
      return None
    out = {'tokens': [], 'token_logprobs': [], 'top_logprobs': [], 'text_offset': []}
    start = self.offsets[index]
    seen = b''
    for t in tokens:
      out['tokens'].append(self.run.table.text(t.id))
      out['token_logprobs'].append(t.logprob)
      out['top_logprobs'].append({self.run.table.text(int(i)): float(lp) for i, lp in
                                  zip(t.top_ids[:self.k], t.top_logprobs[:self.k])})
      out['text_offset'].append(start + len(seen.decode('utf-8', 'replace')))
      seen += bytes(self.run.table.bytes(t.id))
    del text
    return out

  def _echo(self, index: int) -> tuple[str, list]:
    ids = self.run.prompts[index // self.req.n]
    seq = self.run.seqs[index]
    tokens = seq.prompt_tokens or []
    return self.run.table.decode(ids[1:]), tokens

  def _choice(self, delta: output.Delta, first: bool) -> dict:
    text, tokens = delta.text, list(delta.tokens)
    if first and self.req.echo:
      prompt, prompt_tokens = self._echo(delta.index)
      lp = self._logprobs(delta.index, prompt_tokens, prompt)
      self.offsets[delta.index] += len(prompt)
      rest = self._logprobs(delta.index, tokens, text)
      if lp is not None:
        for key in lp:
          lp[key] += rest[key]
      text = prompt + text
    else:
      lp = self._logprobs(delta.index, tokens, text)
    self.offsets[delta.index] += len(delta.text)
    return {'index': delta.index, 'text': text, 'logprobs': lp,
            'finish_reason': delta.finish_reason}

  async def collect(self) -> dict:
    parts: dict[int, list[dict]] = {}
    async for delta in self.run.deltas():
      choice = self._choice(delta, delta.index not in parts)
      parts.setdefault(delta.index, []).append(choice)
    choices = []
    for index in sorted(parts):
      chunks = parts[index]
      lp = None
      if self.k is not None:
        lp = {key: sum((c['logprobs'][key] for c in chunks), []) for key in
              ('tokens', 'token_logprobs', 'top_logprobs', 'text_offset')}
      choices.append({'index': index, 'text': ''.join(c['text'] for c in chunks),
                      'logprobs': lp, 'finish_reason': chunks[-1]['finish_reason']})
    return self._body(self.object_name, choices, self.run.usage())

  async def chunks(self, include_usage: bool) -> AsyncIterator[dict]:
    started: set[int] = set()
    async for delta in self.run.deltas():
      choice = self._choice(delta, delta.index not in started)
      started.add(delta.index)
      yield self._body(self.chunk_name, [choice], None)
    if include_usage:
      yield self._body(self.chunk_name, [], self.run.usage())


class ChatView(_View):
  object_name, chunk_name, prefix = 'chat.completion', 'chat.completion.chunk', 'chatcmpl'

  def __init__(self, model, run, req, *, tool_mode: bool, named: str | None):
    super().__init__(model, run, req)
    self.tool_mode, self.named = tool_mode, named
    self.k = (req.top_logprobs or 0) if req.logprobs else None

  def _stream(self) -> tools_lib.CallStream | None:
    return tools_lib.CallStream(self.named) if self.tool_mode else None

  def _logprobs(self, tokens: list) -> list[dict] | None:
    if self.k is None:
      return None

    def entry(i, lp):
      return {'token': self.run.table.text(int(i)), 'logprob': float(lp),
              'bytes': self.run.table.bytes(int(i))}

    return [{**entry(t.id, t.logprob), 'top_logprobs': [
        entry(i, lp) for i, lp in zip(t.top_ids[:self.k], t.top_logprobs[:self.k])]}
            for t in tokens]

  def _finish(self, stream: tools_lib.CallStream | None, finish: str) -> str:
    if stream is not None and stream.calls:
      return 'tool_calls' if finish == 'stop' else finish
    return finish

  async def collect(self) -> dict:
    tokens: dict[int, list] = {}
    finish: dict[int, str] = {}
    async for delta in self.run.deltas():
      tokens.setdefault(delta.index, []).extend(delta.tokens)
      if delta.finish_reason:
        finish[delta.index] = delta.finish_reason
    choices = []
    for index in sorted(finish):
      text = self.run.choices[index].text
      stream = self._stream()
      if stream is not None:
        stream.feed(text)
      message = ({'role': 'assistant', 'content': None, 'tool_calls': stream.calls}
                 if stream is not None and stream.calls
                 else {'role': 'assistant', 'content': text})
      lp = self._logprobs(tokens[index])
      choices.append({'index': index, 'message': message,
                      'logprobs': None if lp is None else {'content': lp},
                      'finish_reason': self._finish(stream, finish[index])})
    return self._body(self.object_name, choices, self.run.usage())

  async def chunks(self, include_usage: bool) -> AsyncIterator[dict]:
    streams: dict[int, tools_lib.CallStream | None] = {}
    async for delta in self.run.deltas():
      index = delta.index
      body: dict[str, Any] = {}
      if index not in streams:
        streams[index] = self._stream()
        body['role'] = 'assistant'
        if not self.tool_mode:
          body['content'] = ''
      stream = streams[index]
      pieces = stream.feed(delta.so_far) if stream is not None else []
      if pieces:
        body['tool_calls'] = pieces
      if delta.text and not (stream is not None and stream.calls):
        body['content'] = body.get('content', '') + delta.text
      lp = self._logprobs(delta.tokens)
      finish = delta.finish_reason and self._finish(stream, delta.finish_reason)
      yield self._body(self.chunk_name, [{
          'index': index, 'delta': body,
          'logprobs': None if lp is None else {'content': lp},
          'finish_reason': finish}], None)
    if include_usage:
      yield self._body(self.chunk_name, [], self.run.usage())
