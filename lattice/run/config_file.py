"""Loading an experiment's config from `FILE.py:MODE` plus `--config.PATH=VALUE`
overrides, with every user error as one line naming the flag or field.

An override is parsed by the type of the value it replaces (bool, int, float, str;
tuples, lists and None-defaulted fields as Python literals, else as text), and a
key that does not exist is refused with the keys that do (and a "did you mean").
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any

import ml_collections

from lattice import config as config_lib

_TRUE, _FALSE = ('true', 't', '1', 'yes', 'y'), ('false', 'f', '0', 'no', 'n')


def _first_line(e: BaseException) -> str:
  lines = [l for l in str(e).splitlines() if l.strip()]
  return lines[0].strip() if lines else type(e).__name__


def load_experiment_module(path: str):
  """Imports an experiment file by path (for `run`, `sweep`, `config`, `serve`).

  Raises ConfigError when the file is missing or lacks get_config/run.
  """
  p = Path(path)
  if not p.is_file():
    raise config_lib.ConfigError(
        f'--config: no such experiment file: {path!r} (expected FILE.py:MODE, e.g. '
        f'experiments/baseline_lm.py:smoke)')
  spec = importlib.util.spec_from_file_location(f'lattice_experiment_{p.stem}', p)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # so `finish(__name__, ...)` finds it
  spec.loader.exec_module(module)
  for name in ('get_config', 'run'):
    if not hasattr(module, name):
      raise config_lib.ConfigError(f'--config: {path} defines no `{name}` function')
  return module


def load(spec: str | None) -> tuple[Any, ml_collections.ConfigDict]:
  """(experiment module, its ConfigDict) for 'FILE.py:MODE' (MODE optional).

  Raises ConfigError: no spec, no such file, unknown mode, or a get_config that
  raised (named with its exception's first line).
  """
  if not spec:
    raise config_lib.ConfigError('--config=FILE.py:MODE is required (e.g. '
                                 'experiments/baseline_lm.py:quick)')
  filename, *mode = spec.split(':', 1)
  module = load_experiment_module(filename)
  try:
    return module, module.get_config(*mode)
  except config_lib.ConfigError:
    raise
  except Exception as e:  # A broken experiment file: say where, in one line.
    raise config_lib.ConfigError(
        f'--config: {spec}: {type(e).__name__}: {_first_line(e)}') from None


def _parse(path: str, old: Any, text: str) -> Any:
  if isinstance(old, bool):
    if text.lower() in _TRUE + _FALSE:
      return text.lower() in _TRUE
    raise config_lib.ConfigError(f'--config.{path}: expected true/false, got {text!r}')
  if isinstance(old, int):
    try:
      return int(text)
    except ValueError:
      raise config_lib.ConfigError(
          f'--config.{path}: expected an integer, got {text!r}') from None
  if isinstance(old, float):
    try:
      return float(text)
    except ValueError:
      raise config_lib.ConfigError(
          f'--config.{path}: expected a number, got {text!r}') from None
  if isinstance(old, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  if isinstance(old, (tuple, list)) and not isinstance(value, (tuple, list)):
    raise config_lib.ConfigError(
        f'--config.{path}: expected a tuple such as (1, 2), got {text!r}')
  return type(old)(value) if isinstance(old, (tuple, list)) else value


def check_key(config: ml_collections.ConfigDict, path: str) -> Any:
  """The value at dotted `path`; ConfigError naming `--config.<path>` (with the known
  keys and a "did you mean") when a key does not exist or a value is not a section."""
  node, parts = config, path.split('.')
  for j, part in enumerate(parts):
    where = '.'.join(parts[:j]) or 'the config'
    if not isinstance(node, ml_collections.ConfigDict):
      raise config_lib.ConfigError(
          f'--config.{path}: {where} holds a value ({type(node).__name__}), not a '
          'section of keys')
    if part not in node:
      moved = config_lib.moved_key_error('.'.join(parts[:j + 1]))
      if moved:
        raise config_lib.ConfigError(f'--config.{moved}')
      if j == 0 and part in config_lib.SECTIONS:
        raise config_lib.ConfigError(
            f'--config.{path}: the experiment config has no {part!r} section (build '
            'its modes with lattice.experiment.pick_mode, which fills in every default)')
      keys = sorted(node.keys())
      close = difflib.get_close_matches(part, keys, n=1)
      hint = f'did you mean {close[0]!r}? ' if close else ''
      raise config_lib.ConfigError(f'--config.{path}: unknown config key {part!r} in '
                                   f'{where} ({hint}known keys: {", ".join(keys)})')
    node = node[part]
  return node


def override(config: ml_collections.ConfigDict, path: str, text: str | None) -> None:
  """Sets `config.<path>` from the command-line text (None: a bare boolean flag).

  Raises ConfigError naming `--config.<path>`: an unknown key (with the known keys
  and the closest one), a section given a value, or text of the wrong type.
  """
  old = check_key(config, path)
  parts = path.split('.')
  node = check_key(config, '.'.join(parts[:-1])) if len(parts) > 1 else config
  if isinstance(old, ml_collections.ConfigDict):
    raise config_lib.ConfigError(f'--config.{path}: is a section; set one of its keys '
                                 f'({", ".join(sorted(old.keys()))})')
  if text is None:
    if not isinstance(old, bool):
      raise config_lib.ConfigError(f'--config.{path}: needs a value (--config.{path}=...)')
    value = True
  else:
    value = _parse(path, old, text)
  try:
    node[parts[-1]] = value
  except (TypeError, ValueError) as e:
    raise config_lib.ConfigError(f'--config.{path}: {_first_line(e)}') from None


# A config field counts steps when its name says so (warmup_steps, eval_every,
# checkpoint.every, a technique's *_step); such intervals follow train.steps.
_STEP_NAME = re.compile(r'(^|_)(step|steps|every)$')


def step_fields(config: ml_collections.ConfigDict) -> list[str]:
  """Dotted paths of the library sections' integer step counts other than
  train.steps (by name: *_step, *_steps, *every), in the config's order."""
  return [path for path, value in flatten(config)
          if path.split('.')[0] in config_lib.SECTIONS and path != 'train.steps'
          and _STEP_NAME.search(path.rsplit('.', 1)[-1])
          and isinstance(value, int) and not isinstance(value, bool)]


def apply(config: ml_collections.ConfigDict,
          overrides: list[tuple[str, str | None]]) -> list[str]:
  """Applies `--config.PATH=TEXT` overrides in order; returns notes to print.

  When train.steps changes, every step count (`step_fields`) the command line
  leaves alone (warmup, eval, log and checkpoint intervals...) scales by the same
  ratio (at least 1; 0, i.e. off, stays off), so `--config.train.steps=2000` on a
  smoke config does not keep smoke's every-step logging; the note says what moved.
  Raises ConfigError as `override` does.
  """
  before = check_key(config, 'train.steps') if 'train' in config else None
  for path, text in overrides:
    override(config, path, text)
  given = {path for path, _ in overrides}
  if before is None or 'train.steps' not in given:
    return []
  after = config.train.steps
  if after == before or before <= 0:
    return []
  moved = []
  for path in step_fields(config):
    if path in given:
      continue
    value = check_key(config, path)
    if value > 0:
      new = max(1, int(round(value * after / before)))
      if new != value:
        override(config, path, str(new))
        moved.append(f'{path} {value} -> {new}')
  if not moved:
    return []
  return [f'train.steps {before} -> {after}: scaled {", ".join(moved)} (set them '
          'with --config.KEY=VALUE to choose otherwise)']


def flatten(config: ml_collections.ConfigDict, prefix: str = '') -> list[tuple[str, Any]]:
  """(dotted key, value) of every leaf, in the config's order."""
  out = []
  for key, value in config.items():
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict):
      out += flatten(value, path + '.')
    else:
      out.append((path, value))
  return out


def _comments(cls: type) -> dict[str, str]:
  """`field: type = default  # comment` -> {field: comment} from a class's source, its
  bases' and (a section built from a kind table) its kinds' `options` classes'."""
  out = {}
  options = getattr(cls, '_OPTIONS', ())
  for c in dict.fromkeys((*cls.__mro__, *(b for o in options for b in o.__mro__))):
    try:
      source = inspect.getsource(c)
    except (OSError, TypeError):
      continue
    for m in re.finditer(r'^\s+(\w+)\s*:[^#\n]*#\s*(.+)$', source, re.M):
      out.setdefault(m.group(1), m.group(2).strip())
  return out


def field_notes(obj: Any = None, prefix: str = '') -> dict[str, str]:
  """{dotted key: the comment beside that field in its config dataclass}, for every
  field of the typed Config (`lattice.config`) that has one."""
  obj = config_lib.Config() if obj is None else obj
  notes = {}
  comments = _comments(type(obj))
  for f in dataclasses.fields(obj):
    value = getattr(obj, f.name)
    if dataclasses.is_dataclass(value):
      notes.update(field_notes(value, f'{prefix}{f.name}.'))
    elif f.name in comments:
      notes[f'{prefix}{f.name}'] = comments[f.name]
  return notes


def describe(config: ml_collections.ConfigDict) -> str:
  """Every key of `config` with its value and, where the typed Config documents it,
  its meaning: one `key = value  # meaning` line each."""
  notes = field_notes()
  lines = []
  for key, value in flatten(config):
    note = notes.get(key)
    lines.append(f'{key} = {value!r}' + (f'  # {note}' if note else ''))
  return '\n'.join(lines)
