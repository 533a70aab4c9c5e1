"""Writes a train state into an Orbax checkpoint one tensor at a time.

Orbax's partial save (`orbax.checkpoint.experimental.v1.partial`) adds subtrees to a
checkpoint in progress and `finalize` commits it, so the state never has to exist
in memory as a whole. The tree on disk is the one `StandardSave(TrainState)` writes
(tuples as lists, namedtuples as dicts of their fields, field-less ones as None),
so `lattice.train.checkpoint.Checkpointer.restore` reads it like any run's step.
Each param's zero Adam moments are written after it, one slot (mu, nu) at a time,
Orbax is told not to copy the arrays it writes (they do not change meanwhile), and
the imported tensors are written uncompressed (see `write_state`), so one write
holds one copy of the tensors pending.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np

from lattice.convert import names
from lattice.convert.hf_config import ConvertError

# Pending tensors are written once this many bytes (or the largest tensor's, if
# fewer) are pending: small tensors share an Orbax write, a large one is alone.
FLUSH_BYTES = 8 << 20


def _key(k: Any) -> str:
  if isinstance(k, jax.tree_util.GetAttrKey):
    return k.name
  if isinstance(k, jax.tree_util.DictKey):
    return str(k.key)
  return str(k.idx)


def _nest(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for part in path[:-1]:
    tree = tree.setdefault(part, {})
  tree[path[-1]] = value


def _is_count(path) -> bool:
  return not any(isinstance(k, jax.tree_util.DictKey) for k in path)


def _param_of(path) -> tuple[str, ...]:
  """The param an optimizer leaf belongs to (its dict keys)."""
  return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def _slot(path) -> tuple[str, ...]:
  """Which per-param buffer an optimizer leaf is (e.g. ('1', '0', 'mu'))."""
  return tuple(_key(k) for k in path if not isinstance(k, jax.tree_util.DictKey))


def _skeleton(tree: Any, keep) -> Any:
  """`tree` (optimizer state of ShapeDtypeStructs) as Orbax lays it out on disk,
  with zeros for the leaves `keep(path)` selects and the others (and emptied dicts)
  left out: tuples become lists, namedtuples dicts of their fields, field-less ones
  None. Partial saves of such skeletons add up to the whole optimizer state."""
  def walk(node, path):
    if isinstance(node, jax.ShapeDtypeStruct):
      return np.zeros(node.shape, node.dtype) if keep(path) else _DROP
    if isinstance(node, tuple) and hasattr(node, '_fields'):
      if not node._fields:
        return None
      items = {f: walk(getattr(node, f), path + (jax.tree_util.GetAttrKey(f),))
               for f in node._fields}
      return {k: v for k, v in items.items() if v is not _DROP and not _empty(v)}
    if isinstance(node, (tuple, list)):
      return [walk(v, path + (jax.tree_util.SequenceKey(i),)) for i, v in enumerate(node)]
    if isinstance(node, dict):
      items = {k: walk(v, path + (jax.tree_util.DictKey(k),)) for k, v in node.items()}
      return {k: v for k, v in items.items() if v is not _DROP and not _empty(v)}
    if node is None:
      return None
    raise TypeError(f'unexpected optimizer state node {type(node).__name__}')
  return walk(tree, ())


_DROP = object()


def _empty(node: Any) -> bool:
  return isinstance(node, dict) and not node


def write_state(target: str, abstract_state: Any, plan: names.Plan,
                get: Callable[..., np.ndarray], family: str) -> None:
  """Writes step 0 of `abstract_state`'s tree (ShapeDtypeStructs) to `target`:
  step 0, zero optimizer state, and every param/extra leaf from `plan`, reading
  each source tensor with `get(name, transpose=..., dtype=..., out=...)`
  (`HFCheckpoint.get`). Raises ConvertError naming a leaf without a
  source or a tensor whose shape does not fit."""
  from orbax.checkpoint.experimental import v1 as ocp1  # pylint: disable=g-import-not-at-top
  from orbax.checkpoint.experimental.v1 import partial  # pylint: disable=g-import-not-at-top

  def context(compress: bool):
    # The arrays are ours and unchanged until the write returns: Orbax need not copy
    # them first (its default), which would double the resident bytes of each write.
    # Compression is off for the imported tensors: tensorstore compresses every
    # chunk of a write before storing any, holding a second copy of the tensor
    # (measured: +62 MB while writing a 64 MB float32 tensor). It stays on for the
    # zero moments, which it shrinks to almost nothing on disk.
    ctx = ocp1.Context()
    ctx.memory.deepcopy_host_arrays = False
    ctx.array.saving.use_compression = compress
    return ctx

  def save(tree: dict, compress: bool) -> None:
    with context(compress):
      partial.save(target, tree)

  with context(True):
    # Step 0 and the non-parameter optimizer leaves first (the step counts).
    opt = abstract_state.opt_state
    first = {'step': np.zeros((), np.int32), 'opt_state': _skeleton(opt, _is_count)}
    if not abstract_state.extra:
      first['extra'] = {}  # written as such so the saved tree matches the train state
    save(first, compress=True)
    pending: dict = {}
    pending_params: set[tuple[str, ...]] = set()
    pending_bytes = 0
    slots = {_slot(p) for p, _ in jax.tree_util.tree_flatten_with_path(opt)[0]
             if not _is_count(p)}
    # Batching never holds more than the largest tensor would alone.
    flush_bytes = min(FLUSH_BYTES, max(
        np.dtype(l.dtype).itemsize * int(np.prod(l.shape))
        for l in jax.tree.leaves(abstract_state.params)))

    def flush():
      """Writes the pending tensors, then their zero moments one slot (Adam's mu, nu)
      at a time, so a write never holds more than one copy of the pending bytes."""
      nonlocal pending, pending_bytes
      if pending:
        save(pending, compress=False)
      pending, pending_bytes = {}, 0
      for slot in sorted(slots):
        if pending_params:
          save({'opt_state': _skeleton(
              opt, lambda p, s=slot: _slot(p) == s and _param_of(p) in pending_params)},
               compress=True)
      pending_params.clear()

    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_state)[0]:
      path = tuple(_key(k) for k in path)
      if path[0] in ('step', 'opt_state'):
        continue
      if path not in plan:
        raise ConvertError(f'lattice parameter {"/".join(path)} has no source in the '
                           f'{family} name map')
      hf_names, fn = plan[path]
      try:
        value = np.asarray(fn(functools.partial(get, dtype=leaf.dtype)))
      except ConvertError:
        raise
      except ValueError as e:  # a reshape or an expert slot the tensor does not fit
        raise ConvertError(f'tensor {hf_names[0]}: does not fit lattice\'s '
                           f'{"/".join(path)} {tuple(leaf.shape)}: {e}') from None
      if value.shape != tuple(leaf.shape):
        raise ConvertError(f'tensor {hf_names[0]}: shape gives {value.shape} for lattice\'s '
                           f'{"/".join(path)}, which needs {tuple(leaf.shape)}')
      value = np.ascontiguousarray(value.astype(leaf.dtype, copy=False))
      _nest(pending, path, value)
      pending_bytes += value.nbytes
      if path[0] == 'params':
        pending_params.add(path[1:])
      del value
      if pending_bytes >= flush_bytes:
        flush()
    flush()
    partial.finalize(target)
