"""A Hugging Face checkpoint directory, read one tensor at a time.

`config.json` plus either `model.safetensors.index.json` (sharded: its weight_map
names each tensor's file) or the directory's `*.safetensors` files. Each `get`
opens the tensor's file with `safetensors.safe_open`, copies that one tensor out and
closes the file again, so the file's memory map (whose touched pages count in the
process's resident set) never holds more than the tensor being read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lattice.convert.hf_config import ConvertError

INDEX = 'model.safetensors.index.json'
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'tokenizer.model',
                   'special_tokens_map.json', 'vocab.json', 'merges.txt',
                   'generation_config.json', 'chat_template.jinja')


class HFCheckpoint:
  """Lazy access to the tensors of a HF checkpoint directory `directory`."""

  def __init__(self, directory: str | os.PathLike[str]):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    self._safe_open = safe_open
    self.directory = Path(directory)
    config_path = self.directory / 'config.json'
    if not config_path.is_file():
      raise ConvertError(f'--from: {self.directory} has no config.json (expected a '
                         f'Hugging Face checkpoint directory)')
    self.config: dict[str, Any] = json.loads(config_path.read_text())
    index = self.directory / INDEX
    if index.is_file():
      weight_map = json.loads(index.read_text())['weight_map']
      self._file = {name: self.directory / f for name, f in weight_map.items()}
    else:
      files = sorted(self.directory.glob('*.safetensors'))
      if not files:
        raise ConvertError(f'--from: {self.directory} has no *.safetensors files (a '
                           f'.bin/.pth checkpoint must be re-saved with safetensors)')
      self._file = {}
      for f in files:
        with safe_open(f, 'np') as handle:
          self._file.update({name: f for name in handle.keys()})

  def names(self) -> list[str]:
    return sorted(self._file)

  def __contains__(self, name: str) -> bool:
    return name in self._file

  def get(self, name: str) -> np.ndarray:
    """The tensor `name` as a numpy array (bfloat16 through ml_dtypes)."""
    if name not in self._file:
      raise ConvertError(f'missing tensor {name} in {self.directory} (the config asks '
                         f'for it; is the checkpoint truncated or of another model?)')
    path = self._file[name]
    with self._safe_open(path, 'np') as handle:
      if handle.get_slice(name).get_dtype() != 'BF16':
        return handle.get_tensor(name)
    # numpy has no bfloat16; safetensors' flax loader reads it through ml_dtypes.
    with self._safe_open(path, 'flax') as handle:
      return np.asarray(handle.get_tensor(name))

  def tokenizer_files(self) -> list[Path]:
    return [self.directory / f for f in TOKENIZER_FILES if (self.directory / f).is_file()]
