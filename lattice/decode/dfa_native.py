"""Optional native core of the DFA pipeline (`dfa_native.cc`), through ctypes.

Shape legend: S states, K edges per state (byte classes), V vocabulary.

`lattice.decode.automaton` determinises, trims, minimises and renumbers every DFA
it builds, and `lattice.decode.constraints` turns DFAs into token tables; for the
tens-to-thousands-of-states automata of JSON schemas, Python loops (the subset
construction) and numpy's and scipy's per-call overheads (a scipy sparse graph
costs ~0.2 ms to set up; a Moore round is a dozen numpy calls) dominated. The
library does in C++: the subset construction (`subset_construction`), reverse and
forward breadth-first walks (`distances`, `bfs_order`), Hopcroft-style
minimisation (`partition`: Valmari's partial-DFA algorithm, so a long chain no
longer costs a Moore round per link; the numpy fallback leaves DFAs without
counted loops unminimised past `automaton._MINIMISE_BUDGET`, the native path
always minimises), the whole trim-minimise-canonicalise step of a loop-free DFA
(`finish`, on the DFA's edges: O(edges), not O(states x classes)), the unrolling
of counted loops with the canonical form (`unroll`), one-byte token tables
(`token_tables`), a whole regex AST without counted loops written as a flat
program (`compose`: the Thompson NFA, the subset construction and `finish` in one
call; a schema compiles one AST per nesting level, and building each NFA in Python
was a fixed cost per level) and the product of two DFAs (`product`, for
`dfa_ops`' intersection and difference, a Python loop per state and class before).
It is built by `setup.py` as the optional extension `lattice.decode._dfa_native`
(a plain shared library, no Python API); when it is absent (or
`LATTICE_DFA_NATIVE=0`), `available()` is False and the callers use their
Python/numpy/scipy code, which computes the same tables (whenever the fallback's
minimisation budget is not reached; checked against each other in
`tests/dfa_native_test.py`, `tests/dfa_compose_test.py`, `tests/dfa_ops_test.py`).
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os

import numpy as np

from kernels import extension

_P = ctypes.c_void_p
_I = ctypes.c_int64


def _load() -> ctypes.CDLL | None:
  if os.environ.get('LATTICE_DFA_NATIVE', '1') == '0':
    return None
  path = extension.extension_path(__file__, '_dfa_native')
  if path is None:
    return None
  try:
    lib = ctypes.CDLL(str(path))
  except OSError:
    return None
  lib.lattice_dfa_distances.argtypes = [_P, _I, _I, _P, _P]
  lib.lattice_dfa_bfs_order.argtypes = [_P, _I, _I, _P]
  lib.lattice_dfa_partition.argtypes = [_P, _I, _I, _P, _P, _P]
  for f in (lib.lattice_dfa_distances, lib.lattice_dfa_bfs_order,
            lib.lattice_dfa_partition, lib.lattice_subset_size,
            lib.lattice_dfa_token_tables, lib.lattice_dfa_finish,
            lib.lattice_byte_classes):
    f.restype = _I
  lib.lattice_subset_run.argtypes = [_I] + [_P] * 7 + [_I, _P, _P, _I, _I,
                                                       ctypes.c_double, _P]
  lib.lattice_subset_run.restype = _P
  lib.lattice_dfa_finish.argtypes = [_P, _I, _I, _P, _P, _P, _P, _P, _P]
  lib.lattice_byte_classes.argtypes = [_P, _I, _P, _P, _P]
  lib.lattice_dfa_unroll.argtypes = [_P, _I, _I, _P, _P, _P, _I, _P, _P, _I] + [_P] * 7
  lib.lattice_dfa_unroll.restype = _I
  lib.lattice_subset_finish.argtypes = [_P] * 6
  lib.lattice_subset_finish.restype = _I
  lib.lattice_dfa_token_tables.argtypes = [_P, _I, _I, _P, _P, _I, _I, ctypes.c_int32,
                                           _P, _P]
  lib.lattice_subset_size.argtypes = [_P, _I]
  lib.lattice_subset_take.argtypes = [_P] * 6
  lib.lattice_subset_take.restype = None
  if hasattr(lib, 'lattice_hash_bytes'):
    lib.lattice_hash_bytes.argtypes = [_P, _I]
    lib.lattice_hash_bytes.restype = ctypes.c_uint64
  if not hasattr(lib, 'lattice_compose_run'):  # (A library built before it.)
    return lib
  lib.lattice_compose_run.argtypes = [_P, _I, _P, _I, _P, _I, _I, _I, ctypes.c_double, _P]
  lib.lattice_compose_run.restype = _P
  lib.lattice_compose_size.argtypes = [_P, _I]
  lib.lattice_compose_size.restype = _I
  lib.lattice_compose_take.argtypes = [_P] * 4
  lib.lattice_compose_take.restype = None
  lib.lattice_dfa_product.argtypes = [_P, _I, _I, _P, _P, _P, _I, _I, _P, _P, _I, _I, _P]
  lib.lattice_dfa_product.restype = _P
  return lib


# The loaded library, or None (tests set it to None to exercise the fallback).
LIB = _load()


def available() -> bool:
  """Whether the native library is loaded (built, and LATTICE_DFA_NATIVE is not '0')."""
  return LIB is not None


def can_hash() -> bool:
  """Whether `hash_array` is available (the library is loaded and has it)."""
  return LIB is not None and hasattr(LIB, 'lattice_hash_bytes')


def hash_array(a: np.ndarray) -> int:
  """A 64-bit hash of a C-contiguous array's bytes (equal bytes, equal hashes).
  Requires `can_hash()`."""
  return LIB.lattice_hash_bytes(a.ctypes.data, a.nbytes)


def _table(delta_SxK: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(delta_SxK, np.int32)


def distances(delta_SxK: np.ndarray, accepting_S: np.ndarray) -> np.ndarray:
  """int64[S]: fewest edges from each state to an accepting one (-1: none).

  As `automaton.distances_to_accept`. Requires `available()`.
  """
  d = _table(delta_SxK)
  S, K = d.shape
  acc = np.ascontiguousarray(accepting_S, np.uint8)
  out = np.empty(S, np.int64)
  LIB.lattice_dfa_distances(d.ctypes.data, S, K, acc.ctypes.data, out.ctypes.data)
  return out


def bfs_order(delta_SxK: np.ndarray) -> np.ndarray:
  """int64[n]: the states reachable from state 0 in breadth-first order, each
  state's targets in edge order (as `automaton._bfs_order`). Requires
  `available()`."""
  d = _table(delta_SxK)
  S, K = d.shape
  out = np.empty(S, np.int64)
  n = LIB.lattice_dfa_bfs_order(d.ctypes.data, S, K, out.ctypes.data)
  return out[:n]


def partition(delta_SxK: np.ndarray, internal_SxK: np.ndarray | None,
              block0_S: np.ndarray) -> np.ndarray:
  """int64[S]: the coarsest partition refining `block0_S` in which the states of a
  block agree, on every edge k, on the successor's block (or both reject) and on
  `internal_SxK` (read where the edge exists): the minimal DFA's states. Block ids
  in order of each block's first state. Valmari's O(m log n) partial-DFA
  minimisation (Inf. Process. Lett. 112(6), 2012), where `automaton`'s numpy
  fallback runs Moore rounds. Requires `available()`."""
  d = _table(delta_SxK)
  S, K = d.shape
  b0 = np.ascontiguousarray(block0_S, np.int64)
  inner = None if internal_SxK is None or not internal_SxK.any() else (
      np.ascontiguousarray(internal_SxK, np.uint8))
  out = np.empty(S, np.int64)
  LIB.lattice_dfa_partition(d.ctypes.data, S, K,
                            None if inner is None else inner.ctypes.data,
                            b0.ctypes.data, out.ctypes.data)
  return out


def subset_construction(n: int, eps: dict[int, list[int]], edge_off: np.ndarray,
                        edge_mask: np.ndarray,
                        edge_target: np.ndarray,
                        mask_classes: tuple[np.ndarray, np.ndarray],
                        n_cls: int, core_ok: np.ndarray, region: np.ndarray, final: int,
                        max_states: int, max_seconds: float,
                        finish_classes: np.ndarray | None = None):
  """The subset construction of a Thompson NFA over byte classes (the loop of
  `automaton._to_dfa`, the same automaton with its states in another order).

  NFA states 0..n-1; state s: `eps[s]` epsilon targets (absent: none); byte
  edges `edge_off[s]:edge_off[s+1]` of the arrays `edge_mask` (an index into
  `mask_classes`: offsets and classes, the classes of each byte mask) and
  `edge_target`; `core_ok[s]`: s is kept in subsets; `region[s]`: counted-loop id
  or -1. NFA state 0 is the start. Returns (delta int32[S, C],
  internal int8[S, C] (1: every mover on that class in one loop, 2: movers in
  several regions, else 0; 0 where no member is in a loop), accepting bool[S],
  (offsets int64[S+1], members int32[...]): per DFA state its sorted NFA states),
  or an int status: 1 past `max_states` DFA states, 2 past `max_seconds`.
  With `finish_classes` (the NFA's int32[256] byte classes; only without counted
  loops): `finish` of that DFA instead, in the same call (None: no match).
  Requires `available()`.
  """
  # Per source state (a dict key, once) its targets in the order added; CSR by
  # source: the keys sorted, each state's targets kept in order.
  keys_K = np.fromiter(eps.keys(), np.int64, len(eps))
  lens_K = np.fromiter(map(len, eps.values()), np.int64, len(eps))
  tgt_E = np.fromiter(itertools.chain.from_iterable(eps.values()), np.int32,
                      int(lens_K.sum()))
  eps_off = np.zeros(n + 1, np.int64)
  eps_off[keys_K + 1] = lens_K
  np.cumsum(eps_off, out=eps_off)
  src_E = np.repeat(keys_K, lens_K)
  eps_tgt = np.ascontiguousarray(tgt_E[np.argsort(src_E, kind='stable')])
  edge_off = np.ascontiguousarray(edge_off, np.int64)
  edge_mask = np.ascontiguousarray(edge_mask, np.int32)
  edge_tgt = np.ascontiguousarray(edge_target, np.int32)
  mask_off = np.ascontiguousarray(mask_classes[0], np.int64)
  mask_cls = np.ascontiguousarray(mask_classes[1], np.int32)
  ok = np.ascontiguousarray(core_ok, np.uint8)
  reg = np.array(region, np.int32)
  status = np.zeros(1, np.int64)
  h = LIB.lattice_subset_run(
      n, eps_off.ctypes.data, eps_tgt.ctypes.data, edge_off.ctypes.data,
      edge_mask.ctypes.data, edge_tgt.ctypes.data, mask_off.ctypes.data,
      mask_cls.ctypes.data, n_cls, ok.ctypes.data, reg.ctypes.data, final, max_states,
      float(max_seconds), status.ctypes.data)
  if not h:
    return int(status[0])
  S, n_mem = LIB.lattice_subset_size(h, 0), LIB.lattice_subset_size(h, 1)
  if finish_classes is not None:
    return _finish_call(lambda *out: LIB.lattice_subset_finish(h, *out), S, n_cls,
                        finish_classes)
  delta = np.empty((S, n_cls), np.int32)
  internal = np.empty((S, n_cls), np.int8)
  accepting = np.empty(S, np.uint8)
  mem_off = np.empty(S + 1, np.int64)
  mem = np.empty(n_mem, np.int32)
  LIB.lattice_subset_take(h, delta.ctypes.data, internal.ctypes.data,
                          accepting.ctypes.data, mem_off.ctypes.data, mem.ctypes.data)
  return delta, internal, accepting.astype(bool), (mem_off, mem)


def token_tables(delta_SxC: np.ndarray, dist_S: np.ndarray, cls_V: np.ndarray,
                 S_pad: int, inf: int) -> tuple[np.ndarray, np.ndarray]:
  """(next int32[S_pad, V], need int32[S_pad, V]) for one-byte tokens: token v of
  class `cls_V[v]` (C: not a text token) from state s goes to t = delta[s, class];
  need = dist_S[t] (`inf` where t or dist is -1 or >= inf), next = t where need <
  inf, else -1; padding rows -1 / inf (`constraints._byte_tables`). Requires
  `available()`."""
  d = _table(delta_SxC)
  S, C = d.shape
  dist = np.ascontiguousarray(dist_S, np.int64)
  cls = np.ascontiguousarray(cls_V, np.int64)
  V = len(cls)
  # One allocation for both tables: two separate ones of a few MB each cost ~20x
  # more (fresh pages faulted in on every index; measured 1.3 ms vs 0.06 ms at
  # 1216 states x 384 tokens).
  both = np.empty((2, S_pad, V), np.int32)
  next_SxV, need_SxV = both[0], both[1]
  LIB.lattice_dfa_token_tables(d.ctypes.data, S, C, dist.ctypes.data, cls.ctypes.data,
                               V, S_pad, inf, next_SxV.ctypes.data, need_SxV.ctypes.data)
  return next_SxV, need_SxV


def finish(delta_SxC: np.ndarray, accepting_S: np.ndarray, byte_class: np.ndarray):
  """(delta int32[S', C'], accepting bool[S'], byte_class int32[256]): a DFA without
  counted loops trimmed (states that cannot accept dropped), minimised, in
  breadth-first order from the start (targets by their smallest byte), with
  classes every state treats alike merged and numbered by their smallest byte
  (`automaton`'s _prune, _minimise, _renumber and _canonical_classes in one call);
  None when the start cannot reach acceptance. Requires `available()`."""
  d = _table(delta_SxC)
  S, C = d.shape
  acc = np.ascontiguousarray(accepting_S, np.uint8)
  return _finish_call(
      lambda *out: LIB.lattice_dfa_finish(d.ctypes.data, S, C, acc.ctypes.data, *out),
      S, C, byte_class)


def unroll(delta_SxC: np.ndarray, accepting_S: np.ndarray, tag_S: np.ndarray,
           internal_SxC: np.ndarray, lo_R: np.ndarray, hi_R: np.ndarray, n_unrolled: int,
           byte_class: np.ndarray):
  """(delta int32[S', C'], accepting bool[S'], byte_class int32[256]): the counted
  loops of a minimised DFA unrolled and the result in canonical form
  (`automaton`'s _unroll, _renumber and _canonical_classes in one call). `tag_S`:
  -1 outside loops, 2r loop r's hub, 2r+1 inside its characters; `internal_SxC`:
  the edge stays in its loop; loop r repeats `lo_R[r]`..`hi_R[r]` times (-1:
  unbounded); `n_unrolled`: the unrolled DFA's states (`automaton._unrolled_size`).
  Requires `available()`."""
  d = _table(delta_SxC)
  S, C = d.shape
  acc = np.ascontiguousarray(accepting_S, np.uint8)
  tag = np.ascontiguousarray(tag_S, np.int64)
  inner = np.ascontiguousarray(internal_SxC, np.uint8)
  lo = np.ascontiguousarray(lo_R, np.int64)
  hi = np.ascontiguousarray(hi_R, np.int64)
  work = np.empty(n_unrolled * C, np.int32)
  work_acc = np.empty(n_unrolled, np.uint8)
  return _finish_call(
      lambda *out: LIB.lattice_dfa_unroll(
          d.ctypes.data, S, C, acc.ctypes.data, tag.ctypes.data, inner.ctypes.data,
          len(lo), lo.ctypes.data, hi.ctypes.data, n_unrolled, out[0],
          work.ctypes.data, work_acc.ctypes.data, *out[1:]),
      n_unrolled, C, byte_class)


def _finish_call(call, S: int, C: int, byte_class: np.ndarray):
  bc = np.ascontiguousarray(byte_class, np.int32)
  out = np.empty(S * C, np.int32)
  out_acc = np.empty(S, np.uint8)
  out_bc = np.empty(256, np.int32)
  out_C = np.zeros(1, np.int64)
  n = call(bc.ctypes.data, out.ctypes.data, out_acc.ctypes.data, out_bc.ctypes.data,
           out_C.ctypes.data)
  if n < 0:
    return None
  C2 = int(out_C[0])
  return out[:n * C2].reshape(n, C2).copy(), out_acc[:n].astype(bool), out_bc


def byte_classes(masks: list[int]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
  """(int32[256] byte -> class, (offsets int64[M+1], classes int32[...])): bytes
  every mask (a 256-bit int) treats alike share a class, numbered in order of their
  smallest byte; per mask the classes it holds, ascending (as
  `regex_ast.byte_classes`'s partition, numbered otherwise, its lists as CSR). Requires
  `available()`."""
  M = len(masks)
  raw = b''.join(m.to_bytes(32, 'little') for m in masks) or b'\0'
  byte_class = np.empty(256, np.int32)
  off = np.empty(M + 1, np.int64)
  cls = np.empty(max(M * 256, 1), np.int32)
  LIB.lattice_byte_classes(raw, M, byte_class.ctypes.data, off.ctypes.data,
                           cls.ctypes.data)
  return byte_class, (off, cls[:off[-1]])


def can_compose() -> bool:
  """Whether `compose` and `product` are available (the library is loaded and
  has them)."""
  return LIB is not None and hasattr(LIB, 'lattice_compose_run')


@functools.lru_cache(maxsize=4096)
def _dfa_tables(dfa):
  """(arrays kept alive, (delta address, S, C, byte_class address, accepting
  address)) of an `automaton.Dfa`, in the dtypes `compose` reads. Cached per Dfa
  (DFAs are interned and embedded at every level that holds them)."""
  d = np.ascontiguousarray(dfa.delta_SxC, np.int32)
  bc = np.ascontiguousarray(dfa.byte_class, np.int32)
  acc = np.ascontiguousarray(dfa.accepting, np.uint8)
  return (d, bc, acc), (d.ctypes.data, d.shape[0], d.shape[1], bc.ctypes.data,
                        acc.ctypes.data)


def compose(ops: list[int], masks: list[int], dfas: list, max_states: int, nfa_cap: int,
            max_seconds: float):
  """(delta int32[S, C], accepting bool[S], byte_class int32[256]): the minimal DFA,
  in canonical form (as `finish`), of a regex AST written as the flat program
  `ops` (the opcodes of `lattice_compose_run` in dfa_native.cc), its byte sets
  `masks` (256-bit ints) and embedded `automaton.Dfa`s `dfas` (indices in `ops`):
  the Thompson NFA of `automaton._Nfa`, the subset construction and `finish` in
  one native call. Or an int status: 1 past `max_states` DFA states, 2 past
  `max_seconds`, 3 past `nfa_cap` NFA states, 4 nothing matches, 5 a program the
  library cannot read. Requires `can_compose()`."""
  prog = np.array(ops, np.int32)
  raw = b''.join(m.to_bytes(32, 'little') for m in masks) or b'\0'
  tables = [_dfa_tables(d) for d in dfas]
  info = np.array([x for _, f in tables for x in f] or [0], np.int64)
  status = np.zeros(1, np.int64)
  h = LIB.lattice_compose_run(prog.ctypes.data, len(prog), raw, len(masks), info.ctypes.data,
                              len(dfas), max_states, nfa_cap, float(max_seconds),
                              status.ctypes.data)
  if not h:
    return int(status[0])
  del tables  # (Held through the call: the library read their addresses.)
  return _take_composed(h)


def _take_composed(h):
  S, C = LIB.lattice_compose_size(h, 0), LIB.lattice_compose_size(h, 1)
  delta = np.empty((S, C), np.int32)
  acc = np.empty(S, np.uint8)
  byte_class = np.empty(256, np.int32)
  LIB.lattice_compose_take(h, delta.ctypes.data, acc.ctypes.data, byte_class.ctypes.data)
  return delta, acc.astype(bool), byte_class


def product(a, b, difference: bool, max_states: int):
  """(delta int32[S, C], accepting bool[S], byte_class int32[256]) of the product of
  `automaton.Dfa`s `a` and `b` (`dfa_ops`: the pairs reachable from (0, 0) in
  breadth-first order, trimmed to those that reach acceptance): strings both
  accept, or with `difference` strings `a` accepts and `b` does not. Or an int
  status: 1 past `max_states` pairs, 4 nothing accepted, 5 out of memory.
  Requires `can_compose()`."""
  (da, bca, acca), _ = _dfa_tables(a)
  (db, bcb, accb), _ = _dfa_tables(b)
  status = np.zeros(1, np.int64)
  h = LIB.lattice_dfa_product(da.ctypes.data, da.shape[0], da.shape[1], bca.ctypes.data,
                              acca.ctypes.data, db.ctypes.data, db.shape[0], db.shape[1],
                              bcb.ctypes.data, accb.ctypes.data, int(difference), max_states,
                              status.ctypes.data)
  if not h:
    return int(status[0])
  return _take_composed(h)
