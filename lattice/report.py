"""`lattice report RUNS_DIR`: every result.json under a folder, in one markdown file.

The summary table answers, per run, "did the paper's claim hold here?"; the
sections below it repeat each run's table.md so the numbers behind a verdict sit
next to it. One unreadable result.json is skipped with a warning rather than
failing the report, since runs dirs collect crashed and half-written runs.
RUNS_DIR (and --out) may be a bucket (`gs://...`): links are then relative within
the bucket.
"""

from __future__ import annotations

import collections
import os
import pathlib
import posixpath
import sys
import warnings
from typing import Sequence

from etils import epath
import fsspec

from lattice import storage
from lattice.run import records, tables
from lattice.run.records import Result

DEFAULT_OUT = 'REPRODUCTIONS.md'
# Bigger runs first within an experiment: they are the ones that test the claim.
_MODE_ORDER = {'full': 0, 'quick': 1, 'smoke': 2}


def collect(runs_dir: str | os.PathLike[str]) -> list[tuple[pathlib.Path, Result]]:
  """(run dir, Result) for each valid result.json under runs_dir, recursively.

  Raises FileNotFoundError if runs_dir is not a directory; warns (and skips) for
  each result.json that cannot be read or fails validation.
  """
  runs_dir = storage.path(runs_dir)
  if not runs_dir.is_dir():
    raise FileNotFoundError(f'runs dir {runs_dir} does not exist or is not a '
                            'directory')
  found = []
  for path in _result_files(runs_dir):
    try:
      found.append((path.parent, Result.load(path)))
    except (OSError, ValueError) as e:
      warnings.warn(f'skipping {path}: {e}', stacklevel=2)
  found.sort(key=lambda pr: (pr[1].experiment, _MODE_ORDER.get(pr[1].mode, 3),
                             str(pr[0])))
  return found


def _result_files(runs_dir: epath.Path) -> list[epath.Path]:
  """Every result.json under `runs_dir`, recursively (a bucket: one listing)."""
  if not storage.is_remote(runs_dir):
    return sorted(pathlib.Path(runs_dir).rglob(records.RESULT_FILE))
  # epath refuses recursive globs on object stores; fsspec's find lists once.
  scheme = os.fspath(runs_dir).split('://', 1)[0]
  fs, root = fsspec.core.url_to_fs(os.fspath(runs_dir))
  return sorted(epath.Path(f'{scheme}://{p}') for p in fs.find(root)
                if posixpath.basename(p) == records.RESULT_FILE)


def _remote_rel(target: epath.Path, base: epath.Path) -> str:
  """`target` relative to `base` when both are in one store, else its full URL."""
  t, b = os.fspath(target), os.fspath(base)
  if storage.is_remote(t) and storage.is_remote(b) and \
      t.split('/', 3)[:3] == b.split('/', 3)[:3]:  # same scheme and bucket
    return posixpath.relpath(t.split('://', 1)[1], b.split('://', 1)[1])
  return t


def _link(target: pathlib.Path, link_base: pathlib.Path) -> str:
  # Forward slashes and no spaces, so the link works in any markdown viewer.
  if storage.is_remote(target) or storage.is_remote(link_base):
    return _remote_rel(target, link_base).replace(' ', '%20')
  rel = pathlib.Path(os.path.relpath(target.resolve(), link_base.resolve()))
  return rel.as_posix().replace(' ', '%20')


def _label(run_dir: pathlib.Path, runs_dir: pathlib.Path) -> str:
  """The run's folder relative to the runs folder ('.' for the folder itself)."""
  if storage.is_remote(run_dir):
    return _remote_rel(run_dir, runs_dir)
  try:
    return run_dir.resolve().relative_to(runs_dir.resolve()).as_posix()
  except ValueError:
    return run_dir.as_posix()


def commits_line(results) -> str:
  """Which code commits the results were measured at, most results first: one
  commit is what issue #20's clean rerun asks for; '-dirty' marks a changed tree."""
  counts = collections.Counter(r.env.get('git_commit') or 'unknown' for r in results)
  listed = ', '.join(f'`{c}` ({n})' for c, n in counts.most_common())
  if len(counts) == 1 and 'unknown' not in counts:
    return f'Every result is from one commit: {listed}.'
  return f'Results by commit (not one commit): {listed}.'


def seeds_cell(result: Result) -> str:
  """Seeds per arm: '3', or 'MIN-MAX' when arms differ (e.g. one teacher seed)."""
  counts = sorted({len(a.seeds) for a in result.arms}) or [0]
  return str(counts[0]) if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'


def render(results: Sequence[tuple[pathlib.Path, Result]],
           runs_dir: str | os.PathLike[str],
           link_base: str | os.PathLike[str] | None = None) -> str:
  """The report as markdown.

  Args:
    results: `collect(...)` output.
    runs_dir: the folder the results were gathered from (named in the header).
    link_base: the folder the document will be written to; links to run dirs and
      plots are made relative to it. Defaults to the current directory.
  """
  runs_dir = storage.path(runs_dir)
  base = storage.path(link_base) if link_base is not None else pathlib.Path.cwd()
  cell = tables.cell
  n_ok = sum(r.reproduced for _, r in results)
  lines = [
      '# Reproductions', '',
      f'{len(results)} results from `{runs_dir}`, {n_ok} reproduced. '
      'Generated by `lattice report`; each verdict is the conjunction of the '
      'checks listed in its section, run on the numbers that run measured.', '',
      commits_line(r for _, r in results), '',
      "| run | experiment | paper | claim | paper's number | ours | verdict | mode "
      '| seeds | arm time s | plots |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
  ]
  for run_dir, r in results:
    table = _link(run_dir / records.TABLE_FILE, base)
    plots = ', '.join(f'[{cell(p)}]({_link(run_dir / p, base)})' for p in r.plots)
    mark = '✓' if r.reproduced else '✗'
    label = _label(run_dir, runs_dir)
    lines.append(' | '.join([
        f'| [{cell(label)}]({table})', cell(r.experiment),
        tables.paper_link(r.paper), cell(r.claim),
        cell(r.headline.get('paper', '—')), cell(r.headline.get('ours', '—')),
        f'{mark} {tables.verdict(r)}', r.mode, seeds_cell(r),
        f'{sum(a.wall_s for a in r.arms):.0f}', plots or '—']) + ' |')
  for run_dir, r in results:
    prefix = _link(run_dir, base) + '/'
    lines += ['', '---', '', f'Run: `{_link(run_dir, base)}`', '',
              tables.result_markdown(r, level=2, plot_prefix=prefix).rstrip()]
  return '\n'.join(lines) + '\n'


def _fail(message: str) -> None:
  """One `lattice: error:` line and exit 2, like every other CLI error."""
  print(f'lattice: error: report: {message}', file=sys.stderr)
  raise SystemExit(2)


def write(runs_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
          ) -> pathlib.Path:
  """`lattice report RUNS_DIR [--out PATH]`: writes the report (default
  RUNS_DIR/REPRODUCTIONS.md, so the committed ./REPRODUCTIONS.md changes only when
  named) and returns its path. Exits 2 with one line when RUNS_DIR is missing or
  holds no valid result."""
  runs_dir = storage.path(runs_dir)
  try:
    found = collect(runs_dir)
  except FileNotFoundError as e:
    _fail(str(e))
  if not found:
    _fail(f'no valid {records.RESULT_FILE} under {runs_dir} (run an '
          f'experiment with --workdir there first)')
  out = storage.path(out) if out is not None else runs_dir / DEFAULT_OUT
  records.write_atomic(out, render(found, runs_dir, link_base=out.parent))
  print(f'wrote {out}: {len(found)} results, '
        f'{sum(r.reproduced for _, r in found)} reproduced')
  return out
