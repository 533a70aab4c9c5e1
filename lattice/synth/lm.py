"""Glue between lattice.synth and the one train loop, for LM generations.

A generation is a `train_and_evaluate` run whose data source points at written
JSONL files; it is then evaluated on held-out *real* data (not on its own,
possibly synthetic, validation split) and sampled to make the next dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lattice import config as config_lib
from lattice.data import pipeline, sources
from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import sampling
from lattice.synth import generate
from lattice.train import loop


def real_chunks(data_cfg: config_lib.DataConfig, split: str, n: int, chunk_bytes: int,
                seed: int) -> list[str]:
  """`n` distinct chunks of `chunk_bytes` bytes from random documents of `split`.

  Chunks start at line starts (so they read like text) and are decoded as UTF-8,
  dropping bytes a cut split in half.
  """
  docs = sources.get_source(data_cfg, split)
  rng = np.random.default_rng(seed)
  out, seen, tries = [], set(), 0
  while len(out) < n and tries < 50 * n:
    tries += 1
    doc = docs[int(rng.integers(len(docs)))]
    if len(doc) <= chunk_bytes:
      continue
    start = int(rng.integers(len(doc) - chunk_bytes))
    start = doc.find(b'\n', start, len(doc) - chunk_bytes) + 1 or start
    text = doc[start:start + chunk_bytes].decode('utf-8', 'ignore')
    if text.strip() and text not in seen:
      seen.add(text)
      out.append(text)
  if len(out) < n:
    raise sources.DataError(f'data.source: found only {len(out)} of {n} chunks of '
                            f'{chunk_bytes} bytes in {data_cfg.source!r}')
  return out


def train_on(cfg: config_lib.Config, files: Sequence[str], workdir: str | Path,
             val_fraction: float = 0.02) -> dict[str, Any]:
  """`train_and_evaluate` with the data source set to `files` (JSONL, field 'text');
  exits (SystemExit) if SIGTERM stopped the run."""
  cfg = config_lib.replace(cfg, **generate.data_overrides(list(map(str, files)),
                                                          val_fraction=val_fraction))
  out = loop.train_and_evaluate(cfg, workdir)
  if out['preempted']:
    # The loop saved and returned on SIGTERM; a recursive experiment must stop too,
    # not sample the next generation from a partly trained model.
    raise SystemExit(f'[lattice] synth: preempted while training {workdir}')
  return out


def eval_batches(data_cfg: config_lib.DataConfig, n_batches: int) -> list[dict]:
  return pipeline.make_eval_batches(data_cfg, tokenizer_lib.make_tokenizer(data_cfg.tokenizer),
                                    n_batches)


def evaluate_on(out: dict[str, Any], batches: list[dict], suffix: str = '_real'
                ) -> dict[str, float]:
  """val_loss / val_bpb of a trained run on `batches` (e.g. held-out real data)."""
  m = loop.evaluate(out['setup'], out['state'], batches)
  return {f'{k}{suffix}': v for k, v in m.items()}


def variables(out: dict[str, Any]) -> dict[str, Any]:
  state = out['state']
  return {'params': state.params, **state.extra}


def continue_texts(out: dict[str, Any], prompts: Sequence[str | bytes], key: jax.Array,
                   *, max_new_tokens: int, sampling_cfg: sampling.SamplingConfig,
                   max_prompt_len: int | None = None, batch_size: int = 256) -> list[str]:
  """Completions (UTF-8 text, cut at EOS) of each prompt by a trained run, encoded
  and decoded with the run's own `data.tokenizer`."""
  cfg = out['setup'].cfg
  new = generate.sample(variables(out), cfg.model, prompts, key,
                        max_new_tokens=max_new_tokens, sampling_cfg=sampling_cfg,
                        max_prompt_len=max_prompt_len, batch_size=batch_size,
                        tok=tokenizer_lib.make_tokenizer(cfg.data.tokenizer))
  return [b.decode('utf-8', 'ignore') for b in new]
