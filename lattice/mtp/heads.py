"""The next-token head alone: the output stage of a model without multi-token heads.

Shape legend: B batch, L length, D model width, V vocabulary.
"""

from __future__ import annotations

import typing
from typing import Callable

import flax.linen as nn
import jax

from lattice.mtp import options as options_lib

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib



class NextToken(nn.Module):
  """The trunk's own final norm + unembedding; no parameters of its own."""
  cfg: config_lib.ModelConfig
  decode: bool = False
  options = options_lib.NoOptions  # no fields of its own in model.mtp

  @staticmethod
  def trunk_config(cfg: config_lib.ModelConfig) -> config_lib.ModelConfig:
    return cfg

  @staticmethod
  def extra_passes(cfg: config_lib.ModelConfig) -> int:
    del cfg
    return 0

  @staticmethod
  def n_drafts(cfg: config_lib.ModelConfig) -> int:
    del cfg
    return 0

  def __call__(self, h_BxLxD, logits_fn, embed_fn, batch, modality_BxL=None):
    del embed_fn, batch, modality_BxL
    return [logits_fn(h_BxLxD)]

  def main(self, h_BxLxD, logits_fn, modality_BxL=None, positions_BxL=None,
           segment_ids_BxL=None):
    del modality_BxL, positions_BxL, segment_ids_BxL
    return logits_fn(h_BxLxD)

  def drafts(self, h_BxLxD, next_BxL, logits_fn, embed_fn, modality_BxL=None):
    del h_BxLxD, next_BxL, logits_fn, embed_fn, modality_BxL
    return []

  @staticmethod
  def combine(cfg: config_lib.ModelConfig, ces: list[jax.Array], variables: dict,
              mutated: dict, mutable: list[str]):
    del cfg, variables, mutable
    return ces[0], {}, mutated

  @staticmethod
  def train_loss(cfg: config_lib.ModelConfig) -> Callable | None:
    del cfg
    return None
