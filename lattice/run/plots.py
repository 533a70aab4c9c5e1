"""Small, labelled PNG plots for experiment results.

matplotlib is imported inside each function so `import lattice.results` stays
fast, and figures are drawn on an Agg canvas through the object API (no pyplot):
no global figure state, no GUI backend, nothing ever shown.
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Sequence

from lattice import storage
from lattice.run.records import is_primary_process

_FIGSIZE = (5.5, 3.6)
_DPI = 130


def _new_figure():
  # pylint: disable-next=g-import-not-at-top
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=_FIGSIZE, dpi=_DPI)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str | os.PathLike[str]) -> str:
  path = storage.path(path)  # local or gs://
  if path.suffix.lower() != '.png':
    raise ValueError(f'plot path must end in .png, got {path}')
  if not is_primary_process():
    return path.name
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  with path.open('wb') as f:
    fig.savefig(f, format='png')
  return path.name


def plot_series(path: str | os.PathLike[str],
                series: dict[str, tuple[Sequence[float], Sequence[float]]], *,
                xlabel: str, ylabel: str, title: str,
                logx: bool = False, logy: bool = False) -> str:
  """Line plot of named (xs, ys) series, e.g. loss curves; returns the file name."""
  if not series:
    raise ValueError(f'plot_series({path}): no series to plot')
  import numpy as np  # pylint: disable=g-import-not-at-top
  fig = _new_figure()
  ax = fig.add_subplot()
  for name, (xs, ys) in series.items():
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
      raise ValueError(f'plot_series({path}): series {name!r} needs 1-D xs and ys '
                       f'of equal length, got shapes {xs.shape} and {ys.shape}')
    # Markers keep short series (a few sizes in a scaling sweep) readable.
    ax.plot(xs, ys, label=name, marker='o' if len(xs) <= 20 else None,
            markersize=3, linewidth=1.5)
  # pylint: disable-next=g-import-not-at-top
  from matplotlib.ticker import LogFormatter
  if logx:
    ax.set_xscale('log')
  if logy:
    ax.set_yscale('log')
  for axis, log in ((ax.xaxis, logx), (ax.yaxis, logy)):
    if log:
      # Plain '2.5' rather than '2.5×10^0' on the short ranges losses span.
      axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
      axis.set_minor_formatter(LogFormatter(labelOnlyBase=False,
                                            minor_thresholds=(2, 0.5)))
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize='small')
  return _save(fig, path)


def plot_bars(path: str | os.PathLike[str], values: dict[str, float],
              errors: dict[str, float] | None, *, ylabel: str, title: str) -> str:
  """Bar chart of one value per arm, with optional error bars (e.g. std over seeds)."""
  if not values:
    raise ValueError(f'plot_bars({path}): no values to plot')
  if errors is not None and set(errors) - set(values):
    raise ValueError(f'plot_bars({path}): errors for unknown bars '
                     f'{sorted(set(errors) - set(values))}')
  names = list(values)
  heights = [float(values[n]) for n in names]
  yerr = None if errors is None else [float(errors.get(n, 0.0)) for n in names]
  fig = _new_figure()
  ax = fig.add_subplot()
  bars = ax.bar(range(len(names)), heights, yerr=yerr, capsize=4,
                color='tab:blue', alpha=0.85)
  # Inside the bars, where error bars cannot overlap the numbers.
  ax.bar_label(bars, labels=[f'{h:.4g}' for h in heights], label_type='center',
               color='white', fontsize='small')
  long_names = len(names) > 4 or max(len(n) for n in names) > 10
  ax.set_xticks(range(len(names)), names, rotation=30 if long_names else 0,
                ha='right' if long_names else 'center', fontsize='small')
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(True, axis='y', alpha=0.3)
  return _save(fig, path)


def plot_ablation(path: str | pathlib.Path, arms: list,
                  analysis: dict[str, Any]) -> str:
  """Bars of the metric per arm; error bars: half the CI of Δ vs the baseline."""
  metric = analysis['metric']
  values = {a.name: a.metrics[metric]['mean'] for a in arms if metric in a.metrics}
  errors = {}
  for name in values:
    d = analysis['diffs'].get(name)
    errors[name] = 0.0 if not d or math.isnan(d['lo']) else (d['hi'] - d['lo']) / 2
  return plot_bars(path, values, errors, ylabel=metric,
                           title=f'{metric} per arm (bars: CI of Δ vs baseline)')
