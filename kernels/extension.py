"""Finding and loading the native CPU kernels' shared libraries (built at install).

Each native kernel (kernels/ternary_cpu, kernels/grouped_matmul's grouped_cpu,
kernels/skinny_cpu) is an optional setuptools extension next to its Python module
and is called through XLA's FFI; its module uses the XLA path when the library is
not built.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
from pathlib import Path

import jax


def extension_path(module_file: str, stem: str) -> Path | None:
  """The built extension `stem` (e.g. '_ternary_cpu') beside `module_file`, under any
  of this interpreter's extension suffixes; None if it is not built."""
  here = Path(module_file).parent
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = here / f'{stem}{suffix}'
    if path.exists():
      return path
  return None


def register_targets(lib: ctypes.CDLL, targets: dict[str, str]) -> None:
  """Registers each XLA FFI custom-call target name -> the library's exported handler
  symbol of that name, on CPU. Raises AttributeError if a symbol is missing."""
  for target, symbol in targets.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                platform='cpu')


def load_library(module_file: str, stem: str, targets: dict[str, str]
                 ) -> ctypes.CDLL | None:
  """The built extension `stem` beside `module_file`, loaded with its FFI `targets`
  (custom-call name -> exported handler symbol) registered on CPU; None if it is not
  built. Callers cache the result (registration must happen once)."""
  path = extension_path(module_file, stem)
  if path is None:
    return None
  lib = ctypes.CDLL(str(path))
  register_targets(lib, targets)
  return lib
