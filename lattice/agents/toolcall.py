"""Tool calls: a strict evaluator and the constraint that makes every call schema-valid.

The evaluator grades a model's output against the exact expected call in order,
and names the first failure:

  invalid_json     the text is not one JSON value
  schema_invalid   valid JSON, but not a call of any tool (unknown name, missing or
                   extra argument, wrong type, value outside an enum)
  wrong_tool       a schema-valid call of another tool
  wrong_arguments  the right tool with different argument values

Argument values compare as JSON values (12 == 12.0; true != 1); an optional
argument the request did not ask for counts as wrong. `call_constraint` compiles
the call schema of a set of tools (`lattice.data.tasks.toolcalls.call_schema`) to
a `TokenIndex` for `lattice.decode.sampling.generate(constraint=...)`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lattice.data.tasks import toolcalls
from lattice.decode import constraints
from lattice.decode import schema as schema_lib

ERRORS = ('invalid_json', 'schema_invalid', 'wrong_tool', 'wrong_arguments')


@dataclasses.dataclass(frozen=True)
class Verdict:
  error: str | None    # None when correct, else one of ERRORS
  detail: str = ''

  @property
  def ok(self) -> bool:
    return self.error is None


def evaluate_call(text: str, expected: dict[str, Any],
                  tools: Sequence[str] | None = None) -> Verdict:
  """Grades `text` against the `expected` call ({'name', 'arguments'})."""
  try:
    value = json.loads(text, parse_constant=schema_lib.reject_constant)
  except ValueError as e:
    return Verdict('invalid_json', str(e))
  errs = schema_lib.errors(value, toolcalls.call_schema(tuple(tools) if tools else None))
  if errs:
    return Verdict('schema_invalid', '; '.join(errs[:3]))
  if value['name'] != expected['name']:
    return Verdict('wrong_tool', f'{value["name"]} instead of {expected["name"]}')
  if not schema_lib.json_equal(value['arguments'], expected['arguments']):
    return Verdict('wrong_arguments', f'{value["arguments"]} instead of '
                                      f'{expected["arguments"]}')
  return Verdict(None)


def summarize(verdicts: Sequence[Verdict]) -> dict[str, float]:
  """accuracy, schema_valid (a call of some tool), tool_accuracy (a valid call of
  the right tool, any arguments) and the rate of each error."""
  n = max(len(verdicts), 1)
  counts = Counter(v.error for v in verdicts)
  valid = 1 - (counts['invalid_json'] + counts['schema_invalid']) / n
  out = {'accuracy': counts[None] / n, 'schema_valid': valid,
         'tool_accuracy': valid - counts['wrong_tool'] / n}
  out.update({e: counts[e] / n for e in ERRORS})
  return out


@functools.lru_cache(maxsize=16)
def call_constraint(vocab_size: int, tools: tuple[str, ...] | None = None
                    ) -> constraints.Index:
  """The byte-tokenizer TokenIndex of a call to any of `tools` (default all).

  Its tables are device arrays, so repeated `generate` calls do not copy them.
  """
  index = constraints.for_schema(toolcalls.call_schema(tools),
                                 constraints.byte_vocab(vocab_size))
  return jax.tree.map(jnp.asarray, index)
