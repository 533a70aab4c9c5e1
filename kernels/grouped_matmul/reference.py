"""Reference grouped matmul: `jax.lax.ragged_dot` (rows sorted by group).

Shape legend: N rows, I input features, O output features, E groups (experts).
"""

from __future__ import annotations

import jax


def grouped_matmul_reference(x_NxI: jax.Array, w_ExIxO: jax.Array,
                             sizes_E: jax.Array) -> jax.Array:
  """y_NxO with y[r] = x[r] @ w[e] for row r in group e's run of sizes_E[e] rows."""
  return jax.lax.ragged_dot(x_NxI, w_ExIxO, sizes_E)
