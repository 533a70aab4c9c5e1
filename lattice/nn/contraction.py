"""The projection contraction y = x . w, with a backward written as two plain matmuls.

Shape legend: N the leading (token) dims of x, flattened; I the contracted input dims
flattened; O the output dims flattened.

On CPU, `contract(x_NxI, w_IxO, n_in)` is exactly `jax.lax.dot_general` over x's last
`n_in` dims and w's first `n_in` dims (the forward is that very call). Only the
backward differs from JAX's autodiff: the weight gradient is `x_IxN @ g_NxO` with
x transposed explicitly (I x N: the smaller operand, since I <= O for the up
projections) and the input gradient `g_NxO @ w_OxI`, both on 2-D views. Autodiff's
transposed dot_general let XLA:CPU's layout assignment materialise the
*gradient* transposed instead ([F, B*L] copies of every FFN activation gradient,
fused into the elementwise backward with strided writes): in a profile of the
d_model 256 benchmark step (benchmarks.train_throughput; fractions from one loaded
run) those transposes took ~13% of the step's time, for no FLOPs. The values are
the same products summed in the same order of dimensions;
tests/contraction_test.py checks forward and gradients against dot_general's
autodiff.

Decoding's products (float32, at most `kernels.skinny_cpu.ops.MAX_ROWS` = 8 token
rows, on CPU, kernel built) go to the native skinny matmul instead of dot_general:
XLA:CPU packs the weights for a 2..8-row dot, so a self-speculative verification
forward cost ~2x a one-row step per weight read, and the kernel's rounding does not
depend on the row count, so plain and speculative decoding compute identical logits
(kernels/skinny_cpu/ops.py; tests/skinny_cpu_test.py). LATTICE_SKINNY_MATMUL=0
turns it off. Where decoding made a packed copy of the weight, products of up to
`MAX_PACKED_ROWS` = 64 rows (a prompt's prefill) go there too: at those sizes the
kernel outruns XLA's dot (ops.py).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from kernels.skinny_cpu import ops as skinny_ops

# The variable collection holding decoding's packed copies of projection kernels
# (`lattice.decode.packed_weights.pack_weights`; read by `lattice.quant.linear.Linear`).
PACKED_COLLECTION = 'decode_packed'


def _dot(x: jax.Array, w: jax.Array, n_in: int, w_packed: jax.Array | None = None
         ) -> jax.Array:
  n_rows = math.prod(x.shape[:x.ndim - n_in])
  if skinny_ops.use_for(x, w, n_rows, packed=w_packed is not None):
    # Decoding's few-row products: the native kernel reads each weight once for up to
    # 4 rows, and a row's result does not depend on how many rows share the call
    # (kernels/skinny_cpu), so plain and speculative decoding get identical logits.
    i = math.prod(w.shape[:n_in])
    x_NxI = x.reshape(n_rows, i)
    y = (skinny_ops.skinny_matmul_cpu(x_NxI, w.reshape(i, -1)) if w_packed is None
         else skinny_ops.skinny_matmul_packed_cpu(x_NxI, w_packed))
    return y.reshape(*x.shape[:x.ndim - n_in], *w.shape[n_in:])
  return jax.lax.dot_general(
      x, w, ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ())))


def contract_packed(x: jax.Array, w: jax.Array, w_packed: jax.Array, n_in: int
                    ) -> jax.Array:
  """`contract(x, w, n_in)`'s forward for decoding, given w's packed copy `w_packed`
  ([O / 64, I, 64], `kernels.skinny_cpu.ops.pack` of w as [I, O]): products the
  skinny kernel takes (`skinny_ops.use_for`: up to `MAX_PACKED_ROWS` rows, so a short
  prompt's prefill too) read the packed copy, which gives the same bits faster;
  anything else (a longer prefill, another backend) is dot_general.

  No gradient rule: decoding only.
  """
  return _dot(x, w, n_in, w_packed)


def pack(w: jax.Array, n_in: int) -> jax.Array | None:
  """The packed decode copy of kernel w [*I, *O] contracted over its first `n_in`
  dims ([O / 64, I, 64]), or None if the skinny kernel's packed layout does not apply
  (not float32, O not a multiple of 64)."""
  if w.dtype != jnp.float32:
    return None
  i = math.prod(w.shape[:n_in])
  return skinny_ops.pack(w.reshape(i, -1))


def contract(x: jax.Array, w: jax.Array, n_in: int) -> jax.Array:
  """x [*N, *I] . w [*I, *O] -> [*N, *O], contracting x's last `n_in` dims with w's
  first `n_in` (shapes must match there; dot_general raises TypeError otherwise).

  On CPU the backward is `matmul_backward`'s two 2-D matmuls; on GPU/TPU it is
  plain dot_general with JAX's autodiff, whose layouts those compilers handle and
  whose remat policies (`checkpoint_dots`) see the dot directly.
  """
  if jax.default_backend() == 'cpu':
    return _contract_cpu(x, w, n_in)
  return _dot(x, w, n_in)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _contract_cpu(x: jax.Array, w: jax.Array, n_in: int) -> jax.Array:
  return _dot(x, w, n_in)


def _forward(x, w, n_in):
  return _dot(x, w, n_in), (x, w)


def matmul_backward(n_in, residuals, g):
  """(dx, dw) of `_dot(x, w, n_in)` for the cotangent g [*N, *O], as 2-D matmuls."""
  x, w = residuals
  n_tokens = math.prod(x.shape[:x.ndim - n_in])
  i, o = math.prod(w.shape[:n_in]), math.prod(w.shape[n_in:])
  x_NxI, w_IxO, g_NxO = x.reshape(n_tokens, i), w.reshape(i, o), g.reshape(n_tokens, o)
  dw_IxO = jnp.dot(x_NxI.T, g_NxO)
  dx_NxI = jnp.dot(g_NxO, w_IxO.T)
  return dx_NxI.reshape(x.shape).astype(x.dtype), dw_IxO.reshape(w.shape).astype(w.dtype)


_contract_cpu.defvjp(_forward, matmul_backward)
