"""Train and eval batches of a config: packed text documents, or a batch source.

`BATCH_SOURCES` lists the data sources that build whole batches themselves
(`data.source=shapes`: interleaved image+text rows); every other source yields
documents that `lattice.data.pipeline` packs into text rows.
"""

from __future__ import annotations

import typing
from typing import Any

from lattice.data import interleaved, pipeline

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib

# name -> (train iterator of (config, tokenizer), eval batches of (config, tokenizer)).
BATCH_SOURCES = {
    'shapes': (interleaved.make_train_iterator, interleaved.make_eval_batches),
}


def make_data(cfg: config_lib.Config, tok) -> tuple[Any, list[dict]]:
  """The checkpointable train iterator and the `data.eval_batches` eval batches."""
  if cfg.data.source in BATCH_SOURCES:
    train, evals = BATCH_SOURCES[cfg.data.source]
    return train(cfg, tok), evals(cfg, tok)
  return (pipeline.make_train_iterator(cfg.data, tok, seed=cfg.data.shuffle_seed),
          pipeline.make_eval_batches(cfg.data, tok, cfg.data.eval_batches))


def make_eval_batches(cfg: config_lib.Config, tok) -> list[dict]:
  """The `data.eval_batches` eval batches of `cfg` alone (no train iterator): the
  `data.eval` corpus, or the default hash split of the training source."""
  if cfg.data.source in BATCH_SOURCES:
    return BATCH_SOURCES[cfg.data.source][1](cfg, tok)
  return pipeline.make_eval_batches(cfg.data, tok, cfg.data.eval_batches)
