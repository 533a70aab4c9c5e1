"""Boolean operations on byte DFAs: intersection and difference by product construction.

Shape legend: S states, C byte classes.

The JSON-schema compiler intersects string languages (`pattern` and `format` and
`minLength`/`maxLength` on one string, keys that match a `patternProperties`
regex) and subtracts finite key sets (declared property names from the keys of
`additionalProperties`). Both operands are `automaton.Dfa`; the product walks pairs
of states reachable from (0, 0) over the common refinement of their byte classes,
so the cost is the size of the result times its classes.
"""

from __future__ import annotations

import numpy as np

from lattice.decode import automaton, dfa_native
from lattice.decode.automaton import Dfa


def _product(a: Dfa, b: Dfa, accept, max_states: int, keep_dead_b: bool) -> Dfa:
  """The product automaton; `accept(acc_a, acc_b)` says which pairs accept.

  `b` may be rejected (-1) while `a` lives: the pair keeps going with b dead,
  which difference needs (a - b accepts where b has died). Natively
  (`dfa_native.product`, the same tables) for intersection and difference.
  """
  mode = _NATIVE_MODES.get(accept)
  if mode is not None and mode == keep_dead_b and dfa_native.can_compose():
    got = dfa_native.product(a, b, mode, max_states)
    if isinstance(got, tuple):
      delta, accepting, byte_class = got
      return automaton.intern(Dfa(delta, byte_class, accepting))
    if got == 1:
      raise automaton.LimitError(f'automaton: product above {max_states} states')
    if got == 4:
      raise automaton.RegexError('the combined constraints match nothing')
  pair_cls = a.byte_class.astype(np.int64) * (int(b.byte_class.max()) + 1) + b.byte_class
  _, byte_class = np.unique(pair_cls, return_inverse=True)
  byte_class = byte_class.reshape(-1).astype(np.int32)
  n_cls = int(byte_class.max()) + 1
  rep = np.array([int(np.argmax(byte_class == c)) for c in range(n_cls)])
  ca, cb = a.byte_class[rep], b.byte_class[rep]
  ids = {(0, 0): 0}
  order = [(0, 0)]
  rows = []
  for sa, sb in order:
    ta = a.delta_SxC[sa, ca]
    tb = b.delta_SxC[sb, cb] if sb >= 0 else np.full(n_cls, -1)
    row = []
    for x, y in zip(ta.tolist(), tb.tolist()):
      if x < 0 or (y < 0 and not keep_dead_b):
        row.append(-1)
        continue
      if (x, y) not in ids:
        ids[x, y] = len(order)
        order.append((x, y))
        if len(order) > max_states:
          raise automaton.LimitError(f'automaton: product above {max_states} states')
      row.append(ids[x, y])
    rows.append(row)
  delta = np.array(rows, np.int64).reshape(len(order), n_cls)
  acc = np.array([accept(bool(a.accepting[x]), y >= 0 and bool(b.accepting[y]))
                  for x, y in order], bool)
  return _trim(delta, acc, byte_class)


def _trim(delta: np.ndarray, accepting: np.ndarray, byte_class: np.ndarray) -> Dfa:
  """Drops states that cannot accept; raises RegexError when nothing is left."""
  live = automaton.distances_to_accept(delta, accepting) >= 0
  if not live[0]:
    raise automaton.RegexError('the combined constraints match nothing')
  new_id = np.where(live, np.cumsum(live) - 1, -1)
  delta = np.where((delta >= 0) & live[np.maximum(delta, 0)],
                   new_id[np.maximum(delta, 0)], -1)
  return automaton.intern(Dfa(delta[live].astype(np.int32), byte_class, accepting[live]))


def _both(x: bool, y: bool) -> bool:
  return x and y


def _only_a(x: bool, y: bool) -> bool:
  return x and not y


# Acceptance rules `dfa_native.product` knows: 0 intersection, 1 difference.
_NATIVE_MODES = {_both: 0, _only_a: 1}


def intersect(a: Dfa, b: Dfa, max_states: int = 200_000) -> Dfa:
  """Strings both accept."""
  return _product(a, b, _both, max_states, False)


def difference(a: Dfa, b: Dfa, max_states: int = 200_000) -> Dfa:
  """Strings `a` accepts and `b` does not."""
  return _product(a, b, _only_a, max_states, True)
