"""One served model: its engine, chat template, and its compiled constraints (cached).

A constraint is `('json_schema', SCHEMA)`, `('regex', PATTERN)` or `('json_object',
None)`; it compiles (`lattice.decode.constraints`, over the byte vocabulary) to a
`TokenIndex` once per model and is then reused. `json_object` is any JSON object
nested up to `JSON_OBJECT_DEPTH` levels (an object or array value inside an object
counts one level), written compactly; a finite automaton cannot count brackets
without such a bound.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import constraints as constraints_lib
from lattice.serve import chat
from lattice.serve import engine as engine_lib
from lattice.serve import output
from lattice.serve import tools

JSON_OBJECT_DEPTH = 2
CACHE_SIZE = 64  # compiled constraints kept per model (least recently used dropped)

_STRING = r'"([^"\\\x00-\x1f]|\\["\\/bfnrt])*"'
_NUMBER = r'-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?'


def _json_value(depth: int) -> str:
  scalar = f'{_STRING}|{_NUMBER}|true|false|null'
  if depth == 0:
    return f'({scalar})'
  inner = _json_value(depth - 1)
  return f'({scalar}|{json_object_regex(depth - 1)}|\\[({inner}(,{inner})*)?\\])'


def json_object_regex(depth: int = JSON_OBJECT_DEPTH) -> str:
  """Regex of compact JSON objects whose values nest at most `depth` levels."""
  v = _json_value(depth)
  return f'\\{{({_STRING}:{v}(,{_STRING}:{v})*)?\\}}'


class ServedModel:
  """A model id, its `Engine`, its tokenizer (the run's `data.tokenizer`; bytes by
  default) with its token table, and its chat template."""

  def __init__(self, name: str, engine: engine_lib.Engine, template: str = 'raw',
               tok=None):
    self.name, self.engine = name, engine
    self.template = chat.TEMPLATES[template]
    self.tok = tok if tok is not None else tokenizer_lib.ByteTokenizer()
    self.table = output.TokenTable(self.tok)
    self._cache: OrderedDict[str, constraints_lib.Index] = OrderedDict()
    self._lock = threading.Lock()
    self._literals: tuple[tools.Literal, tools.Literal] | None = None

  def tool_literals(self) -> tuple[tools.Literal, tools.Literal]:
    """The tool-call marker and separator over this model's vocabulary (built once)."""
    if self._literals is None:
      self._literals = tools.literals(
          self.engine.vocab, tokenizer_lib.vocab_bytes(self.tok, self.engine.vocab))
    return self._literals

  def compile(self, kind: str, spec: Any, strict: bool = False
              ) -> constraints_lib.Index:
    """The TokenIndex of a constraint (cached). Raises the compiler's errors
    (SchemaError, RegexError, ValueError) for the caller to turn into a 400.

    `strict` (a JSON schema's OpenAI `strict: true`): a part of the schema the
    compiler cannot enforce is an error even where the instance may omit it (an
    optional member, one anyOf/oneOf branch among others); otherwise such a part is
    left out and named in the index's `warnings` (the output still validates)."""
    key = kind + str(bool(strict)) + json.dumps(spec, sort_keys=True)
    with self._lock:
      if key in self._cache:
        self._cache.move_to_end(key)
        return self._cache[key]
    # The token table of the model's own vocabulary (subword pieces or bytes).
    vocab = tokenizer_lib.vocab_bytes(self.tok, self.engine.vocab)
    kw = {'eos_id': self.tok.eos_id}
    if kind == 'json_schema':
      index = constraints_lib.for_schema(
          spec, vocab, constraints_lib.Options(strict=bool(strict)), **kw)
    elif kind == 'regex':
      index = constraints_lib.for_regex(spec, vocab, **kw)
    else:
      index = constraints_lib.for_regex(json_object_regex(), vocab, **kw)
    with self._lock:
      self._cache[key] = index
      while len(self._cache) > CACHE_SIZE:
        self._cache.popitem(last=False)
    return index

  def card(self) -> dict:
    """The model's `/v1/models` entry."""
    return {'id': self.name, 'object': 'model', 'created': 0, 'owned_by': 'lattice',
            'max_model_len': self.engine.max_len}
