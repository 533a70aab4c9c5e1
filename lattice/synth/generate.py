"""Sampling synthetic datasets from a trained lattice model, and writing them.

`sample` turns text prompts into completions with `lattice.decode.sampling.generate`
(KV cache, jit, temperature / top-k / top-p). That function needs prompts of equal
length, so prompts are bucketed by token length (optionally left-truncated to
`max_prompt_len`) and each bucket runs in fixed-size batches: one compilation per
distinct prompt length, and the same key gives the same samples.

Records are dicts with a text field plus provenance ('source', 'generation', ...);
`write_jsonl` / `write_arrayrecord` store them so the `jsonl` / `arrayrecord`
sources (and so the grain pipeline) train on them, and `data_overrides` points a
config at them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lattice import config as config_lib
from lattice.data import tokenizer as tokenizer_lib
from lattice.decode import sampling

Record = dict[str, Any]


def encode_prompt(text: str | bytes, tok: tokenizer_lib.ByteTokenizer,
                  max_prompt_len: int | None = None) -> np.ndarray:
  """BOS + the prompt's bytes, left-truncated to `max_prompt_len` tokens.

  A truncated prompt drops BOS along with its oldest bytes: it continues text
  whose start the model no longer sees, like a window into a longer document.
  """
  ids = tok.encode(text, bos=True)
  if max_prompt_len is not None and len(ids) > max_prompt_len:
    ids = ids[len(ids) - max_prompt_len:]
  return ids


def completion_bytes(ids: np.ndarray, tok: tokenizer_lib.ByteTokenizer) -> bytes:
  """The bytes before the first EOS (or PAD); other specials dropped."""
  ids = np.asarray(ids)
  stop = np.flatnonzero((ids == tok.eos_id) | (ids == tok.pad_id))
  if stop.size:
    ids = ids[:stop[0]]
  return tok.decode_bytes(ids)


def sample(variables: dict, model_cfg: config_lib.ModelConfig,
           prompts: Sequence[str | bytes], key: jax.Array, *, max_new_tokens: int,
           sampling_cfg: sampling.SamplingConfig = sampling.SamplingConfig(),
           max_prompt_len: int | None = None, batch_size: int = 128,
           tok: tokenizer_lib.ByteTokenizer | None = None) -> list[bytes]:
  """One completion (bytes, cut at EOS) per prompt, in prompt order.

  Deterministic for a fixed `key`: batches are formed in (length, index) order and
  batch i samples with `fold_in(key, i)`. The last batch of a bucket is padded by
  repeating its first row so every call has `batch_size` rows (no recompiles).
  """
  tok = tok or tokenizer_lib.ByteTokenizer()
  if not prompts:
    return []
  encoded = [encode_prompt(p, tok, max_prompt_len) for p in prompts]
  longest = max(len(e) for e in encoded)
  if longest + max_new_tokens > model_cfg.max_len:
    raise config_lib.ConfigError(
        f'model.max_len: prompts of up to {longest} tokens + max_new_tokens '
        f'{max_new_tokens} exceed {model_cfg.max_len}; set max_prompt_len or '
        f'shorten the prompts')
  by_len: dict[int, list[int]] = {}
  for i, e in enumerate(encoded):
    by_len.setdefault(len(e), []).append(i)
  out: list[bytes | None] = [None] * len(prompts)
  batch_index = 0
  for length in sorted(by_len):
    idx = by_len[length]
    for start in range(0, len(idx), batch_size):
      rows = idx[start:start + batch_size]
      prompt_BxP = np.stack([encoded[r] for r in rows])
      if len(rows) < batch_size:
        prompt_BxP = np.concatenate(
            [prompt_BxP, np.repeat(prompt_BxP[:1], batch_size - len(rows), axis=0)])
      new_BxN = sampling.generate(
          variables, prompt_BxP, jax.random.fold_in(key, batch_index),
          model_cfg=model_cfg, max_new_tokens=max_new_tokens, sampling=sampling_cfg,
          eos_id=tok.eos_id, pad_id=tok.pad_id)
      new_BxN = np.asarray(jax.device_get(new_BxN))
      for r, row in zip(rows, new_BxN):
        out[r] = completion_bytes(row, tok)
      batch_index += 1
  return out  # type: ignore[return-value]


def prompts_from_docs(docs: Sequence[str | bytes], n: int, prompt_bytes: int,
                      seed: int) -> list[bytes]:
  """`n` prompts: the first `prompt_bytes` bytes of documents drawn with replacement
  (documents shorter than that are skipped; at least one must be long enough)."""
  docs = [d.encode('utf-8') if isinstance(d, str) else bytes(d) for d in docs]
  long_enough = [d for d in docs if len(d) >= prompt_bytes]
  if not long_enough:
    raise ValueError(f'prompts_from_docs: no document has {prompt_bytes} bytes')
  rng = np.random.default_rng(seed)
  return [long_enough[i][:prompt_bytes]
          for i in rng.integers(0, len(long_enough), n)]


def _line(record: Record) -> str:
  return json.dumps(record, ensure_ascii=False)


def write_jsonl(path: str | os.PathLike, records: Sequence[Record]) -> str:
  """Writes one JSON object per line (atomically); returns the path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    for r in records:
      f.write(_line(r) + '\n')
  os.replace(tmp, path)
  return str(path)


def write_arrayrecord(path: str | os.PathLike, records: Sequence[Record]) -> str:
  """Writes each record as a JSON ArrayRecord record; returns the path."""
  # pylint: disable-next=g-import-not-at-top
  from array_record.python.array_record_module import ArrayRecordWriter
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  writer = ArrayRecordWriter(str(path), 'group_size:1')
  for r in records:
    writer.write(_line(r).encode('utf-8'))
  writer.close()
  return str(path)


def write_records(path: str | os.PathLike, records: Sequence[Record]) -> str:
  """JSONL for *.jsonl paths, ArrayRecord for *.array_record."""
  if str(path).endswith('.jsonl'):
    return write_jsonl(path, records)
  if '.array_record' in str(path):
    return write_arrayrecord(path, records)
  raise ValueError(f'write_records: {path} must end in .jsonl or .array_record')


def read_jsonl(path: str | os.PathLike) -> list[Record]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(l) for l in f if l.strip()]


def data_overrides(paths: Sequence[str], field: str = 'text',
                   val_fraction: float = 0.02) -> dict[str, Any]:
  """`config.replace` overrides that make a run train on the written files."""
  if not paths:
    raise ValueError('data_overrides: no files to train on')
  kinds = {'jsonl' if str(p).endswith('.jsonl') else 'arrayrecord' for p in paths}
  if len(kinds) != 1:
    raise ValueError(f'data_overrides: mixed file kinds {sorted(kinds)}; write all '
                     'generations in one format')
  return {'data.source': kinds.pop(), 'data.paths': ','.join(map(str, paths)),
          'data.field': field, 'data.val_fraction': val_fraction}
