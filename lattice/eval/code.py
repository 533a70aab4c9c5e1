"""Execution-based code evaluation: pass@k over HumanEval / MBPP-format problems.

A completion passes when the problem's tests run to exit 0 in a fresh Python
subprocess with a timeout, in an empty temporary folder, with resource limits
(address space, CPU seconds, file size, no core files) and, where the kernel allows
it, in a new network namespace with no interfaces (Linux `unshare(CLONE_NEWNET)`,
as root or with unprivileged user namespaces). Where no namespace can be made, the
program runs with `socket` disabled in-process instead — a guard against accidents,
not a security boundary; `sandbox_kind()` says which one is in force.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language
Models Trained on Code", arXiv 2107.03374, eq. 1): with n samples of which c pass,
pass@k = 1 - C(n-c, k) / C(n, k), computed as a stable product.

Problem formats (one JSON object per line):
  HumanEval: task_id, prompt, test, entry_point (canonical_solution unused); the
    program is prompt + completion + test + `check(entry_point)`.
  MBPP: task_id, text (or prompt), test_list [, test_setup_code, test_imports]; the
    program is the completion + setup + the asserts.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
from etils import epath

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_MEMORY_BYTES = 1 << 30        # 1 GiB address space per program
_FILE_BYTES = 16 << 20         # 16 MiB per written file
# Runs before the program when no network namespace could be made.
_NO_SOCKETS = ('import socket as _s\n'
               'def _blocked(*a, **k):\n'
               '  raise OSError("network access is disabled in lattice code eval")\n'
               '_s.socket = _s.create_connection = _s.socketpair = _blocked\n'
               'del _s, _blocked\n')


@dataclasses.dataclass(frozen=True)
class Problem:
  """One code problem: what the model sees and how a completion is checked."""
  task_id: str
  prompt: str          # the text the model completes (HumanEval: signature + docstring)
  test: str            # test code appended after the completion
  prefix: str = ''     # code placed before the completion (HumanEval: the prompt)


@dataclasses.dataclass(frozen=True)
class Outcome:
  task_id: str
  passed: bool
  status: str          # passed | failed | timeout | error: <first line of stderr>


def load_problems(path: str) -> list[Problem]:
  """Reads HumanEval- or MBPP-format JSONL (local or any epath path).

  Raises:
    ValueError: a line that is neither format, naming the file and line number.
  """
  problems = []
  for n, line in enumerate(epath.Path(path).read_text().splitlines(), 1):
    if not line.strip():
      continue
    row = json.loads(line)
    if {'prompt', 'test', 'entry_point'} <= row.keys():           # HumanEval
      problems.append(Problem(str(row['task_id']), row['prompt'],
                              f"{row['test']}\n\ncheck({row['entry_point']})\n",
                              prefix=row['prompt']))
    elif 'test_list' in row:                                        # MBPP
      tests = '\n'.join(row['test_list'])
      setup = '\n'.join([*row.get('test_imports', []), row.get('test_setup_code', '')])
      text = row.get('prompt') or row.get('text', '')
      prompt = f'"""\n{text}\n{row["test_list"][0]}\n"""\n'
      problems.append(Problem(str(row['task_id']), prompt, f'{setup}\n{tests}\n'))
    else:
      raise ValueError(f'{path}:{n}: not a HumanEval (prompt, test, entry_point) or '
                       f'MBPP (test_list) problem')
  return problems


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples with c correct (Chen et al. 2021, eq. 1).

  Raises:
    ValueError: k < 1, or c outside [0, n].
  """
  if k < 1 or not 0 <= c <= n:
    raise ValueError(f'pass_at_k: need k >= 1 and 0 <= c <= n, got n={n} c={c} k={k}')
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def _new_net_namespace() -> bool:
  libc = ctypes.CDLL(None, use_errno=True)
  if libc.unshare(_CLONE_NEWNET) == 0:
    return True
  return libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) == 0


def _limit(timeout_s: float, isolate: bool):
  def preexec():
    os.setsid()
    cpu = int(timeout_s) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, _MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_FILE_BYTES, _FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if isolate and not _new_net_namespace():
      os._exit(97)  # the parent falls back to the in-process guard
  return preexec


_SANDBOX: str | None = None


def sandbox_kind() -> str:
  """'netns' (a network namespace per program) or 'socket-guard' (see module doc)."""
  global _SANDBOX
  if _SANDBOX is None:
    probe = subprocess.run([sys.executable, '-I', '-c', 'pass'], capture_output=True,
                           preexec_fn=_limit(5, True), check=False)
    _SANDBOX = 'netns' if probe.returncode == 0 else 'socket-guard'
  return _SANDBOX


def run_program(source: str, timeout_s: float = 10.0) -> tuple[bool, str]:
  """Runs `source` sandboxed; returns (passed, status).

  status is 'passed', 'failed' (non-zero exit with no message), 'timeout', or
  'error: <last line of stderr>' (e.g. the AssertionError or NameError).
  """
  isolate = sandbox_kind() == 'netns'
  if not isolate:
    source = _NO_SOCKETS + source
  with tempfile.TemporaryDirectory(prefix='lattice-code-') as cwd:
    try:
      proc = subprocess.run(
          [sys.executable, '-I', '-c', source], cwd=cwd, capture_output=True,
          timeout=timeout_s, preexec_fn=_limit(timeout_s, isolate), check=False,
          env={'PATH': '/usr/bin:/bin', 'PYTHONHASHSEED': '0'}, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
      return False, 'timeout'
  if proc.returncode == 0:
    return True, 'passed'
  lines = proc.stderr.decode('utf-8', errors='replace').strip().splitlines()
  return False, f'error: {lines[-1]}' if lines else 'failed'


def evaluate(problems: Sequence[Problem], completions: dict[str, Sequence[str]],
             ks: Iterable[int] = (1, 10), timeout_s: float = 10.0,
             workers: int = 2) -> dict:
  """pass@k over `problems` given n completions per task id.

  Returns:
    {'pass@k': mean over problems (for each k <= the smallest n), 'n_problems',
     'samples_per_problem', 'sandbox', 'outcomes': [Outcome as dict, ...]}.

  Raises:
    ValueError: a problem has no completions.
  """
  missing = [p.task_id for p in problems if not completions.get(p.task_id)]
  if missing:
    raise ValueError(f'evaluate: no completions for {missing[:3]}')
  jobs = [(p, c) for p in problems for c in completions[p.task_id]]
  with concurrent.futures.ThreadPoolExecutor(max(workers, 1)) as pool:
    results = list(pool.map(
        lambda job: run_program(f'{job[0].prefix}{job[1]}\n\n{job[0].test}', timeout_s),
        jobs))
  outcomes = [Outcome(p.task_id, ok, status) for (p, _), (ok, status) in zip(jobs, results)]
  n_min = min(len(completions[p.task_id]) for p in problems)
  out = {'n_problems': len(problems), 'samples_per_problem': n_min,
         'sandbox': sandbox_kind()}
  for k in ks:
    if k <= n_min:
      per = [pass_at_k(len(completions[p.task_id]),
                       sum(o.passed for o in outcomes if o.task_id == p.task_id), k)
             for p in problems]
      out[f'pass@{k}'] = float(np.mean(per))
  out['outcomes'] = [dataclasses.asdict(o) for o in outcomes]
  return out
