"""grain pipelines: documents -> BOS+bytes+EOS -> packed windows -> LM batches.

Every batch is a dict of numpy arrays, B = data.batch_size // process_count rows
(this process's share of the global batch), L = data.seq_len:

  inputs       int32[B, L]    window[:-1]
  targets      int32[B, L]    window[1:]
  weights      float32[B, L]  1 where the target is not PAD and lies in the same
                              document as its input (no loss across a boundary)
                              and, with data.loss_after, follows that token's
                              first occurrence in the document (prompt masking)
  target_bytes float32[B, L]  UTF-8 bytes the target token writes (bits per byte)
  segment_ids  int32[B, L]    the input's document within its row, from 1 (0: PAD)
  positions    int32[B, L]    the input's position within its document, from 0

Documents are concatenated and cut into windows of L+1 tokens by grain's
ConcatThenSplit packing, so no token is wasted on padding during training (with
`data.packing=first_fit`, whole documents are first-fit into padded windows and
never split: one example per row for prompt->answer tasks); segment
ids and positions restart per document (the MaxText convention), so attention and
the loss never cross a document boundary. Pre-tokenized corpora (`data.source=
tokens`) are read as windows directly, their documents split at EOS. A weighted
mixture (`data.mixture`) packs each corpus and draws windows by weight. Each
process reads a disjoint share before packing: with several processes, multi-file
text/JSONL/Parquet corpora by file (process p opens only files p::count, so no host
scans the whole corpus; `sources.get_shard`), everything else by document
(`ds[p::count]`).
The train iterator is infinite, reshuffles documents every epoch from `seed`, and
is a grain `DatasetIterator`, so `get_state()/set_state()` (and the Orbax
checkpoint in `lattice.train.checkpoint`) resume it exactly.
"""

from __future__ import annotations

import typing
from typing import Any

import grain
import jax
import numpy as np

from lattice.errors import ConfigError
from lattice.data import hf_stream
from lattice.data import mixture
from lattice.data import resume
from lattice.data import sources
from lattice.data import token_files
from lattice.data import tokenizer as tokenizer_lib

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib

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
  """Packed windows of L+1 tokens (with segment ids and positions) -> a Batch.

  `loss_after` (a token id, or None): only targets after that token's first
  occurrence in their document get weight (`data.loss_after`, prompt masking).
  """

  def __init__(self, pad_id: int, byte_lengths: np.ndarray,
               loss_after: int | None = None):
    self._pad_id, self._byte_lengths = pad_id, byte_lengths
    self._loss_after = loss_after

  def map(self, batch: dict[str, np.ndarray]) -> Batch:
    # Packing fills the unused tail of the last window with zeros (a real byte);
    # segment id 0 marks those positions, which become PAD.
    segments = batch['tokens_segment_ids'].astype(np.int32)
    tokens = np.where(segments > 0, batch['tokens'], self._pad_id).astype(np.int32)
    targets = tokens[:, 1:]
    positions = batch['tokens_positions'][:, :-1].astype(np.int32)
    same_doc = segments[:, 1:] == segments[:, :-1]
    weights = (targets != self._pad_id) & same_doc
    if self._loss_after is not None:
      weights &= _after_first(tokens[:, :-1] == self._loss_after, positions)
    return {'inputs': tokens[:, :-1], 'targets': targets,
            'weights': weights.astype(np.float32),
            'segment_ids': segments[:, :-1], 'positions': positions,
            'target_bytes': self._lengths(targets)}

  def _lengths(self, targets: np.ndarray) -> np.ndarray:
    # Ids past the tokenizer's vocabulary (padding ids of the model) write no bytes.
    inside = targets < len(self._byte_lengths)
    return np.where(inside, self._byte_lengths[np.where(inside, targets, 0)], 0
                    ).astype(np.float32)


def _to_example(data_cfg: config_lib.DataConfig, tokenizer) -> _ToExample:
  """The batch transform of `data_cfg`; raises DataError when data.loss_after is not
  exactly one token of `tokenizer`."""
  loss_after = None
  if data_cfg.loss_after:
    ids = tokenizer.encode(data_cfg.loss_after)
    if len(ids) != 1:
      raise sources.DataError(
          f'data.loss_after: {data_cfg.loss_after!r} must be one token of '
          f'data.tokenizer={data_cfg.tokenizer!r}, it is {len(ids)}')
    loss_after = int(ids[0])
  return _ToExample(tokenizer.pad_id, tokenizer_lib.byte_lengths(tokenizer), loss_after)


def _after_first(hit_BxL: np.ndarray, positions_BxL: np.ndarray) -> np.ndarray:
  """bool [B, L]: position i's document has a hit at some j <= i (documents start
  where `positions` is 0; whole documents per row, i.e. first_fit packing)."""
  count_BxL = np.cumsum(hit_BxL, axis=1)
  # Hits before each document's start, carried along the document (counts only grow).
  before_BxL = np.maximum.accumulate(
      np.where(positions_BxL == 0, count_BxL - hit_BxL, 0), axis=1)
  return count_BxL > before_BxL


class _Segment(grain.transforms.Map):
  """A window of a flat token stream -> the packed-window dict (documents at EOS)."""

  def __init__(self, eos_id: int):
    self._eos_id = eos_id

  def map(self, window: np.ndarray) -> dict[str, np.ndarray]:
    segments, positions = token_files.segments(window[None], self._eos_id)
    return {'tokens': window, 'tokens_segment_ids': segments[0],
            'tokens_positions': positions[0]}


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if count < 1 or not 0 <= index < count:
    raise ValueError(f'process_index={index} must lie in [0, process_count={count})')
  return index, count


def local_batch_size(data_cfg: config_lib.DataConfig, process_count: int) -> int:
  """This process's rows of the global batch; errors if it does not divide."""
  if data_cfg.batch_size % process_count:
    raise ConfigError(
        f'data.batch_size: {data_cfg.batch_size} is not divisible by the '
        f'{process_count} processes')
  return data_cfg.batch_size // process_count


# first_fit packing: documents are placed into this many open windows before they
# are emitted; more bins waste less padding and hold more documents in memory.
_PACKING_BINS = 16


class _Truncate(grain.transforms.Map):
  """{'tokens': t} -> {'tokens': t[:length]} (first-fit windows hold whole rows)."""

  def __init__(self, length: int):
    self._length = length

  def map(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {'tokens': row['tokens'][:self._length]}


def _pack(docs: grain.MapDataset, tokenizer, seq_len: int,
          packing: str = 'concat') -> grain.IterDataset:
  ds = docs.map(_Encode(tokenizer)).to_iter_dataset(_READ_OPTIONS)
  return _pack_iter(ds, seq_len, packing)


def _pack_iter(encoded: grain.IterDataset, seq_len: int,
               packing: str = 'concat') -> grain.IterDataset:
  """Encoded documents -> windows of seq_len + 1 tokens with segment ids/positions.

  `packing` (data.packing): 'concat' is grain's ConcatThenSplit (no padding; a
  document can continue in the next window); 'first_fit' is grain's first-fit
  packing over _PACKING_BINS open windows, in order (no bin shuffling), so a
  document is never split and the rest of a window is padding (segment id 0).
  """
  length = {'tokens': seq_len + 1}
  if packing == 'first_fit':
    return grain.experimental.FirstFitPackIterDataset(
        encoded.map(_Truncate(seq_len + 1)), length_struct=length,
        num_packing_bins=_PACKING_BINS, shuffle_bins=False)
  return grain.experimental.ConcatThenSplitIterDataset(encoded, length_struct=length)


def _windows(data_cfg: config_lib.DataConfig, tokenizer, split: str, index: int,
             count: int, seed: int | None) -> grain.IterDataset:
  """Packed windows of one corpus for this process; infinite and shuffled when
  `seed` is given (training), one pass in order otherwise (evaluation)."""
  if data_cfg.source == 'tokens':
    files = sources.expand_paths(data_cfg.paths, lambda f: f.endswith(('.bin', '.npy')))
    try:
      windows = grain.MapDataset.source(token_files.TokenWindows(files, data_cfg.seq_len + 1))
    except ValueError as e:
      raise sources.DataError(str(e)) from None
    windows = sources.split_rows(windows, data_cfg.val_fraction, split)[index::count]
    if seed is not None:
      windows = windows.shuffle(seed).repeat()
    return windows.map(_Segment(tokenizer.eos_id)).to_iter_dataset(_READ_OPTIONS)
  if data_cfg.source == 'hf' and data_cfg.hf_streaming:
    if split != 'train':
      raise sources.DataError('data.eval: a streamed source has no validation split; '
                              "name an eval corpus, e.g. data.eval={'source': 'hf', ...}")
    stream = hf_stream.load(
        data_cfg.hf_name, config=data_cfg.hf_config, split=data_cfg.hf_split,
        data_files=sources.hf_data_files(data_cfg), revision=data_cfg.hf_revision,
        process_index=index, process_count=count)
    if seed is not None:
      stream = stream.shuffle(seed=seed % 2**32, buffer_size=10_000)
    return _pack_iter(hf_stream.StreamDataset(stream, data_cfg.field).map(
        _Encode(tokenizer)), data_cfg.seq_len, data_cfg.packing)
  docs = _own_docs(data_cfg, split, index, count)
  if not len(docs):  # pylint: disable=g-explicit-length-test
    raise sources.DataError(
        f'data.paths: the {split} split of data.source={data_cfg.source!r} has no '
        f'documents for process {index} of {count}')
  if seed is not None:
    # shuffle before repeat: grain folds the epoch into the seed, so every epoch
    # gets a new (deterministic) order and epochs never mix.
    docs = docs.shuffle(seed).repeat()
  return _pack(docs, tokenizer, data_cfg.seq_len, data_cfg.packing)


def _own_docs(data_cfg: config_lib.DataConfig, split: str, index: int,
              count: int) -> grain.MapDataset:
  """This process's documents of `split`: its own files (`sources.get_shard`), or
  every `count`-th document of the whole corpus.

  Raises:
    DataError: by documents, a split with fewer documents than processes.
  """
  shard = sources.get_shard(data_cfg, split, index, count)
  if shard is not None:
    return shard
  docs = sources.get_source(data_cfg, split)
  if len(docs) < count:
    raise sources.DataError(
        f'data.paths: the {split} split of data.source={data_cfg.source!r} has '
        f'{len(docs)} documents, fewer than the {count} processes reading it')
  return docs[index::count]


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
  parts = mixture.components(data_cfg)
  streams = [_windows(c, tokenizer, 'train', index, count,
                      _mix_seed(seed + k, data_cfg.shuffle_seed))
             for k, (c, _) in enumerate(parts)]
  ds = streams[0] if len(parts) == 1 else grain.IterDataset.mix(
      streams, [w for _, w in parts])
  ds = ds.batch(batch, drop_remainder=True).map(_to_example(data_cfg, tokenizer))
  if data_cfg.num_workers > 0:
    _mark_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.num_workers))
  # Checkpoints store the state as JSON; the packer needs its tuples back.
  return resume.Restorable(iter(ds))


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
  zeros = np.zeros((batch, seq_len), np.int32)
  return {'inputs': tokens, 'targets': tokens.copy(),
          'weights': np.zeros((batch, seq_len), np.float32),
          'segment_ids': zeros, 'positions': zeros.copy(),
          'target_bytes': np.zeros((batch, seq_len), np.float32)}


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
  number of full-size batches, which a jitted multi-host eval step needs: for a
  corpus shared by document the count is computed from every process's document
  lengths (deterministic, so no communication); for a corpus shared by file
  (`sources.get_shard`), window sources and first-fit packing, every process
  takes up to n_batches and pads to n_batches. A process that runs out pads
  with rows of weight 0.
  """
  index, count = _processes(process_index, process_count)
  batch = local_batch_size(data_cfg, count)
  if n_batches <= 0:
    return []
  eval_cfg, split = mixture.eval_config(data_cfg)
  if eval_cfg.source == 'tokens' or (eval_cfg.source == 'hf' and eval_cfg.hf_streaming):
    # Window-level sources: every process takes up to n_batches and pads to n.
    counts = [n_batches] * count
    ds = _windows(eval_cfg, tokenizer, split, index, count, seed=None)
  elif (shard := sources.get_shard(eval_cfg, split, index, count)) is not None:
    # By file: no process sees another's documents, so every process takes up to
    # n_batches and pads to n.
    if eval_cfg.val_fraction == 0 and split == 'validation':
      raise sources.DataError(
          f'data.val_fraction: the {split} split of data.source='
          f'{eval_cfg.source!r} is empty (val_fraction=0)')
    counts = [n_batches] * count
    ds = _pack(shard, tokenizer, data_cfg.seq_len, data_cfg.packing)
  else:
    docs = sources.get_source(eval_cfg, split)
    if len(docs) == 0:  # pylint: disable=g-explicit-length-test
      raise sources.DataError(
          f'data.val_fraction: the {split} split of data.source='
          f'{eval_cfg.source!r} is empty (val_fraction={eval_cfg.val_fraction})')
    # First-fit windows' count is not a function of the token total: every process
    # takes up to n_batches and pads to n.
    counts = ([n_batches] * count if data_cfg.packing == 'first_fit' else
              [_n_batches(docs[p::count], data_cfg.seq_len, batch, n_batches)
               for p in range(count)])
    ds = _pack(docs[index::count], tokenizer, data_cfg.seq_len, data_cfg.packing)
  n = max(counts)
  ds = ds.batch(batch, drop_remainder=False).map(_to_example(data_cfg, tokenizer))
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
