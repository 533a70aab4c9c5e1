"""Optional native core of DFA post-processing (`dfa_native.cc`), through ctypes.

Shape legend: S states, K edges per state (byte classes).

`lattice.decode.automaton` trims, minimises and renumbers every DFA it builds; for
the small and middle-sized automata of JSON schemas (tens to thousands of states)
numpy's and scipy's per-call overheads dominated those steps (a scipy sparse graph
costs ~0.2 ms to set up; Moore rounds are a dozen numpy calls each). The library
does the two graph walks and the minimisation in C++ (Hopcroft-style, so a long
chain no longer costs a Moore round per link: the numpy fallback leaves DFAs
without counted loops unminimised past `automaton._MINIMISE_BUDGET`, the native
path always minimises). It is built by `setup.py` as the optional
extension `lattice.decode._dfa_native` (a plain shared library: no Python API);
when it is absent (or `LATTICE_DFA_NATIVE=0`), `available()` is False and
`automaton` uses its numpy/scipy code, which computes the same automata (the same
tables whenever the fallback's budget is not reached; checked against each other
in `tests/dfa_native_test.py`).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import os
from pathlib import Path

import numpy as np

_P = ctypes.c_void_p
_I = ctypes.c_int64


def _load() -> ctypes.CDLL | None:
  if os.environ.get('LATTICE_DFA_NATIVE', '1') == '0':
    return None
  here = Path(__file__).parent
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = here / f'_dfa_native{suffix}'
    if path.exists():
      try:
        lib = ctypes.CDLL(str(path))
      except OSError:
        return None
      lib.lattice_dfa_distances.argtypes = [_P, _I, _I, _P, _P]
      lib.lattice_dfa_bfs_order.argtypes = [_P, _I, _I, _P]
      lib.lattice_dfa_partition.argtypes = [_P, _I, _I, _P, _P, _P]
      for f in (lib.lattice_dfa_distances, lib.lattice_dfa_bfs_order,
                lib.lattice_dfa_partition):
        f.restype = _I
      return lib
  return None


# The loaded library, or None (tests set it to None to exercise the fallback).
LIB = _load()


def available() -> bool:
  return LIB is not None


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
  state's targets in ascending id order (as scipy's `breadth_first_order` on the
  table's sparse graph). Requires `available()`."""
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
