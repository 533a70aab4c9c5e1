"""grain pipelines: documents -> BOS+bytes+EOS -> packed windows -> LM batches.

Every batch is a dict of numpy arrays, B = data.batch_size // process_count rows
(this process's share of the global batch), L = data.seq_len:

  inputs  int32[B, L]    window[:-1]
  targets int32[B, L]    window[1:]
  weights float32[B, L]  1 where targets is not PAD

Documents are concatenated and cut into windows of L+1 tokens by grain's
ConcatThenSplit packing, so no token is wasted on padding during training. Each
process reads a disjoint slice of the documents (`ds[p::count]`) before packing.
The train iterator is infinite, reshuffles documents every epoch from `seed`, and
is a grain `DatasetIterator`, so `get_state()/set_state()` (and the Orbax
checkpoint in `lattice.train.checkpoint`) resume it exactly.
"""

from __future__ import annotations

from typing import Any

import grain
import jax
import numpy as np

from lattice import config as config_lib
from lattice.data import sources
from lattice.data import tokenizer as tokenizer_lib

Batch = dict[str, np.ndarray]
# Reads and encodes documents ahead of packing; a few threads hide file reads, and a
# bounded buffer keeps memory small when documents are long (stdlib files ~18 KB).
_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=128)


class _Encode(grain.transforms.Map):
  """Document bytes -> {'tokens': BOS + bytes + EOS}."""

  def __init__(self, tokenizer: tokenizer_lib.ByteTokenizer):
    self._tokenizer = tokenizer

  def map(self, doc: bytes) -> dict[str, np.ndarray]:
    return {'tokens': self._tokenizer.encode(doc, bos=True, eos=True)}


class _ToExample(grain.transforms.Map):
  """Packed windows of L+1 tokens -> inputs / targets / weights."""

  def __init__(self, pad_id: int):
    self._pad_id = pad_id

  def map(self, batch: dict[str, np.ndarray]) -> Batch:
    # Packing fills the unused tail of the last window with zeros (a real byte);
    # segment id 0 marks those positions, which become PAD.
    tokens = np.where(batch['tokens_segment_ids'] > 0, batch['tokens'], self._pad_id)
    tokens = tokens.astype(np.int32)
    targets = tokens[:, 1:]
    return {'inputs': tokens[:, :-1], 'targets': targets,
            'weights': (targets != self._pad_id).astype(np.float32)}


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if count < 1 or not 0 <= index < count:
    raise ValueError(f'process_index={index} must lie in [0, process_count={count})')
  return index, count


def local_batch_size(data_cfg: config_lib.DataConfig, process_count: int) -> int:
  """This process's rows of the global batch; errors if it does not divide."""
  if data_cfg.batch_size % process_count:
    raise config_lib.ConfigError(
        f'data.batch_size: {data_cfg.batch_size} is not divisible by the '
        f'{process_count} processes')
  return data_cfg.batch_size // process_count


def _pack(docs: grain.MapDataset, tokenizer: tokenizer_lib.ByteTokenizer,
          seq_len: int) -> grain.IterDataset:
  ds = docs.map(_Encode(tokenizer)).to_iter_dataset(_READ_OPTIONS)
  return grain.experimental.ConcatThenSplitIterDataset(
      ds, length_struct={'tokens': seq_len + 1})


def _mix_seed(seed: int, shuffle_seed: int) -> int:
  return int(np.random.SeedSequence([seed, shuffle_seed]).generate_state(1)[0])


def make_train_iterator(data_cfg: config_lib.DataConfig,
                        tokenizer: tokenizer_lib.ByteTokenizer, *, seed: int,
                        process_index: int | None = None,
                        process_count: int | None = None) -> grain.DatasetIterator:
  """Infinite, checkpointable iterator of this process's training batches.

  The document order depends on `seed` and `data_cfg.shuffle_seed` only; with
  `data_cfg.num_workers > 0` grain worker processes read and pack (the caller's
  script then needs an `if __name__ == '__main__':` guard: workers are spawned).
  """
  index, count = _processes(process_index, process_count)
  batch = local_batch_size(data_cfg, count)
  docs = sources.get_source(data_cfg, 'train')
  if len(docs) < count:
    raise sources.DataError(
        f'data.paths: the train split of data.source={data_cfg.source!r} has '
        f'{len(docs)} documents, fewer than the {count} processes reading it')
  docs = docs[index::count]
  # shuffle before repeat: grain folds the epoch into the seed, so every epoch
  # gets a new (deterministic) order and epochs never mix.
  docs = docs.shuffle(_mix_seed(seed, data_cfg.shuffle_seed)).repeat()
  ds = _pack(docs, tokenizer, data_cfg.seq_len)
  ds = ds.batch(batch, drop_remainder=True).map(_ToExample(tokenizer.pad_id))
  if data_cfg.num_workers > 0:
    _mark_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.num_workers))
  return iter(ds)


def _mark_flags_parsed() -> None:
  # grain workers read absl flags; in a notebook or test nothing parsed them, and
  # reading an unparsed flag raises. Defaults are what an unparsed run means.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _n_batches(docs: grain.MapDataset, seq_len: int, batch: int, cap: int) -> int:
  """Batches packing `docs` gives (at most `cap`), from document lengths alone."""
  window, need, tokens = seq_len + 1, cap * batch * (seq_len + 1), 0
  for i in range(len(docs)):
    tokens += len(docs[i]) + 2  # BOS and EOS.
    if tokens >= need:
      break
  windows = -(-tokens // window)
  return min(cap, -(-windows // batch))


def _empty_batch(batch: int, seq_len: int, pad_id: int) -> Batch:
  tokens = np.full((batch, seq_len), pad_id, np.int32)
  return {'inputs': tokens, 'targets': tokens.copy(),
          'weights': np.zeros((batch, seq_len), np.float32)}


def _pad_rows(example: Batch, batch: int, pad_id: int) -> Batch:
  missing = batch - example['inputs'].shape[0]
  if not missing:
    return example
  filler = _empty_batch(missing, example['inputs'].shape[1], pad_id)
  return {k: np.concatenate([v, filler[k]]) for k, v in example.items()}


def make_eval_batches(data_cfg: config_lib.DataConfig,
                      tokenizer: tokenizer_lib.ByteTokenizer, n_batches: int, *,
                      process_index: int | None = None,
                      process_count: int | None = None) -> list[Batch]:
  """The first `n_batches` validation batches (fewer if the split is small).

  No shuffling; the same packing as training. Every process returns the same
  number of full-size batches, which a jitted multi-host eval step needs: the
  count is computed from every process's document lengths (deterministic, so no
  communication), and a process that runs out pads with rows of weight 0.
  """
  index, count = _processes(process_index, process_count)
  batch = local_batch_size(data_cfg, count)
  if n_batches <= 0:
    return []
  docs = sources.get_source(data_cfg, 'validation')
  if len(docs) == 0:  # pylint: disable=g-explicit-length-test
    raise sources.DataError(
        f'data.val_fraction: the validation split of data.source='
        f'{data_cfg.source!r} is empty (val_fraction={data_cfg.val_fraction})')
  counts = [_n_batches(docs[p::count], data_cfg.seq_len, batch, n_batches)
            for p in range(count)]
  n = max(counts)
  ds = _pack(docs[index::count], tokenizer, data_cfg.seq_len)
  ds = ds.batch(batch, drop_remainder=False).map(_ToExample(tokenizer.pad_id))
  out: list[Batch] = []
  for example in ds:
    if len(out) == counts[index]:
      break
    out.append(_pad_rows(example, batch, tokenizer.pad_id))
  while len(out) < n:
    out.append(_empty_batch(batch, data_cfg.seq_len, tokenizer.pad_id))
  return out


def describe(data_cfg: config_lib.DataConfig) -> dict[str, Any]:
  """What a run trained on, for its result record."""
  info: dict[str, Any] = {'source': data_cfg.source, 'paths': data_cfg.paths,
                          'seq_len': data_cfg.seq_len,
                          'val_fraction': data_cfg.val_fraction}
  if data_cfg.source == 'stdlib':
    info.update(sources.stdlib_info())
  return info
