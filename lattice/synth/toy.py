"""Model collapse in closed-form settings (numpy): Gaussians, mixtures, regression.

Shumailov et al. 2024 (Nature): refitting a distribution to samples of the previous
fit loses variance and tails. With the MLE variance on n samples, E[var_g] =
((n-1)/n)^g var_0 and log var drifts to -inf, so the fit collapses to a point.
Gerstgrasser et al. 2024 (arXiv 2404.01413): in linear regression with T samples in
d dims, refitting only on the previous model's labels ("replace") gives excess
test error g * sigma^2 d / (T-d-1) after g fits (grows linearly), while
accumulating all data keeps it below sigma^2 d/(T-d-1) * sum_i 1/i^2 < pi^2/6
times the first fit's.

All functions run many independent chains at once and return per-generation
arrays (generation 0 = fit on real data).
"""

from __future__ import annotations

import math

import numpy as np


def _gauss_tail(mu: np.ndarray, sd: np.ndarray, t: float) -> np.ndarray:
  """P(|X| > t) for X ~ N(mu, sd^2), elementwise."""
  sd = np.maximum(sd, 1e-300)
  erfc = np.vectorize(math.erfc)
  return 0.5 * (erfc((t - mu) / (sd * math.sqrt(2))) + erfc((t + mu) / (sd * math.sqrt(2))))


def gaussian_refit(n: int, generations: int, chains: int, seed: int,
                   policy: str = 'replace', tail_at: float = 2.0) -> dict[str, np.ndarray]:
  """Refit N(mu, var) by MLE to n samples of the previous fit, `chains` times.

  Real data is N(0, 1). 'accumulate' fits on real + every generation's samples
  (through running sums, which equal the MLE on all of them). Returns, per
  generation: mean and median fitted var over chains, and the mean and median
  over chains of the model's tail mass P(|x| > tail_at) (real: 4.55% at 2 sigma;
  the mean stays up longer because a few chains' means drift far from 0).
  """
  if policy not in ('replace', 'accumulate'):
    raise ValueError(f'gaussian_refit: policy must be replace or accumulate, got {policy!r}')
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((chains, n))
  s1, s2, cnt = x.sum(1), (x * x).sum(1), float(n)
  mean_var, median_var, tail, med_tail = [], [], [], []
  for g in range(generations):
    if policy == 'replace' and g > 0:
      s1, s2, cnt = x.sum(1), (x * x).sum(1), float(n)
    mu = s1 / cnt
    var = np.maximum(s2 / cnt - mu * mu, 0.0)
    mean_var.append(var.mean())
    median_var.append(np.median(var))
    t = _gauss_tail(mu, np.sqrt(var), tail_at)
    tail.append(t.mean())
    med_tail.append(np.median(t))
    x = mu[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((chains, n))
    if policy == 'accumulate':
      s1, s2, cnt = s1 + x.sum(1), s2 + (x * x).sum(1), cnt + n
  return {'mean_var': np.asarray(mean_var), 'median_var': np.asarray(median_var),
          'tail_mass': np.asarray(tail), 'median_tail_mass': np.asarray(med_tail)}


def expected_var_replace(n: int, generations: int) -> np.ndarray:
  """E[var_g] = ((n-1)/n)^(g+1) under replace with the MLE variance (real var 1;
  generation 0 is already a fit to n real samples)."""
  return ((n - 1) / n) ** np.arange(1, generations + 1)


def sd_var_replace(n: int, generations: int) -> np.ndarray:
  """Standard deviation of var_g over chains under replace: each generation scales
  var by an independent chi2_{n-1}/n, so E[var_g^2] = ((n-1)(n+1)/n^2)^(g+1).
  It exceeds E[var_g] late, which is why the sample mean is judged in these units."""
  g = np.arange(1, generations + 1)
  return np.sqrt(((n - 1) * (n + 1) / n ** 2) ** g - ((n - 1) / n) ** (2 * g))


def _em_fit(x: np.ndarray, w: np.ndarray, mu: np.ndarray, sd: np.ndarray, iters: int):
  """EM for a K-component 1-D Gaussian mixture on each chain's rows of x[C, N]."""
  for _ in range(iters):
    z = (x[:, :, None] - mu[:, None, :]) / sd[:, None, :]
    logp = np.log(w)[:, None, :] - 0.5 * z * z - np.log(sd)[:, None, :]
    logp -= logp.max(-1, keepdims=True)
    r = np.exp(logp)
    r /= r.sum(-1, keepdims=True)
    nk = r.sum(1) + 1e-9
    w = nk / nk.sum(-1, keepdims=True)
    mu = (r * x[:, :, None]).sum(1) / nk
    var = (r * (x[:, :, None] - mu[:, None, :]) ** 2).sum(1) / nk
    sd = np.sqrt(np.maximum(var, 1e-12))
  return w, mu, sd


def mixture_refit(n: int, generations: int, chains: int, seed: int,
                  policy: str = 'replace', means=(-2.0, 2.0), weights=(0.8, 0.2),
                  em_iters: int = 15, tail_at: float = 3.0) -> dict[str, np.ndarray]:
  """Refit a 2-component mixture by EM (warm-started from the previous fit).

  Real data: weights (0.8, 0.2) at means (-2, 2), unit variances, so the right
  mode is the 'tail'. Returns per generation: mean total variance of the fit, mean
  weight of the minority (right) component, and mean and median tail mass
  P(|x| > tail_at). 'accumulate' refits on all data so far: its cost grows with
  the generation, so keep it to tens of generations.
  """
  if policy not in ('replace', 'accumulate'):
    raise ValueError(f'mixture_refit: policy must be replace or accumulate, got {policy!r}')
  rng = np.random.default_rng(seed)
  w0, m0 = np.asarray(weights), np.asarray(means)
  comp = rng.random((chains, n)) < w0[1]
  x = np.where(comp, m0[1], m0[0]) + rng.standard_normal((chains, n))
  data = x
  w, mu, sd = (np.tile(w0, (chains, 1)), np.tile(m0, (chains, 1)),
               np.ones((chains, 2)))
  tot_var, minority, tail, med_tail = [], [], [], []
  for g in range(generations):
    w, mu, sd = _em_fit(data, w, mu, sd, em_iters)
    mean = (w * mu).sum(-1)
    tot_var.append(((w * (sd ** 2 + mu ** 2)).sum(-1) - mean ** 2).mean())
    right = np.argmax(mu, -1)
    minority.append(np.take_along_axis(w, right[:, None], -1).mean())
    t = (w * _gauss_tail(mu, sd, tail_at)).sum(-1)
    tail.append(t.mean())
    med_tail.append(np.median(t))
    comp = rng.random((chains, n))[:, :, None] > np.cumsum(w, -1)[:, None, :]
    k = comp.sum(-1)
    x = (np.take_along_axis(mu, k, -1) +
         np.take_along_axis(sd, k, -1) * rng.standard_normal((chains, n)))
    data = x if policy == 'replace' else np.concatenate([data, x], axis=1)
  return {'total_var': np.asarray(tot_var), 'minority_weight': np.asarray(minority),
          'tail_mass': np.asarray(tail), 'median_tail_mass': np.asarray(med_tail)}


def linreg_collapse(d: int, T: int, sigma: float, generations: int, trials: int,
                    seed: int) -> dict[str, np.ndarray]:
  """Mean excess test error E||w_g - w*||^2 per generation, replace and accumulate.

  Generation 0 fits OLS on real data (T Gaussian rows, labels X w* + noise).
  Generation g labels fresh X_g with the previous fit plus noise; 'replace' fits
  on those alone, 'accumulate' on every dataset so far.
  """
  rng = np.random.default_rng(seed)
  rep, acc = np.zeros(generations), np.zeros(generations)
  for _ in range(trials):
    w_star = rng.standard_normal(d)
    X = rng.standard_normal((T, d))
    y = X @ w_star + sigma * rng.standard_normal(T)
    w_rep = np.linalg.lstsq(X, y, rcond=None)[0]
    w_acc = w_rep.copy()
    xtx, xty = X.T @ X, X.T @ y  # accumulate: normal equations over all data
    rep[0] += np.sum((w_rep - w_star) ** 2)
    acc[0] += np.sum((w_acc - w_star) ** 2)
    for g in range(1, generations):
      X = rng.standard_normal((T, d))
      y_rep = X @ w_rep + sigma * rng.standard_normal(T)
      w_rep = np.linalg.lstsq(X, y_rep, rcond=None)[0]
      y_acc = X @ w_acc + sigma * rng.standard_normal(T)
      xtx, xty = xtx + X.T @ X, xty + X.T @ y_acc
      w_acc = np.linalg.solve(xtx, xty)
      rep[g] += np.sum((w_rep - w_star) ** 2)
      acc[g] += np.sum((w_acc - w_star) ** 2)
  return {'replace': rep / trials, 'accumulate': acc / trials}


def linreg_expected(d: int, T: int, sigma: float, generations: int) -> dict[str, np.ndarray]:
  """Closed forms: replace (g+1) c exactly; accumulate bound c sum_{i<=g+1} 1/i^2,
  with c = sigma^2 d / (T-d-1) (Gerstgrasser et al. 2024, Theorems 1-2)."""
  if T <= d + 1:
    raise ValueError(f'linreg_expected: needs T > d + 1, got T={T}, d={d}')
  c = sigma ** 2 * d / (T - d - 1)
  i = np.arange(1, generations + 1)
  return {'replace': c * i, 'accumulate_bound': c * np.cumsum(1.0 / i ** 2),
          'first': np.full(generations, c)}
