"""NanoQuant's initialization: binary factors and scales of one activation-weighted kernel.

Shape legend: K a projection's contracted features (flattened), N its output
features (flattened), r the binary rank, P x Q the matrix ADMM factors (M or
M^T, whichever has P >= Q), R a matrix's other side.

The stored format is W ~ diag(s_in) sign(U) sign(V)^T diag(s_out), U [K, r],
V [N, r]. Both initializations factor the activation-weighted matrix
M = diag(d) W (d_k: RMS of input feature k on the calibration data), so that
error in a feature that sees large inputs counts more:

* `admm_init` — the paper's ADMM (arXiv 2602.06694; reference implementation
  SamsungLabs/NanoQuant, `core/admm_nq.py::factorize_admm_nanoquant`, defaults
  from its `main.py`): M ~ A B^T with least-squares variables (A, B), consensus
  variables (Z_A, Z_B) restricted to "rank-1 magnitude times sign" matrices and
  scaled duals (L_A, L_B); random Gaussian start; per iteration
    A   <- argmin ||M - A Zn_B^T||^2 + (rho + reg) ||A - (Z_A - L_A)||^2, Zn_B = Z_B
           with unit columns (the reference's penalty rho mean diag(Zn^T Zn) = rho)
    B   <- the same with the roles swapped (against Z_A's normalized columns; both
           least-squares updates see the Z's of the previous iteration)
    Z_X <- SVID(X + L_X): (p q^T) * sign(X + L_X), p q^T the top singular triplet
           of |X + L_X| (sign-value-independent decomposition, 5 power iterations)
    L_X <- L_X + X - Z_X
  with the penalty rho rising linearly from 0 to 1 over the iterations (its
  `admm_penalty_scheduler='linear'`), reg = 3e-2, 400 iterations, the larger
  side updated first (the reference transposes so that its A is the larger one).
  The scales start from the mean magnitudes of the kept iterate's Z rows (the
  reference's scale_pre / scale_post, from its last iterate); the latent U, V (what the straight-through tuning
  moves) are X + L_X, the SVID's input, so their signs are Z's (the reference's
  A_latent / B_latent add the dual once more, after its update).
* `svd_init` — the comparison: the signs of M's rank-r truncated SVD.

`init_factors` then refines the scales by exact alternating least squares
(`fit_scales`), which never increases the weighted error. Where lattice departs
from the reference (said so the comparison is read correctly): the weight is the
input side only (the reference also weights output rows by the RMS of the loss
gradient at the projection's output, and shrinks both toward their mean by 0.4);
ADMM's iterates are scored every `eval_every` iterations in the stored format and
the best one is kept, and `init_factors('admm')` never returns a point worse than
the SVD start (the reference keeps the last iterate).
"""

from __future__ import annotations

import numpy as np

# Reference defaults (SamsungLabs/NanoQuant main.py TuneArguments): admm_outer_iters,
# admm_inner_iters (power iterations of the SVID projection), admm_reg.
ADMM_ITERS = 400
SVID_ITERS = 5
ADMM_REG = 3e-2


def signs(x: np.ndarray) -> np.ndarray:
  """sign(x) with sign(0) = +1 (the format has no zero)."""
  return np.where(x >= 0, 1.0, -1.0)


def fit_scales(w_KxN: np.ndarray, b_KxN: np.ndarray, d_K: np.ndarray, iters: int = 10,
               s_in_K: np.ndarray | None = None, s_out_N: np.ndarray | None = None):
  """s_in [K], s_out [N] minimizing || diag(d) (W - diag(s_in) B diag(s_out)) ||_F.

  Exact alternating minimization (each update is the closed-form least-squares
  optimum of one vector given the other), so starting from given scales (`s_in_K`,
  `s_out_N`, default ones) the objective never increases.
  """
  s_in = np.ones(w_KxN.shape[0]) if s_in_K is None else np.asarray(s_in_K, np.float64)
  s_out = np.ones(w_KxN.shape[1]) if s_out_N is None else np.asarray(s_out_N, np.float64)
  d2 = (d_K ** 2)[:, None]
  for _ in range(iters):
    # Row k's weight d_k^2 is constant along the row: it drops out of s_in's update.
    bo = b_KxN * s_out[None]
    s_in = (w_KxN * bo).sum(1) / np.maximum((bo * bo).sum(1), 1e-12)
    bi = b_KxN * s_in[:, None]
    s_out = (d2 * w_KxN * bi).sum(0) / np.maximum((d2 * bi * bi).sum(0), 1e-12)
  return s_in, s_out


def weighted_error(w_KxN: np.ndarray, d_K: np.ndarray, b_KxN: np.ndarray,
                   s_in_K: np.ndarray, s_out_N: np.ndarray) -> float:
  """|| diag(d) (W - diag(s_in) B diag(s_out)) ||_F / || diag(d) W ||_F: the
  activation-weighted relative reconstruction error (d_k: RMS of input feature k,
  so this is the relative output error on inputs with those per-feature scales)."""
  approx = s_in_K[:, None] * b_KxN * s_out_N[None, :]
  return float(np.linalg.norm(d_K[:, None] * (w_KxN - approx)) /
               max(np.linalg.norm(d_K[:, None] * w_KxN), 1e-30))


def svd_init(m_KxN: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
  """U [K, r], V [N, r]: the rank-r truncated SVD's factors (sqrt of the singular
  values on each side)."""
  a, s, bt = np.linalg.svd(m_KxN, full_matrices=False)
  root = np.sqrt(s[:r])
  return a[:, :r] * root, bt[:r].T * root


def svid(x_PxR: np.ndarray, iters: int = SVID_ITERS) -> np.ndarray:
  """(p q^T) * sign(x): x's closest "rank-1 magnitude times sign" matrix, p q^T the
  top singular triplet of |x| by `iters` power iterations (the reference's
  `rank1_approx`; deterministic start, where the reference draws one at random)."""
  mag = np.abs(x_PxR)
  q = np.full(x_PxR.shape[1], 1.0 / np.sqrt(x_PxR.shape[1]))
  for _ in range(iters):
    p = mag @ q
    p /= max(np.linalg.norm(p), 1e-30)
    q = mag.T @ p
    q /= max(np.linalg.norm(q), 1e-30)
  return np.outer(mag @ q, q) * signs(x_PxR)


def _ridge(x_Sxr, y_SxT, z_Txr, lam_Txr, rho: float, reg: float) -> np.ndarray:
  """F [T, r] = argmin ||Y - X F^T||^2 + c ||F - (Z - Lam)||^2 with
  c = rho mean diag(X^T X) + reg (the reference's `_admm_solve_step`, stabilizer
  included; S, T the two sides of the matrix being factored, in either order)."""
  g = x_Sxr.T @ x_Sxr
  c = rho * abs(float(np.mean(np.diag(g)))) + reg
  rhs = x_Sxr.T @ y_SxT + rho * (z_Txr - lam_Txr).T
  return np.linalg.solve(g + c * np.eye(g.shape[0]), rhs).T


def _unit_cols(z):
  return z / np.maximum(np.linalg.norm(z, axis=0), 1e-12)


def _format_error(m, za, zb):
  """The stored format's relative error of M ~ Z_A Z_B^T after scale refitting (M's
  own metric: unit weights, as M is already weighted) and its scales."""
  b = signs(za) @ signs(zb).T
  s_a, s_b = fit_scales(m, b, np.ones(m.shape[0]), iters=3,
                        s_in_K=np.abs(_unit_cols(za)).mean(1), s_out_N=np.abs(zb).mean(1))
  return weighted_error(m, np.ones(m.shape[0]), b, s_a, s_b), s_a, s_b


def admm_init(m_KxN: np.ndarray, r: int, iters: int = ADMM_ITERS, reg: float = ADMM_REG,
              seed: int = 0, eval_every: int = 10):
  """The paper's ADMM factorization of M [K, N] (see the module docstring).

  Returns (U [K, r], V [N, r], a [K], b [N], trace): latent factors whose signs are
  the binary factors, scales in M's units (M ~ diag(a) sign(U) sign(V)^T diag(b),
  refitted by 3 rounds of `fit_scales` from the mean magnitudes), and trace, the
  list of (iteration, relative error of that stored-format point) for every
  `eval_every`-th iteration and the last; the returned point is the trace's best.
  `seed` draws the random Gaussian start. Raises ValueError for r < 1 or iters < 1.
  """
  if r < 1 or iters < 1:
    raise ValueError(f'admm_init: rank and iters must be >= 1, got r={r}, iters={iters}')
  flip = m_KxN.shape[0] < m_KxN.shape[1]   # factor the P >= Q orientation
  m = m_KxN.T if flip else m_KxN
  rng = np.random.default_rng(seed)
  a_ls, b_ls = rng.normal(size=(m.shape[0], r)), rng.normal(size=(m.shape[1], r))
  za, zb = svid(a_ls), svid(b_ls)
  la, lb = a_ls - za, b_ls - zb
  best, trace = None, []
  for it in range(iters):
    rho = it / iters
    a_ls = _ridge(_unit_cols(zb), m.T, za, la, rho, reg)
    b_ls = _ridge(_unit_cols(za), m, zb, lb, rho, reg)
    ta, tb = a_ls + la, b_ls + lb    # the projections' inputs: the latents
    za, zb = svid(ta), svid(tb)
    la += a_ls - za
    lb += b_ls - zb
    if (it + 1) % eval_every == 0 or it == iters - 1:
      err, s_a, s_b = _format_error(m, za, zb)
      trace.append((it + 1, err))
      if best is None or err < best[0]:
        best = (err, ta, tb, s_a, s_b)
  _, lat_a, lat_b, s_a, s_b = best
  if flip:
    return lat_b, lat_a, s_b, s_a, trace
  return lat_a, lat_b, s_a, s_b, trace


def init_factors(w_KxN: np.ndarray, d_K: np.ndarray, r: int, method: str, seed: int = 0,
                 admm_iters: int = ADMM_ITERS):
  """(U [K, r], V [N, r], s_in [K], s_out [N]) for one kernel W [K, N], from the
  activation-weighted matrix M = diag(d) W in both methods.

  'admm': `admm_init` on M (`seed`, `admm_iters` iterations), its scales kept as the start
  (s_in = a / d, s_out = b); the SVD point below is also scored, and kept instead
  if ADMM ends worse, so ADMM never returns worse than the SVD start. 'svd': signs
  of M's truncated SVD; scales start from M's best single scale c = <M, B> / <B, B>
  (s_in = c / d, s_out = 1). Both are then refined by `fit_scales`, which never
  increases the weighted error. Latent U, V are normalized to unit RMS in both, so
  the straight-through tuning takes equal-sized steps. Raises ValueError for
  another method.
  """
  if method not in ('admm', 'svd'):
    raise ValueError(f'nanoquant: init must be admm or svd, got {method!r}')
  m = d_K[:, None] * w_KxN
  u, v = svd_init(m, r)
  b = signs(u) @ signs(v).T
  c = float((m * b).sum() / max((b * b).sum(), 1e-12))
  s_in, s_out = fit_scales(w_KxN, b, d_K, s_in_K=c / d_K, s_out_N=np.ones(w_KxN.shape[1]))
  if method == 'admm':
    u_a, v_a, a, b_out, _ = admm_init(m, r, iters=admm_iters, seed=seed)
    b_a = signs(u_a) @ signs(v_a).T
    s_in_a, s_out_a = fit_scales(w_KxN, b_a, d_K, s_in_K=a / d_K, s_out_N=b_out)
    if (weighted_error(w_KxN, d_K, b_a, s_in_a, s_out_a)
        <= weighted_error(w_KxN, d_K, b, s_in, s_out)):
      u, v, s_in, s_out = u_a, v_a, s_in_a, s_out_a
  rms = lambda x: np.sqrt(np.mean(x ** 2)) + 1e-12  # noqa: E731
  return u / rms(u), v / rms(v), s_in, s_out
