"""Iterator states that survive the JSON round trip of a checkpoint.

grain's Orbax handler writes an iterator's `get_state()` as JSON, which turns every
tuple into a list. grain's packing (`ConcatThenSplitIterDataset`) stores its
remainder as `remainder_slices: {feature: (start, stop)}` and tests "no remainder"
with `slice != (-1, -1)`; read back as the list `[-1, -1]` that test is true, so a
restored packer treats the next element as a leftover and the resumed batches
differ from the uninterrupted ones (seen with a weighted mixture, whose second
stream had no remainder at the save). `Restorable` restores the tuples first.
"""

from __future__ import annotations

from typing import Any

import grain


def slices_as_tuples(state: Any) -> Any:
  """`state` with every `remainder_slices` value a tuple again (recursively)."""
  if isinstance(state, dict):
    return {k: ({f: tuple(s) for f, s in v.items()} if k == 'remainder_slices'
                and isinstance(v, dict) else slices_as_tuples(v))
            for k, v in state.items()}
  if isinstance(state, (list, tuple)):
    return type(state)(slices_as_tuples(v) for v in state)
  return state


class Restorable(grain.DatasetIterator):
  """Wraps a grain iterator; `set_state` accepts a state read back from JSON."""

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)

  def __next__(self):
    return next(self._parent)

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(slices_as_tuples(state))
