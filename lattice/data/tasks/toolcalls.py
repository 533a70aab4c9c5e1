"""Tool calls: a generated family of tools and natural-language requests -> exact calls.

Four clusters of three tools each (calendar, math, search, unit conversion), every
tool with a JSON schema of the subset `lattice.decode.constraints` compiles. A
request is drawn from a few phrasings per tool with random arguments; its call is
exact and unique, e.g.

  request  'How many miles is 12.5 kilometers?'
  call     {"name":"convert_length","arguments":{"value":12.5,"from":"km","to":"mi"}}

Calls are written compactly, keys in schema order (`render_call`), the form the
constrained decoder produces. A training document is `prompt_of(request)` (the
request right-aligned in a fixed width of `REQUEST_WIDTH` characters, then a
newline, so every prompt has the same length and batches need no padding) followed
by the call. Sources: `toolcalls` (all clusters) and `toolcalls_<cluster>`, 'train'
split for training and the independent 'test' stream for validation.

Public API:
  TOOLS, CLUSTERS, tool_schema(name), call_schema(names=None)
  generate(n, seed, split, clusters=None) -> [Example]   deterministic
  prompt_of(request), render_call(call), format_example(example)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import grain
import numpy as np

SPLITS = ('train', 'test')
REQUEST_WIDTH = 64

_DAYS = ['monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday', 'sunday']
_UNITS = {
    'convert_length': {'km': 'kilometers', 'mi': 'miles', 'm': 'meters', 'ft': 'feet'},
    'convert_temperature': {'C': 'celsius', 'F': 'fahrenheit', 'K': 'kelvin'},
    'convert_weight': {'kg': 'kilograms', 'lb': 'pounds', 'g': 'grams', 'oz': 'ounces'},
}
_COLORS = ['red', 'blue', 'green', 'black']
_TITLES = ['standup', 'dentist', 'lunch with ana', 'gym', 'review', 'call mom',
           'team sync', 'haircut', 'demo', 'yoga']
_TOPICS = ['solar power', 'jazz', 'the election', 'mars', 'bitcoin', 'football',
           'ai chips', 'rainfall', 'tea', 'chess', 'vaccines', 'rust lang']


def _obj(props: dict[str, dict], required: list[str]) -> dict:
  return {'type': 'object', 'properties': props, 'required': required,
          'additionalProperties': False}


_INT = {'type': 'integer'}
_NUM = {'type': 'number'}
_STR = {'type': 'string', 'minLength': 1}


def _convert(units: dict[str, str]) -> dict:
  unit = {'type': 'string', 'enum': list(units)}
  return _obj({'value': _NUM, 'from': unit, 'to': unit}, ['value', 'from', 'to'])


TOOLS: dict[str, dict] = {
    'create_event': _obj({'title': _STR, 'day': {'enum': _DAYS}, 'hour': _INT,
                          'minutes': _INT}, ['title', 'day', 'hour']),
    'list_events': _obj({'day': {'enum': _DAYS}}, ['day']),
    'cancel_event': _obj({'event_id': _INT}, ['event_id']),
    'add': _obj({'a': _NUM, 'b': _NUM}, ['a', 'b']),
    'multiply': _obj({'a': _NUM, 'b': _NUM}, ['a', 'b']),
    'power': _obj({'base': _NUM, 'exponent': _INT}, ['base', 'exponent']),
    'web_search': _obj({'query': _STR, 'max_results': _INT}, ['query']),
    'news_search': _obj({'topic': _STR, 'days': _INT}, ['topic']),
    'image_search': _obj({'query': _STR, 'color': {'enum': _COLORS}}, ['query']),
    **{name: _convert(units) for name, units in _UNITS.items()},
}
CLUSTERS: dict[str, tuple[str, ...]] = {
    'calendar': ('create_event', 'list_events', 'cancel_event'),
    'math': ('add', 'multiply', 'power'),
    'search': ('web_search', 'news_search', 'image_search'),
    'units': tuple(_UNITS),
}
CLUSTER_OF = {tool: c for c, tools in CLUSTERS.items() for tool in tools}


def tool_schema(name: str) -> dict:
  """The schema of a whole call to tool `name`: {"name": name, "arguments": ...}."""
  return _obj({'name': {'const': name}, 'arguments': TOOLS[name]},
              ['name', 'arguments'])


def call_schema(names: tuple[str, ...] | None = None) -> dict:
  """A call to any of `names` (default: every tool)."""
  return {'anyOf': [tool_schema(n) for n in (names or tuple(TOOLS))]}


@dataclasses.dataclass(frozen=True)
class Example:
  request: str
  call: dict[str, Any]   # {'name': ..., 'arguments': {...}}
  cluster: str


def render_call(call: dict[str, Any]) -> str:
  """The call's compact JSON, arguments in the tool schema's property order."""
  props = TOOLS[call['name']]['properties']
  args = call['arguments']
  ordered = {k: args[k] for k in props if k in args} | {
      k: v for k, v in args.items() if k not in props}
  return json.dumps({'name': call['name'], 'arguments': ordered},
                    ensure_ascii=False, separators=(',', ':'))


def prompt_of(request: str) -> str:
  if len(request) > REQUEST_WIDTH or '\n' in request:
    raise ValueError(f'toolcalls: request longer than {REQUEST_WIDTH} characters or '
                     f'multi-line: {request!r}')
  return request.rjust(REQUEST_WIDTH) + '\n'


def format_example(ex: Example) -> str:
  return prompt_of(ex.request) + render_call(ex.call)


def _number(rng: np.random.Generator) -> int | float:
  if rng.random() < 0.7:
    return int(rng.integers(0, 1000))
  return round(float(rng.integers(1, 2000)) / 10, 1)


def _pick(rng: np.random.Generator, seq):
  return seq[int(rng.integers(len(seq)))]


def _request(tool: str, rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
  """One phrasing of a random call to `tool`: (request, arguments)."""
  variant = int(rng.integers(2))
  if tool == 'create_event':
    args = {'title': _pick(rng, _TITLES), 'day': _pick(rng, _DAYS),
            'hour': int(rng.integers(6, 22))}
    text = (f'schedule {args["title"]} on {args["day"]} at {args["hour"]}:00'
            if variant else f'put {args["title"]} in my calendar {args["day"]} '
                            f'at {args["hour"]}')
    if rng.random() < 0.4:
      args['minutes'] = int(_pick(rng, [15, 30, 45, 60, 90]))
      text += f' for {args["minutes"]} minutes'
    return text, args
  if tool == 'list_events':
    args = {'day': _pick(rng, _DAYS)}
    return (f"what's on my calendar on {args['day']}?" if variant else
            f'show my events for {args["day"]}'), args
  if tool == 'cancel_event':
    args = {'event_id': int(rng.integers(1, 10000))}
    return (f'cancel event #{args["event_id"]}' if variant else
            f'delete meeting number {args["event_id"]}'), args
  if tool in ('add', 'multiply'):
    args = {'a': _number(rng), 'b': _number(rng)}
    word = 'plus' if tool == 'add' else 'times'
    verb = 'add' if tool == 'add' else 'multiply'
    return (f'what is {args["a"]} {word} {args["b"]}?' if variant else
            f'{verb} {args["a"]} and {args["b"]}'), args
  if tool == 'power':
    args = {'base': _number(rng), 'exponent': int(rng.integers(2, 10))}
    return (f'raise {args["base"]} to the power {args["exponent"]}' if variant else
            f'what is {args["base"]} to the {args["exponent"]}th power?'), args
  if tool in ('web_search', 'news_search', 'image_search'):
    key = 'topic' if tool == 'news_search' else 'query'
    args = {key: _pick(rng, _TOPICS)}
    opt = {'web_search': 'max_results', 'news_search': 'days',
           'image_search': 'color'}[tool]
    with_opt = rng.random() < 0.4
    if with_opt:
      args[opt] = (_pick(rng, _COLORS) if opt == 'color' else int(rng.integers(2, 20)))
    if tool == 'web_search':
      text = (f'find {args[opt]} web results about {args[key]}' if with_opt else
              f'search the web for {args[key]}' if variant else f'google {args[key]}')
    elif tool == 'news_search':
      text = (f'news on {args[key]} from the last {args[opt]} days' if with_opt else
              f'any news about {args[key]}?' if variant else f'latest headlines on '
                                                              f'{args[key]}')
    else:
      text = (f'show me {args[opt]} images of {args[key]}' if with_opt else
              f'find pictures of {args[key]}' if variant else f'image search {args[key]}')
    return text, args
  units = _UNITS[tool]
  src, dst = rng.choice(list(units), size=2, replace=False).tolist()
  args = {'value': _number(rng), 'from': src, 'to': dst}
  return (f'convert {args["value"]} {units[src]} to {units[dst]}' if variant else
          f'how many {units[dst]} is {args["value"]} {units[src]}?'), args


def generate(n: int, seed: int, split: str,
             clusters: tuple[str, ...] | None = None) -> list[Example]:
  """`n` examples of `split`, tools uniform over `clusters` (default all)."""
  if split not in SPLITS:
    raise ValueError(f'toolcalls: split must be one of {SPLITS}, got {split!r}')
  clusters = clusters or tuple(CLUSTERS)
  unknown = set(clusters) - set(CLUSTERS)
  if unknown:
    raise ValueError(f'toolcalls: unknown clusters {sorted(unknown)}; choose from '
                     f'{", ".join(CLUSTERS)}')
  tools = [t for c in clusters for t in CLUSTERS[c]]
  rng = np.random.default_rng([seed, SPLITS.index(split), 0x7001])
  out = []
  for _ in range(n):
    tool = _pick(rng, tools)
    request, args = _request(tool, rng)
    out.append(Example(request, {'name': tool, 'arguments': args}, CLUSTER_OF[tool]))
  return out


class _Examples:
  """Lazily generated documents, example i from its own seed: a grain data source."""

  def __init__(self, n: int, seed: int, split: str, clusters: tuple[str, ...]):
    self._n, self._seed, self._split, self._clusters = n, seed, split, clusters

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i: int) -> str:
    ex, = generate(1, self._seed * 1_000_003 + int(i), self._split, self._clusters)
    return format_example(ex)


TRAIN_DOCS = 1 << 20
EVAL_DOCS = 2048


def source(clusters: tuple[str, ...]):
  def fn(data_cfg, split: str) -> grain.MapDataset:
    ours, n = ('train', TRAIN_DOCS) if split == 'train' else ('test', EVAL_DOCS)
    return grain.MapDataset.source(_Examples(n, data_cfg.shuffle_seed, ours, clusters))
  return fn
