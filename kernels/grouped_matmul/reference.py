"""Reference grouped matmul: `jax.lax.ragged_dot` (rows sorted by group).

Shape legend: N rows, I input features, O output features, E groups (experts), D
model width, F expert FFN width.
"""

from __future__ import annotations

import jax


def grouped_matmul_reference(x_NxI: jax.Array, w_ExIxO: jax.Array,
                             sizes_E: jax.Array) -> jax.Array:
  """y_NxO with y[r] = x[r] @ w[e] for row r in group e's run of sizes_E[e] rows."""
  return jax.lax.ragged_dot(x_NxI, w_ExIxO, sizes_E)


def grouped_ffn_reference(x_NxD: jax.Array, w0_ExDxF: jax.Array, w1_ExDxF, wo_ExFxD,
                          sizes_E: jax.Array, act) -> jax.Array:
  """y_NxD = (act(x w0[e]) * (x w1[e])) wo[e] per group e (w1=None: act(x w0[e]) wo[e])."""
  h_NxF = act(jax.lax.ragged_dot(x_NxD, w0_ExDxF, sizes_E))
  if w1_ExDxF is not None:
    h_NxF = h_NxF * jax.lax.ragged_dot(x_NxD, w1_ExDxF, sizes_E)
  return jax.lax.ragged_dot(h_NxF, wo_ExFxD, sizes_E)
