"""Which corpora a run reads: one source, a weighted mixture, and the eval set.

`data.mixture` is a list of components, each a dict of source fields that override
the run's `data` section (`source`, `paths`, `field`, `hf_*`, `tokens_dtype` ...)
plus a `weight`; weights are normalised and are shares of training TOKENS (each
component is packed into windows first, then windows are drawn by weight: grain's
deterministic, checkpointable `IterDataset.mix`). `data.eval` is one such dict
without a weight: the evaluation corpus; without it evaluation uses the training
source's hash-split validation documents.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from lattice.errors import ConfigError

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib

# The fields a mixture component or the eval set may set: what names a corpus.
SOURCE_FIELDS = ('source', 'paths', 'field', 'hf_name', 'hf_split', 'hf_config',
                 'hf_data_files', 'hf_revision', 'hf_streaming', 'val_fraction')


def _component(data_cfg: config_lib.DataConfig, fields: Any, where: str,
               allow_weight: bool) -> tuple[config_lib.DataConfig, float]:
  if not isinstance(fields, dict):
    raise ConfigError(f'{where}: expected a dict of source fields, got {fields!r}')
  fields = dict(fields)
  weight = fields.pop('weight', 1.0)
  if not allow_weight and weight != 1.0:
    raise ConfigError(f'{where}.weight: the eval set takes no weight')
  if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
    raise ConfigError(f'{where}.weight: must be a positive number, got {weight!r}')
  unknown = sorted(set(fields) - set(SOURCE_FIELDS))
  if unknown:
    raise ConfigError(f'{where}.{unknown[0]}: not a source field (choose from '
                                 f'{", ".join(SOURCE_FIELDS)})')
  for name, value in fields.items():
    want = type(getattr(data_cfg, name))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if not isinstance(value, want) or isinstance(value, bool) != (want is bool):
      raise ConfigError(f'{where}.{name}: expected {want.__name__}, got {value!r}')
    fields[name] = value
  return (dataclasses.replace(data_cfg, mixture=(), eval={}, **fields), float(weight))


def components(data_cfg: config_lib.DataConfig) -> list[tuple[config_lib.DataConfig, float]]:
  """[(DataConfig of one corpus, its share of training tokens)], shares summing to 1.

  Raises:
    ConfigError: a component that is not a dict, an unknown field, a bad weight
      (naming `data.mixture[i].field`).
  """
  if not data_cfg.mixture:
    return [(data_cfg, 1.0)]
  parts = [_component(data_cfg, c, f'data.mixture[{i}]', True)
           for i, c in enumerate(data_cfg.mixture)]
  total = sum(w for _, w in parts)
  return [(c, w / total) for c, w in parts]


def eval_config(data_cfg: config_lib.DataConfig) -> tuple[config_lib.DataConfig, str]:
  """(the eval corpus's DataConfig, the split to read).

  With `data.eval`, its source read whole (split 'train' at val_fraction 0);
  without, the training source's (the first component's) 'validation' split.
  """
  if not data_cfg.eval:
    first = components(data_cfg)[0][0] if data_cfg.mixture else data_cfg
    return first, 'validation'
  cfg, _ = _component(data_cfg, data_cfg.eval, 'data.eval', False)
  return dataclasses.replace(cfg, val_fraction=0.0), 'train'
