"""The Result record every experiment returns, and how it is checked and shown.

An experiment's `run(config, workdir)` measures each arm over seeds, turns the
paper's claim into `Check`s on those measured numbers, and writes a `Result`:
`workdir/result.json` (the contract `lattice report` and the smoke tests read,
see DESIGN.md "Results") and `workdir/table.md` (the same, for people).

Plot helpers live in `lattice.plots` and are re-exported here; matplotlib is only
imported when a plot is drawn, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import socket
import subprocess
import tempfile
from typing import Any

from lattice.plots import is_primary_process, plot_bars, plot_series  # pylint: disable=unused-import

MODES = ('smoke', 'quick', 'full')
RESULT_FILE = 'result.json'
TABLE_FILE = 'table.md'


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


def aggregate(per_seed: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
  """Mean and sample std (ddof=1) of each metric over seeds.

  A NaN seed is kept in `values` and makes the mean NaN: a diverged seed must
  show up in the table, not silently vanish. A metric missing from some seeds is
  aggregated over the seeds that have it (`n` says how many).
  """
  values: dict[str, list[float]] = {}
  for i, metrics in enumerate(per_seed):
    for key, value in metrics.items():
      try:
        values.setdefault(key, []).append(float(value))
      except (TypeError, ValueError) as e:
        raise ValueError(f'aggregate: seed {i} metric {key!r} is not a number: '
                         f'{value!r}') from e
  out = {}
  for key, vs in values.items():
    n = len(vs)
    mean = sum(vs) / n
    std = (math.sqrt(sum((v - mean) ** 2 for v in vs) / (n - 1))
           if n > 1 else 0.0)
    out[key] = {'mean': mean, 'std': std, 'n': n, 'values': vs}
  return out


def _git_commit(repo_dir: str | os.PathLike[str]) -> str | None:
  """Short sha of `repo_dir`'s HEAD, '-dirty' if changed; None if unknown."""
  def git(*args: str) -> str:
    return subprocess.run(
        ('git', *args), cwd=repo_dir, capture_output=True, text=True,
        timeout=10, check=True).stdout.strip()
  try:
    sha = git('rev-parse', '--short', 'HEAD')
    dirty = bool(git('status', '--porcelain', '--untracked-files=no'))
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
      'git_commit': _git_commit(pathlib.Path(__file__).resolve().parent),
      'hostname': socket.gethostname(),
      'timestamp': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
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


def _builtin(x: Any) -> Any:
  """Recursively converts numpy/jax values, tuples and paths to JSON types."""
  if isinstance(x, dict):
    return {str(k): _builtin(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_builtin(v) for v in x]
  if isinstance(x, (str, bool, int, float)) or x is None:
    return x
  if isinstance(x, os.PathLike):
    return os.fspath(x)
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return _builtin(dataclasses.asdict(x))
  if hasattr(x, 'tolist'):  # numpy and jax arrays and scalars.
    return _builtin(x.tolist())
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

  @property
  def reproduced(self) -> bool:
    # No checks means the claim was never tested, which is not a reproduction.
    return bool(self.checks) and all(c.passed for c in self.checks)

  def to_json(self) -> dict[str, Any]:
    d = _builtin(dataclasses.asdict(self))
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
        plots=list(d.get('plots') or []), notes=d.get('notes') or '')

  @classmethod
  def load(cls, path_or_workdir: str | os.PathLike[str]) -> Result:
    """Reads a result.json, or the one inside a workdir; ValueError if invalid."""
    path = pathlib.Path(path_or_workdir)
    if path.is_dir():
      path = path / RESULT_FILE
    try:
      d = json.loads(path.read_text())
      return cls.from_json(d)
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError.
      raise ValueError(f'{path}: invalid result: {e}') from e

  def write(self, workdir: str | os.PathLike[str]) -> None:
    """Writes workdir/result.json and workdir/table.md."""
    workdir = pathlib.Path(workdir)
    d = self.to_json()
    validate_result_json(d)  # Fail here, not later in `lattice report`.
    if not is_primary_process():
      return
    # NaN (a diverged arm) is written as the JSON extension `NaN`, which Python's
    # json reads back; dropping it to null would lose the fact it diverged.
    _write_atomic(workdir / RESULT_FILE, json.dumps(d, indent=2) + '\n')
    _write_atomic(workdir / TABLE_FILE, to_markdown(self))


def _umask() -> int:
  mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
  os.umask(mask)
  return mask


def _write_atomic(path: pathlib.Path, text: str) -> None:
  """Tmp file + rename, so a reader (or a preempted run) never sees half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
  try:
    # mkstemp makes the file 0600; results are for sharing: rw-r--r-- under umask 022.
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


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
  env = _require(d, 'env', dict, '')
  _require(env, 'jax', str, 'env.')
  _require(env, 'backend', str, 'env.')
  _require(env, 'device_count', int, 'env.')
  _require(env, 'git_commit', (str, type(None)), 'env.')


# ---------------------------------------------------------------------------
# Equal-FLOPs reading


def value_at_flops(history: list[dict[str, float]], train_flops: float, target: float,
                   key: str = 'val_loss', rtol: float = 0.02) -> float:
  """`key` at `target` training FLOPs, interpolated linearly in log FLOPs between a
  run's eval points (FLOPs at step s = train_flops * s / final step). A target
  within `rtol` outside the evaluated range takes the nearest point (arms matched
  by a FLOP budget land within a step of it); further out it is NaN."""
  points = [(h['step'], h[key]) for h in history if key in h]
  if not points or train_flops <= 0:
    return float('nan')
  last = points[-1][0]
  xs = [math.log(train_flops * s / last) for s, _ in points]
  ys = [y for _, y in points]
  t, tol = math.log(target), math.log1p(rtol)
  if t > xs[-1] + tol or t < xs[0] - tol:
    return float('nan')
  t = min(max(t, xs[0]), xs[-1])
  for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
    if x0 - 1e-9 <= t <= x1 + 1e-9:
      return y0 if x1 == x0 else y0 + (y1 - y0) * (t - x0) / (x1 - x0)
  return ys[-1]  # t equals the only point


def equal_flops(arms: list[Arm], key: str = 'val_loss'
                ) -> tuple[float, dict[str, dict[str, float]]]:
  """The largest FLOP count every arm reached, and each arm's `key` there
  (mean and std over seeds)."""
  target = min(a.train_flops for a in arms)
  out = {}
  for a in arms:
    vals = [value_at_flops(h, a.train_flops, target, key)
            for h in a.extra.get('history', [])]
    out[a.name] = (aggregate([{key: v} for v in vals])[key] if vals else
                   {'mean': float('nan'), 'std': float('nan'), 'n': 0, 'values': []})
  return target, out


# ---------------------------------------------------------------------------
# table.md


def arxiv_url(arxiv: str) -> str:
  """'2402.17764' or 'arXiv:2402.17764' -> https://arxiv.org/abs/2402.17764."""
  arxiv = arxiv.strip()
  if arxiv.startswith(('http://', 'https://')):
    return arxiv
  if arxiv.lower().startswith('arxiv:'):
    arxiv = arxiv[len('arxiv:'):]
  return f'https://arxiv.org/abs/{arxiv}'


def paper_link(paper: dict[str, str]) -> str:
  title = cell(paper.get('title') or '(untitled)')
  return f'[{title}]({arxiv_url(paper["arxiv"])})' if paper.get('arxiv') else title


def cell(text: Any) -> str:
  """Makes text safe inside a markdown table cell."""
  return ' '.join(str(text).split()).replace('|', r'\|')


def fmt_number(x: float, digits: int = 4) -> str:
  """`digits` significant digits; scientific notation only for very large/small."""
  if isinstance(x, float) and math.isnan(x):
    return 'nan'
  if isinstance(x, float) and math.isinf(x):
    return 'inf' if x > 0 else '-inf'
  if isinstance(x, int) and not isinstance(x, bool):
    return str(x)
  if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
    return fmt_sci(x, min(digits, 3))
  return f'{x:.{digits}g}'


def fmt_sci(x: float, digits: int = 2) -> str:
  """1.2e12 rather than 1.2e+12."""
  if x == 0:
    return '0'
  mantissa, exp = f'{x:.{digits - 1}e}'.split('e')
  return f'{mantissa}e{int(exp)}'


def fmt_count(n: float) -> str:
  """Parameter and token counts: 950, 12.3K, 1.24M, 7.0B."""
  for scale, suffix in ((1e12, 'T'), (1e9, 'B'), (1e6, 'M'), (1e3, 'K')):
    if abs(n) >= scale:
      return f'{n / scale:.3g}{suffix}'
  return str(int(n))


def fmt_mean_std(m: dict[str, Any] | None) -> str:
  """'2.415 ± 0.034' from an aggregate() entry; '—' for none or a NaN mean, the mean
  alone for one seed, '± 0' when the seeds agree up to float rounding."""
  if not m or m.get('mean') is None or math.isnan(m['mean']):
    return '—'
  std = m.get('std', 0.0)
  if m.get('n', len(m.get('values', [])) or 1) < 2 or math.isnan(std):
    return fmt_number(m['mean'])
  if std <= 1e-9 * abs(m['mean']):
    return f'{fmt_number(m["mean"])} ± 0'
  # Two digits of a std are all a few seeds can estimate.
  return f'{fmt_number(m["mean"])} ± {fmt_number(std, 2)}'


def equal_flops_line(arms: list[Arm], key: str = 'val_loss') -> str:
  """'At equal training FLOPs ...' when arms trained for different FLOPs and have
  eval histories: each arm's `key` at the FLOPs the cheapest arm reached. Arms named
  'group:name' are compared only within their group (e.g. other data); a group
  where fewer than two arms were evaluated that early gets no line."""
  groups: dict[str, list[Arm]] = {}
  for a in arms:
    if a.train_flops > 0 and any(key in h for run in a.extra.get('history', [])
                                 for h in run):
      groups.setdefault(a.name.split(':', 1)[0] if ':' in a.name else '', []).append(a)
  lines = []
  for group, members in groups.items():
    flops = [a.train_flops for a in members]
    if len(members) < 2 or max(flops) <= 1.02 * min(flops):
      continue
    target, values = equal_flops(members, key)
    if sum(not math.isnan(v['mean']) for v in values.values()) < 2:
      continue
    cells = ', '.join(f'**{cell(a.name)}** {fmt_mean_std(values[a.name])}'
                      for a in members)
    lines.append(f'At equal training FLOPs{f" ({group})" if group else ""} '
                 f'({fmt_sci(target)}, what the cheapest arm trained; interpolated '
                 f'between eval points, — before an arm\'s first eval): {key} {cells}')
  return '\n\n'.join(lines)


def verdict(result: Result) -> str:
  if result.reproduced:
    return 'reproduced'
  passed = sum(c.passed for c in result.checks)
  return f'not reproduced ({passed}/{len(result.checks)} checks)'


def arms_table(arms: list[Arm]) -> str:
  """Arms (rows) x metrics (mean ± std) and cost columns."""
  names: list[str] = []
  for arm in arms:
    names += [k for k in arm.metrics if k not in names]
  header = (['arm'] + names +
            ['seeds', 'params', 'active params', 'train FLOPs', 'tokens', 'wall s'])
  rows = ['| ' + ' | '.join(cell(h) for h in header) + ' |',
          '|' + '---|' * len(header)]
  for arm in arms:
    row = [f'**{cell(arm.name)}**']
    for name in names:
      m = arm.metrics.get(name)
      row.append(fmt_mean_std(m))
    n = max((m.get('n', 0) for m in arm.metrics.values()), default=0)
    row += [str(len(arm.seeds) or n), fmt_count(arm.params),
            fmt_count(arm.active_params), fmt_sci(arm.train_flops),
            fmt_count(arm.tokens), f'{arm.wall_s:.1f}']
    rows.append('| ' + ' | '.join(row) + ' |')
  return '\n'.join(rows)


def to_markdown(result: Result, *, level: int = 1, plot_prefix: str = '') -> str:
  """The table.md text; `level` and `plot_prefix` let the report embed it."""
  h = '#' * level
  env = result.env
  lines = [
      f'{h} {result.experiment}', '',
      f'- **Paper:** {paper_link(result.paper)}',
      f'- **Claim:** {cell(result.claim)}',
      f'- **Mode:** {result.mode}',
      f'- **Verdict:** {"✓" if result.reproduced else "✗"} {verdict(result)}',
  ]
  if result.headline:
    lines.append(f'- **Paper\'s number:** {cell(result.headline.get("paper", "—"))}'
                 f'; **ours:** {cell(result.headline.get("ours", "—"))}')
  lines.append(f'- **Env:** jax {env.get("jax")}, {env.get("backend")} '
               f'({env.get("device_count")} × {env.get("device_kind")}), '
               f'commit {env.get("git_commit") or "unknown"}, '
               f'{env.get("timestamp", "")}')
  lines += ['', f'{h}# Arms', '', arms_table(result.arms), '']
  line = equal_flops_line(result.arms)
  if line:
    lines += [line, '']
  overridden = [a for a in result.arms if a.overrides]
  if overridden:
    lines += ['Overrides (vs the experiment\'s base config):', '']
    for arm in overridden:
      kv = ', '.join(f'`{k}={v!r}`' for k, v in arm.overrides.items())
      lines.append(f'- **{cell(arm.name)}**: {kv}')
    lines.append('')
  lines += [f'{h}# Checks', '']
  lines += [f'- {"✓" if c.passed else "✗"} **{cell(c.name)}**: {cell(c.detail)}'
            for c in result.checks] or ['- (no checks: the claim was not tested)']
  if result.plots:
    lines += ['', f'{h}# Plots', '']
    for p in result.plots:  # One per paragraph, so viewers stack them.
      lines += [f'![{p}]({plot_prefix}{p})', '']
    lines.pop()
  if result.notes:
    lines += ['', f'{h}# Notes', '', result.notes.strip()]
  return '\n'.join(lines) + '\n'
