"""The Result record an experiment returns: schema, validation, provenance, writing.

An experiment's `run(config, workdir)` measures each arm over seeds, turns the
paper's claim into `Check`s on those measured numbers, and writes a `Result`:
`workdir/result.json` (the contract `lattice report` and the smoke tests read,
see DESIGN.md "Results") and `workdir/table.md` (the same, for people; rendered by
`lattice.run.tables`). Every file is written atomically, mode 0644.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
from typing import Any

from lattice import storage
from lattice.run import provenance, tables

MODES = ('smoke', 'quick', 'full')
RESULT_FILE = 'result.json'
TABLE_FILE = 'table.md'


def is_primary_process() -> bool:
  """False on every process but 0 of a jax.distributed run (they must not write)."""
  jax = sys.modules.get('jax')  # never import jax here: this module stays cheap
  return jax is None or jax.process_index() == 0


@dataclasses.dataclass
class Check:
  """One test of the paper's claim; `detail` holds the numbers behind it."""
  name: str
  passed: bool
  detail: str


def check(name: str, passed: Any, detail: str) -> Check:
  """Builds a Check, coercing numpy/jax scalar booleans to a plain bool."""
  try:
    passed = bool(passed)
  except (TypeError, ValueError) as e:  # e.g. a multi-element array.
    raise ValueError(f'check {name!r}: `passed` must be a scalar boolean, got '
                     f'{type(passed).__name__}: {e}') from e
  return Check(name=name, passed=passed, detail=str(detail))


# Paths that hold committed results, not code: a change there does not make the tree
# '-dirty'. scripts/reproduce_all.sh copies each finished experiment's result into
# results/<name>/ before the next one starts; counting those copies as changes had
# stamped every experiment after the first of a clean rerun '-dirty' (2026-12-01).
RESULT_PATHS = ('results', 'REPRODUCTIONS.md')


def git_commit(repo_dir: str | os.PathLike[str]) -> str | None:
  """Short sha of `repo_dir`'s HEAD, '-dirty' if a tracked file outside
  `RESULT_PATHS` changed; None if unknown (not a repo, no commit, no git)."""
  def git(*args: str) -> str:
    return subprocess.run(
        ('git', *args), cwd=repo_dir, capture_output=True, text=True,
        timeout=10, check=True).stdout.strip()
  try:
    sha = git('rev-parse', '--short', 'HEAD')
    dirty = bool(git('status', '--porcelain', '--untracked-files=no', '--', '.',
                     *(f':(top,exclude){p}' for p in RESULT_PATHS)))
  except (OSError, subprocess.SubprocessError):
    # Not a repo, no commits yet, or no git binary: provenance is unknown,
    # which must never stop a result from being written.
    return None
  return sha + ('-dirty' if dirty else '')


def _version(package: str) -> str | None:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version(package)
  except Exception:  # pylint: disable=broad-except
    return None


def env_info() -> dict[str, Any]:
  """Where and with what a result was measured. Never raises."""
  import jax  # pylint: disable=g-import-not-at-top
  try:
    devices = jax.devices()
    backend = jax.default_backend()
    device_kind = devices[0].device_kind if devices else None
    process_count = jax.process_count()
  except Exception as e:  # pylint: disable=broad-except
    devices, backend, device_kind, process_count = [], f'unavailable: {e}', None, 0
  return {
      'jax': jax.__version__,
      'jaxlib': _version('jaxlib'),
      'flax': _version('flax'),
      'optax': _version('optax'),
      'backend': backend,
      'device_count': len(devices),
      'process_count': process_count,
      'device_kind': device_kind,
      'python': platform.python_version(),
      'platform': platform.platform(),
      'hostname': socket.gethostname(),
      'timestamp': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      **provenance.env_fields(git_commit(pathlib.Path(__file__).resolve().parent)),
  }


@dataclasses.dataclass
class Arm:
  """One configuration of an experiment (baseline, technique, size...)."""
  name: str
  overrides: dict[str, Any]  # Dotted config path -> value, vs the base config.
  metrics: dict[str, dict[str, Any]]  # aggregate(...) output.
  params: int = 0
  active_params: int = 0
  train_flops: float = 0.0
  tokens: int = 0
  wall_s: float = 0.0
  seeds: list[int] = dataclasses.field(default_factory=list)
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def to_builtin(x: Any) -> Any:
  """Recursively converts numpy/jax values, tuples and paths to JSON types."""
  if isinstance(x, dict):
    return {str(k): to_builtin(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_builtin(v) for v in x]
  if isinstance(x, (str, bool, int, float)) or x is None:
    return x
  if isinstance(x, os.PathLike):
    return os.fspath(x)
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return to_builtin(dataclasses.asdict(x))
  if hasattr(x, 'tolist'):  # numpy and jax arrays and scalars.
    return to_builtin(x.tolist())
  raise TypeError(f'cannot store {type(x).__name__} in result.json: {x!r}')


@dataclasses.dataclass
class Result:
  """What an experiment measured and whether that reproduces the paper's claim."""
  experiment: str
  paper: dict[str, str]  # {'title': ..., 'arxiv': ...}
  claim: str
  mode: str  # smoke | quick | full
  arms: list[Arm]
  checks: list[Check]
  headline: dict[str, str]  # {'paper': ..., 'ours': ...}, both as text.
  env: dict[str, Any] = dataclasses.field(default_factory=env_info)
  plots: list[str] = dataclasses.field(default_factory=list)
  notes: str = ''
  # `lattice eval` rows, one per (run, eval set): see `add_evals`. Absent from
  # result.json while empty, so records written before it existed stay as they are.
  evals: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def reproduced(self) -> bool:
    # No checks means the claim was never tested, which is not a reproduction.
    return bool(self.checks) and all(c.passed for c in self.checks)

  def to_json(self) -> dict[str, Any]:
    d = to_builtin(dataclasses.asdict(self))
    if not d['evals']:
      del d['evals']
    d['reproduced'] = self.reproduced
    return d

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> Result:
    validate_result_json(d)
    arm_fields = {f.name for f in dataclasses.fields(Arm)}
    return cls(
        experiment=d['experiment'], paper=dict(d['paper']), claim=d['claim'],
        mode=d['mode'],
        arms=[Arm(**{k: v for k, v in a.items() if k in arm_fields})
              for a in d['arms']],
        checks=[Check(c['name'], c['passed'], c['detail']) for c in d['checks']],
        headline=dict(d.get('headline') or {}), env=dict(d['env']),
        plots=list(d.get('plots') or []), notes=d.get('notes') or '',
        evals=[dict(e) for e in d.get('evals') or []])

  @classmethod
  def load(cls, path_or_workdir: str | os.PathLike[str]) -> Result:
    """Reads a result.json, or the one inside a workdir; ValueError if invalid."""
    path = storage.path(path_or_workdir)
    if path.is_dir():
      path = path / RESULT_FILE
    try:
      d = json.loads(path.read_text())
      return cls.from_json(d)
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError.
      raise ValueError(f'{path}: invalid result: {e}') from e

  def write(self, workdir: str | os.PathLike[str]) -> None:
    """Writes workdir/result.json and workdir/table.md."""
    workdir = storage.path(workdir)
    d = self.to_json()
    validate_result_json(d)  # Fail here, not later in `lattice report`.
    if not is_primary_process():
      return
    # NaN (a diverged arm) is written as the JSON extension `NaN`, which Python's
    # json reads back; dropping it to null would lose the fact it diverged.
    write_atomic(workdir / RESULT_FILE, json.dumps(d, indent=2) + '\n')
    write_atomic(workdir / TABLE_FILE, tables.result_markdown(self))


EVAL_METRICS = ('val_loss', 'val_ppl', 'val_bpb')


def add_evals(result: Result, rows: list[dict[str, Any]]) -> Result:
  """`result` with the eval `rows` added; a row replaces an earlier one of the same
  run and eval set (the `eval` description), so re-evaluating updates in place.

  A row: {'run': the run's folder relative to the result's workdir, 'step': the
  checkpoint step, 'eval': the eval set (source, paths, split, tokenizer), and
  numbers: 'val_loss' (nats/token), 'val_ppl' (per token), 'val_bpb' (bits per
  UTF-8 byte), optionally others (e.g. 'lm_eval': {task: {metric: value}},
  'pass@1')}.
  """
  def key(row: dict[str, Any]) -> str:
    return json.dumps([row.get('run'), row.get('eval')], sort_keys=True)
  new = {key(r): to_builtin(r) for r in rows}
  kept = [e for e in result.evals if key(e) not in new]
  return dataclasses.replace(result, evals=kept + list(new.values()))


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
  """Writes `text` to `path` (local or gs://) so a reader (or a preempted run) never
  sees half a file; see `lattice.storage.write_atomic`. Local files are 0644."""
  storage.write_atomic(path, text)


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _require(d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
  if not isinstance(d, dict) or key not in d:
    raise ValueError(f'result.json: missing field {where}{key}')
  value = d[key]
  ok = _is_number(value) if kind is float else isinstance(value, kind)
  if not ok:
    name = 'number' if kind is float else getattr(kind, '__name__', str(kind))
    raise ValueError(f'result.json: field {where}{key} should be {name}, got '
                     f'{type(value).__name__}: {value!r}')
  return value


def validate_result_json(d: dict[str, Any]) -> None:
  """Raises ValueError naming the first missing or malformed field."""
  if not isinstance(d, dict):
    raise ValueError(f'result.json: expected an object, got {type(d).__name__}')
  _require(d, 'experiment', str, '')
  paper = _require(d, 'paper', dict, '')
  _require(paper, 'title', str, 'paper.')
  _require(paper, 'arxiv', str, 'paper.')
  _require(d, 'claim', str, '')
  if _require(d, 'mode', str, '') not in MODES:
    raise ValueError(f'result.json: field mode should be one of {MODES}, got '
                     f'{d["mode"]!r}')
  arms = _require(d, 'arms', list, '')
  if not arms:
    raise ValueError('result.json: field arms is empty; a result needs an arm')
  for i, arm in enumerate(arms):
    where = f'arms[{i}].'
    _require(arm, 'name', str, where)
    _require(arm, 'overrides', dict, where)
    metrics = _require(arm, 'metrics', dict, where)
    for key in ('params', 'active_params', 'train_flops', 'tokens', 'wall_s'):
      _require(arm, key, float, where)
    for name, m in metrics.items():
      _require(m, 'mean', float, f'{where}metrics[{name!r}].')
      _require(m, 'std', float, f'{where}metrics[{name!r}].')
  checks = _require(d, 'checks', list, '')
  for i, c in enumerate(checks):
    _require(c, 'name', str, f'checks[{i}].')
    _require(c, 'passed', bool, f'checks[{i}].')
    _require(c, 'detail', str, f'checks[{i}].')
  reproduced = _require(d, 'reproduced', bool, '')
  if reproduced != (bool(checks) and all(c['passed'] for c in checks)):
    raise ValueError(f'result.json: field reproduced={reproduced} disagrees with '
                     'checks (it must be: at least one check, all passed)')
  for i, e in enumerate(d.get('evals') or []):
    _require(e, 'run', str, f'evals[{i}].')
    _require(e, 'step', int, f'evals[{i}].')
    for key in EVAL_METRICS:
      if key in e:
        _require(e, key, float, f'evals[{i}].')
  env = _require(d, 'env', dict, '')
  _require(env, 'jax', str, 'env.')
  _require(env, 'backend', str, 'env.')
  _require(env, 'device_count', int, 'env.')
  _require(env, 'git_commit', (str, type(None)), 'env.')
