"""Hugging Face datasets, streamed: no download of the whole corpus before step 1.

`load(...)` opens `datasets.load_dataset(name, config, split=..., streaming=True,
data_files=..., revision=..., token=...)` and gives this process its shard
(`datasets.distributed.split_dataset_by_node`); `StreamDataset` wraps the stream as
a grain `IterDataset` whose iterator state is the stream's own `state_dict()` plus
a count of documents taken, so a run resumes where it stopped (exactly, for
datasets whose `state_dict` is exact; `datasets` documents which are). Local
folders and files (`json`, `parquet`, `text` builders with `data_files`) stream the
same way, which is what the tests use; hub names need a machine with internet.
"""

from __future__ import annotations

from typing import Any

import grain


def load(name: str, *, config: str | None = None, split: str = 'train',
         data_files: Any = None, revision: str | None = None, token: str | None = None,
         process_index: int = 0, process_count: int = 1):
  """The streaming dataset of `name` for this process.

  Raises:
    ValueError: the dataset cannot be opened, naming `data.hf_name` (the message
      keeps the library's first line: a missing config, split or file).
  """
  import datasets  # the `hf` extra: imported only by streaming sources
  from datasets import distributed
  try:
    ds = datasets.load_dataset(name, config or None, split=split, streaming=True,
                               data_files=data_files or None, revision=revision or None,
                               token=token or None)
  except Exception as e:  # noqa: BLE001  (name, split, file or network problems)
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ValueError(f'data.hf_name: cannot stream {name!r} split {split!r}: '
                     f'{first}') from None
  if process_count > 1:
    ds = distributed.split_dataset_by_node(ds, rank=process_index,
                                           world_size=process_count)
  return ds


class _StreamIterator(grain.DatasetIterator):
  """Documents (bytes of `field`) of a streaming dataset, checkpointable."""

  def __init__(self, stream, field: str):
    super().__init__()
    self._stream, self._field = stream, field
    self._it = iter(stream)
    self._taken, self._epoch = 0, 0

  def __next__(self) -> bytes:
    try:
      row = next(self._it)
    except StopIteration:  # the next epoch, reshuffled by the stream's own seed
      self._epoch += 1
      self._stream.set_epoch(self._epoch)
      self._it = iter(self._stream)
      row = next(self._it)
    self._taken += 1
    value = row.get(self._field)
    if not isinstance(value, str):
      raise ValueError(f'data.field: {self._field!r} missing or not a string in '
                       f'streamed row {self._taken - 1} (columns: {", ".join(row)})')
    return value.encode('utf-8')

  def get_state(self) -> dict[str, Any]:
    return {'stream': self._stream.state_dict(), 'taken': self._taken,
            'epoch': self._epoch}

  def set_state(self, state: dict[str, Any]) -> None:
    self._epoch = int(state.get('epoch', 0))
    self._stream.set_epoch(self._epoch)
    self._stream.load_state_dict(state['stream'])
    self._it = iter(self._stream)
    self._taken = int(state['taken'])


class StreamDataset(grain.IterDataset):
  """A streaming HF dataset's `field` as a checkpointable grain IterDataset."""

  def __init__(self, stream, field: str):
    super().__init__()
    self._stream, self._field = stream, field

  def __iter__(self) -> _StreamIterator:
    return _StreamIterator(self._stream, self._field)
