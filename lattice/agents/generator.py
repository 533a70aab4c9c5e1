"""The `Generator` interface agents are written against, and two implementations.

  Generator        generate(prompts, max_tokens, temperature, constraint=None) -> texts
  LatticeGenerator a trained lattice model (params + ModelConfig, byte tokenizer),
                   from memory or from a training workdir's checkpoint
  OpenAIClient     any OpenAI-compatible server (`lattice serve`, vLLM, ...), over
                   `/v1/completions` or `/v1/chat/completions`, standard library only

So Mixture-of-Agents code (`lattice.agents.moa`) runs unchanged over small local
models and over real served ones.
"""

from __future__ import annotations

import inspect
import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

from lattice import config as config_lib
from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import sampling



@runtime_checkable
class Generator(Protocol):
  """Anything that turns prompts into completions (one text per prompt)."""

  def generate(self, prompts: Sequence[str], max_tokens: int, temperature: float,
               constraint: Any = None) -> list[str]:
    ...


def _bucket(n: int) -> int:
  """Batch rows rounded up to a power of two, so few batch shapes get compiled."""
  return 1 << max(n - 1, 0).bit_length()


class LatticeGenerator:
  """A lattice model behind the Generator interface.

  Prompts are encoded as BOS + UTF-8 bytes (how training documents start) and
  grouped by length, because `sampling.generate` takes equal-length prompts and
  padding would change what the model attends to; each group's rows are padded up
  to a power of two (repeating a prompt) to bound recompilation, or, with
  `batch_size`, run in chunks of exactly that many rows (one compiled shape per
  prompt length and temperature). Completions stop
  at EOS. Sampling keys come from `seed` and a call counter, so a fixed sequence of
  calls is reproducible; temperature 0 is greedy and deterministic.
  """

  def __init__(self, variables: dict, model_cfg: config_lib.ModelConfig, *,
               seed: int = 0, top_k: int = 0, top_p: float = 1.0,
               name: str = 'lattice', batch_size: int | None = None,
               tokenizer: Any = None):
    if batch_size is not None and batch_size < 1:
      raise ValueError(f'LatticeGenerator: batch_size must be positive, got {batch_size}')
    self.batch_size = batch_size
    if model_cfg.vocab_size == 0:
      raise config_lib.ConfigError('model.vocab_size: LatticeGenerator needs the '
                                   'resolved config (lattice.train.loop.resolve)')
    self.variables = variables
    self.model_cfg = model_cfg
    self.name = name
    # The run's tokenizer (data.tokenizer); the byte tokenizer when none is given.
    self.tok = tokenizer or tokenizer_lib.ByteTokenizer()
    sampling.SamplingConfig(top_k=top_k, top_p=top_p)  # out of range: fail now, not per call
    self._top_k, self._top_p = top_k, top_p
    self._key = jax.random.key(seed)
    self._calls = 0
    self._constraints: dict[str, Any] = {}

  @classmethod
  def from_workdir(cls, workdir: str | os.PathLike[str],
                   cfg: config_lib.Config | None = None, *, step: int | None = None,
                   **kwargs) -> LatticeGenerator:
    """Restores the params a training run saved in `workdir/checkpoints`.

    `cfg` is the run's config; without it the `workdir/config.json` the train loop
    wrote is read.
    """
    from lattice.train import checkpoint, loop  # the train stack only when needed
    workdir = Path(workdir)
    if cfg is None:
      cfg = load_run_config(workdir)
    setup = loop.build(cfg, devices=jax.devices()[:1])
    with checkpoint.Checkpointer(workdir / 'checkpoints', setup.cfg.checkpoint) as ckpt:
      state = ckpt.restore(setup.abstract_state, step=step)
    variables = jax.device_get(state.variables)
    kwargs.setdefault('name', workdir.name)
    kwargs.setdefault('tokenizer', tokenizer_lib.make_tokenizer(setup.cfg.data.tokenizer))
    return cls(variables, setup.cfg.model, **kwargs)

  def compile_constraint(self, constraint: Any) -> Any:
    """`{'json_schema': S}` / `{'regex': R}` -> a token index over this model's
    vocabulary (cached); a compiled index passes through."""
    if not isinstance(constraint, dict):
      return constraint
    if 'constraint' not in inspect.signature(sampling.generate).parameters:
      raise NotImplementedError('generate: this lattice has no constrained decoding '
                                '(sampling.generate takes no constraint)')
    from lattice.decode import constraints  # pylint: disable=g-import-not-at-top
    key = json.dumps(constraint, sort_keys=True)
    if key not in self._constraints:
      vocab = tokenizer_lib.vocab_bytes(self.tok, self.model_cfg.vocab_size)
      if set(constraint) == {'json_schema'}:
        self._constraints[key] = constraints.for_schema(constraint['json_schema'], vocab,
                                                        eos_id=self.tok.eos_id)
      elif set(constraint) == {'regex'}:
        self._constraints[key] = constraints.for_regex(constraint['regex'], vocab,
                                                       eos_id=self.tok.eos_id)
      else:
        raise ValueError("constraint: expected {'json_schema': SCHEMA} or "
                         f"{{'regex': PATTERN}}, got keys {sorted(constraint)}")
    return self._constraints[key]

  def max_tokens_for(self, prompt: str) -> int:
    """How many tokens fit after `prompt` in the model's KV cache."""
    return self.model_cfg.max_len - len(self.tok.encode(prompt, bos=True))

  def generate(self, prompts: Sequence[str], max_tokens: int, temperature: float,
               constraint: Any = None) -> list[str]:
    if isinstance(prompts, str):
      raise TypeError('generate: prompts must be a sequence of strings, not one string')
    if max_tokens < 1:
      raise ValueError(f'generate: max_tokens must be positive, got {max_tokens}')
    if temperature < 0:
      raise ValueError(f'generate: temperature must be >= 0, got {temperature}')
    encoded = [self.tok.encode(p, bos=True) for p in prompts]
    for p, ids in zip(prompts, encoded):
      if len(ids) + max_tokens > self.model_cfg.max_len:
        raise ValueError(f'generate: prompt of {len(ids)} tokens + max_tokens '
                         f'{max_tokens} exceed the model\'s max_len '
                         f'{self.model_cfg.max_len} (prompt {p[:40]!r}...)')
    extra = {}
    if constraint is not None:
      extra['constraint'] = self.compile_constraint(constraint)
    s = sampling.SamplingConfig(temperature=float(temperature), top_k=self._top_k,
                                top_p=self._top_p)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
      by_len.setdefault(len(ids), []).append(i)
    texts: list[str] = [''] * len(prompts)
    chunks = []
    for _, rows in sorted(by_len.items()):
      step = self.batch_size or len(rows)
      chunks += [rows[i:i + step] for i in range(0, len(rows), step)]
    for rows in chunks:
      batch = np.stack([encoded[i] for i in rows])
      size = self.batch_size or _bucket(len(rows))
      padded = np.concatenate([batch, np.repeat(batch[:1], size - len(rows), axis=0)])
      key = jax.random.fold_in(self._key, self._calls)
      self._calls += 1
      out = sampling.generate(self.variables, padded, key, model_cfg=self.model_cfg,
                              max_new_tokens=int(max_tokens), sampling=s,
                              eos_id=self.tok.eos_id, pad_id=self.tok.pad_id, **extra)
      out = np.asarray(jax.device_get(out))[:len(rows)]
      for i, row in zip(rows, out):
        stop = np.flatnonzero(row == self.tok.eos_id)
        row = row[:stop[0]] if stop.size else row
        texts[i] = self.tok.decode_bytes(row).decode('utf-8', errors='replace')
    return texts


def load_run_config(workdir: str | os.PathLike[str]) -> config_lib.Config:
  """The config.json the train loop writes in every run directory."""
  path = Path(workdir) / 'config.json'
  if not path.exists():
    raise config_lib.ConfigError(
        f'--workdir: {path} does not exist; is {workdir} a lattice training run? '
        f'(or pass the run\'s --config=FILE.py:MODE)')
  saved = json.loads(path.read_text())
  # Serving reads only the model and its tokenizer: the data section may name a
  # source registered by an experiment module that is not imported here, so keep
  # just its seq_len and tokenizer.
  data = saved.get('data', {})
  saved['data'] = {'seq_len': data.get('seq_len', 128),
                   'tokenizer': data.get('tokenizer', 'byte')}
  return config_lib.build(saved)


class APIError(RuntimeError):
  """An OpenAI-compatible server answered with an error (status and message)."""

  def __init__(self, status: int, message: str):
    super().__init__(f'HTTP {status}: {message}')
    self.status = status
    self.message = message


class OpenAIClient:
  """Generator over an OpenAI-compatible HTTP API, with urllib only.

  `api='completions'` sends all prompts in one `/v1/completions` request (the API
  takes a list); `api='chat'` sends one `/v1/chat/completions` request per prompt
  as a single user message. A `constraint` is sent as `response_format` when it is
  `{'json_schema': SCHEMA}` and as vLLM's `guided_regex` when `{'regex': PATTERN}`.
  """

  def __init__(self, base_url: str, model: str = '', *, api: str = 'completions',
               timeout: float = 60.0, api_key: str | None = None):
    if api not in ('completions', 'chat'):
      raise ValueError(f"OpenAIClient: api must be 'completions' or 'chat', got {api!r}")
    self.base_url = base_url.rstrip('/')
    if self.base_url.endswith('/v1'):
      self.base_url = self.base_url[:-3]
    self.model, self.api, self.timeout, self.api_key = model, api, timeout, api_key

  def request(self, method: str, path: str, body: Any = None) -> Any:
    """One JSON request; returns the decoded JSON or raises APIError."""
    data = None if body is None else (body if isinstance(body, bytes)
                                      else json.dumps(body).encode())
    req = urllib.request.Request(self.base_url + path, data=data, method=method)
    req.add_header('Content-Type', 'application/json')
    if self.api_key:
      req.add_header('Authorization', f'Bearer {self.api_key}')
    try:
      with urllib.request.urlopen(req, timeout=self.timeout) as resp:
        return json.loads(resp.read())
    except urllib.error.HTTPError as e:
      raw = e.read()
      try:
        message = json.loads(raw)['error']['message']
      except (ValueError, KeyError, TypeError):
        message = raw.decode('utf-8', errors='replace')[:200]
      raise APIError(e.code, message) from None

  def models(self) -> list[str]:
    return [m['id'] for m in self.request('GET', '/v1/models')['data']]

  def _constraint_fields(self, constraint: Any) -> dict:
    if constraint is None:
      return {}
    if isinstance(constraint, dict) and 'json_schema' in constraint:
      return {'response_format': {'type': 'json_schema', 'json_schema': {
          'name': 'constraint', 'schema': constraint['json_schema']}}}
    if isinstance(constraint, dict) and 'regex' in constraint:
      return {'guided_regex': constraint['regex']}
    raise TypeError("OpenAIClient: constraint must be {'json_schema': ...} or "
                    f"{{'regex': ...}}, got {constraint!r}")

  def generate(self, prompts: Sequence[str], max_tokens: int, temperature: float,
               constraint: Any = None) -> list[str]:
    if isinstance(prompts, str):
      raise TypeError('generate: prompts must be a sequence of strings, not one string')
    if not prompts:
      return []
    common = {'model': self.model, 'max_tokens': int(max_tokens),
              'temperature': float(temperature), **self._constraint_fields(constraint)}
    if self.api == 'completions':
      out = self.request('POST', '/v1/completions', {**common, 'prompt': list(prompts)})
      choices = sorted(out['choices'], key=lambda c: c['index'])
      return [c['text'] for c in choices]
    texts = []
    for p in prompts:
      out = self.request('POST', '/v1/chat/completions',
                         {**common, 'messages': [{'role': 'user', 'content': p}]})
      texts.append(out['choices'][0]['message']['content'])
    return texts
