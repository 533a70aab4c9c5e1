"""Loading an experiment's config from `FILE.py:MODE` plus `--config.PATH=VALUE`
overrides, with every user error as one line naming the flag or field.

An override is parsed by the type of the value it replaces (bool, int, float, str;
tuples, lists and None-defaulted fields as Python literals, else as text), and a
key that does not exist is refused with the keys that do (and a "did you mean").
"""

from __future__ import annotations

import ast
import difflib
from typing import Any

import ml_collections

from lattice import config as config_lib

_TRUE, _FALSE = ('true', 't', '1', 'yes', 'y'), ('false', 'f', '0', 'no', 'n')


def _first_line(e: BaseException) -> str:
  lines = [l for l in str(e).splitlines() if l.strip()]
  return lines[0].strip() if lines else type(e).__name__


def load(spec: str | None) -> tuple[Any, ml_collections.ConfigDict]:
  """(experiment module, its ConfigDict) for 'FILE.py:MODE' (MODE optional).

  Raises ConfigError: no spec, no such file, unknown mode, or a get_config that
  raised (named with its exception's first line).
  """
  from lattice import experiment  # pylint: disable=g-import-not-at-top
  if not spec:
    raise config_lib.ConfigError('--config=FILE.py:MODE is required (e.g. '
                                 'experiments/baseline_lm.py:quick)')
  filename, *mode = spec.split(':', 1)
  module = experiment.load_experiment_module(filename)
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
