"""QuEST quantization (arXiv 2502.05003): Hadamard rotation, RMS-scaled Gaussian-optimal
clipping, a uniform grid, and the trust gradient estimator.

Shape legend: N any leading dims (rows), D the quantized axis (contracted dim),
Bk Hadamard block, Nb number of blocks (D = Nb * Bk).

`quest_quantize(x, bits)` rotates the last axis with a block-diagonal orthonormal Hadamard
transform and quantizes each row; the result stays in the rotated basis. A product
`x @ w` is preserved when both sides are rotated along the contracted dim
(H is symmetric and orthonormal, so (x H)(H w) = x w); see lattice/quant/linear.py.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

MAX_BLOCK = 128  # QuEST rotates in blocks of 128 (Sec. 3, arXiv 2502.05003).

# Gaussian MSE-optimal clip alpha (in units of the row RMS sigma) for a uniform grid of
# 2^b levels. 1-4 and 8 bits: QuEST's table (arXiv 2502.05003, IST-DASLab/QuEST);
# 5-7 bits: computed by `gaussian_mse_alpha` below, which reproduces the paper's 1-4
# bit values to 1e-4 (tests). At 8 bits it gives 3.9222; the paper's 3.8849 is kept
# (its MSE is within 0.2% of the optimum's, the curve being flat there).
GAUSSIAN_ALPHA = {1: 0.7979, 2: 1.4935, 3: 2.0511, 4: 2.5139, 5: 2.9162, 6: 3.2780,
                  7: 3.6111, 8: 3.8849}
SIGMA_EPS = 1e-8  # as in the QuEST reference quantizer (scale = alpha * std + 1e-8)
# Relative slack on the trust radius: float32 rounding of the step is a few ulps
# (~6e-8 each); without it, whether a value exactly half a step from its level (every
# exact zero: it sits on a cell midpoint) is trusted is a coin flip of the rounding.
TRUST_SLACK = 1e-6


def hadamard_block(d: int) -> int:
  """The largest power of two dividing d, capped at 128."""
  return min(d & -d, MAX_BLOCK)


def fwht(x: jax.Array, block: int | None = None) -> jax.Array:
  """Orthonormal fast Walsh-Hadamard transform of the last axis, block-diagonal.

  Sylvester order (equals scipy.linalg.hadamard(block) / sqrt(block) on each block);
  O(D log Bk) adds through reshapes, no dense matrix. Symmetric and its own inverse.
  """
  d = x.shape[-1]
  block = hadamard_block(d) if block is None else block
  if block & (block - 1) or d % block:
    raise ValueError(f'fwht: block {block} must be a power of two dividing {d}')
  lead = x.shape[:-1]
  h = 1
  while h < block:
    # Pairs (i, i + h) inside each run of 2h: [a, c] -> [a + c, a - c].
    x_NxMx2xH = x.reshape(*lead, d // (2 * h), 2, h)
    a, c = x_NxMx2xH[..., 0, :], x_NxMx2xH[..., 1, :]
    x = jnp.stack([a + c, a - c], axis=-2).reshape(*lead, d)
    h *= 2
  return x * jnp.asarray(1.0 / math.sqrt(block), x.dtype)


def default_trust(bits: int) -> float:
  """alpha / (L - 1), L = 2^bits: half a grid step in units of sigma (PAPERS.md)."""
  return GAUSSIAN_ALPHA[bits] / (2 ** bits - 1)


def _grid(x: jax.Array, bits: int):
  """(j int-valued float32 [N, D], step_Nx1, sigma_Nx1): x_q = j * step - step / 2.

  The QuEST reference quantizer's grid (IST-DASLab/QuEST, TrustQuantizer):
  sigma = RMS of the row, scale = alpha * sigma + 1e-8, step = 2 scale / (L - 1),
  j = round(clip(x, +-scale) / step + 1/2), rounding half to even. An exact zero is
  a tie, round(1/2) = 0, so it maps to the negative half-step -step/2, always (the
  same grid written as round((x + scale) / step) breaks that tie upward at 2 bits).
  """
  x32 = x.astype(jnp.float32)
  sigma = jnp.sqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True))
  scale = GAUSSIAN_ALPHA[bits] * sigma + SIGMA_EPS
  step = 2.0 * scale / (2 ** bits - 1)
  j = jnp.round(jnp.clip(x32, -scale, scale) / step + 0.5)
  return j, step, sigma


def _quantize(x: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
  """(x_q, sigma_Nx1), float32: rows clipped at alpha*sigma onto 2^bits centred levels."""
  j, step, sigma = _grid(x, bits)
  return j * step - step / 2, sigma


def trust_mask(x: jax.Array, bits: int, trust: float) -> jax.Array:
  """bool, x's shape: entries whose gradient QuEST keeps, |x_q - x| <= trust * sigma.

  As the reference, except that the radius is measured on the quantizer's own scale
  (trust * (alpha sigma + 1e-8) / alpha) with `TRUST_SLACK`, so at the default trust
  (half a step) every exact zero is trusted whatever the float32 rounding; and a row
  with sigma = 0 (all zeros) is trusted nowhere, as in the reference (radius 0).
  """
  x32 = x.astype(jnp.float32)
  j, step, sigma = _grid(x32, bits)
  scale = step * (2 ** bits - 1) / 2
  radius = trust * scale / GAUSSIAN_ALPHA[bits] * (1.0 + TRUST_SLACK)
  return (jnp.abs(j * step - step / 2 - x32) <= radius) & (sigma > 0)


def quest_codes(x: jax.Array, bits: int) -> tuple[jax.Array, jax.Array]:
  """(level k int32 in [0, 2^bits), sigma_Nx1); x_q = (2k/(L-1) - 1) * scale,
  scale = alpha * sigma + 1e-8 (`_grid`)."""
  j, _, sigma = _grid(x, bits)
  k = j + (2 ** (bits - 1) - 1)  # j runs over [1 - L/2, L/2]
  return k.astype(jnp.int32), sigma


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def trust_quantize(x: jax.Array, bits: int, trust: float) -> jax.Array:
  """QuEST quantizer of the last axis; gradient kept where |x_q - x| <= trust*sigma."""
  return _quantize(x, bits)[0].astype(x.dtype)


def _trust_fwd(x, bits, trust):
  return _quantize(x, bits)[0].astype(x.dtype), trust_mask(x, bits, trust)


def _trust_bwd(bits, trust, mask, g):
  del bits, trust
  return (jnp.where(mask, g, jnp.zeros_like(g)),)


trust_quantize.defvjp(_trust_fwd, _trust_bwd)


def check_bits(bits: int, field: str = 'bits') -> None:
  if bits not in GAUSSIAN_ALPHA:
    raise ValueError(f'{field}: QuEST supports 1..8 bits, got {bits!r}')


def quest_quantize(x: jax.Array, bits: int, *, hadamard: bool = True,
          trust: float | None = None) -> jax.Array:
  """Rotate (optionally) then trust-quantize the last axis; result in the rotated basis.

  `trust=None` or 0 uses the QuEST default alpha/(2^bits - 1).
  """
  check_bits(bits)
  trust = trust or default_trust(bits)
  return trust_quantize(fwht(x) if hadamard else x, bits, float(trust))


def gaussian_mse_alpha(bits: int, lo: float = 0.05, hi: float = 8.0) -> float:
  """The clip alpha minimizing E[(x - Q(x))^2], x ~ N(0, 1), Q uniform with 2^bits levels.

  Closed-form MSE per grid cell (Gaussian moments through erf), minimized by golden
  section search (the MSE is unimodal in alpha). Host-side reference for the table.
  """
  levels = 2 ** bits
  phi = lambda t: math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
  cdf = lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2)))

  def mse(alpha):
    step = 2 * alpha / (levels - 1)
    total = 0.0
    for k in range(levels):
      q = -alpha + k * step
      a = -math.inf if k == 0 else q - step / 2
      b = math.inf if k == levels - 1 else q + step / 2
      # Integral over [a, b] of (t - q)^2 phi(t) dt = E[t^2] - 2q E[t] + q^2 P.
      pa, pb = (0.0 if math.isinf(a) else phi(a)), (0.0 if math.isinf(b) else phi(b))
      ta, tb = (0.0 if math.isinf(a) else a * pa), (0.0 if math.isinf(b) else b * pb)
      p = cdf(b) - cdf(a)
      total += (p - (tb - ta)) - 2 * q * (pa - pb) + q * q * p
    return total

  g = (math.sqrt(5) - 1) / 2
  for _ in range(100):
    m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
    if mse(m1) < mse(m2):
      hi = m2
    else:
      lo = m1
  return (lo + hi) / 2
