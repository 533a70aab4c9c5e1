"""Reading arms at equal training FLOPs: the metric each arm had reached when it had
spent what the cheapest arm spent in all, interpolated between eval points.

Arms are `lattice.run.records.Arm`s whose `extra['history']` holds one list of eval
points ({'step': s, key: value}) per seed.
"""

from __future__ import annotations

import math

from lattice.run import stats


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


def equal_flops(arms: list, key: str = 'val_loss'
                ) -> tuple[float, dict[str, dict[str, float]]]:
  """The largest FLOP count every arm reached, and each arm's `key` there
  (mean and std over seeds)."""
  target = min(a.train_flops for a in arms)
  out = {}
  for a in arms:
    vals = [value_at_flops(h, a.train_flops, target, key)
            for h in a.extra.get('history', [])]
    out[a.name] = (stats.aggregate([{key: v} for v in vals])[key] if vals else
                   {'mean': float('nan'), 'std': float('nan'), 'n': 0, 'values': []})
  return target, out
