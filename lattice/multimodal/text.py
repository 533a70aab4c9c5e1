"""The text-only input stage: token embeddings, nothing else.

Shape legend: B batch, L length, D model width.
"""

from __future__ import annotations

import typing

import flax.linen as nn

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib



class TextInput(nn.Module):
  """`(embed_fn, batch) -> (x [B, L, D], ids seen [B, L])`; no parameters of its own."""
  cfg: config_lib.ModelConfig
  decode: bool = False

  IMAGE_PATH = ()

  @staticmethod
  def init_inputs(cfg: config_lib.Config) -> dict:
    del cfg
    return {}

  @staticmethod
  def targets(cfg: config_lib.ModelConfig, batch, seen_BxL):
    del cfg, seen_BxL
    return batch['targets'], batch['weights']

  def __call__(self, embed_fn, batch):
    return embed_fn(batch['inputs']), batch['inputs']
