"""Basic layers: the one Dense factory every projection goes through, RMSNorm, Embed.

Shape legend: B batch, L length, D model width, V vocabulary, F FFN width,
H query heads, K kv heads, Dh head width.

Every projection in the model (attention, FFN, MoE experts, MTP heads, adapters) is
built by `dense(...)`, which picks the class of `LinearConfig.kind` from the literal
table `lattice.quant.linears.LINEARS`; no block ever branches on the kind.
"""

from __future__ import annotations

import typing
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice.quant import linears
from lattice.quant.linear import Linear  # noqa: F401  (the float projection; re-exported)

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module's table
  from lattice import config as config_lib

# Token rows at or below which a CPU decode step (a speculative verification forward)
# attends and unembeds one row at a time (decode_attention, Embed.attend).
ROWWISE_MAX_ROWS = 8

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def dtype_of(name: str):
  """The jnp dtype of a config dtype name; 'auto' (model.dtype's default) is
  bfloat16 on GPU/TPU and float32 on CPU, by `jax.default_backend()`."""
  if name == 'auto':
    return jnp.float32 if jax.default_backend() == 'cpu' else jnp.bfloat16
  return DTYPES[name]


def dense(cfg: config_lib.LinearConfig, features: int | Sequence[int],
          in_axes: Sequence[str], out_axes: Sequence[str], *, dtype=jnp.float32,
          param_dtype=jnp.float32, name: str | None = None,
          kernel_init_scale: float = 1.0) -> Linear:
  """The Dense factory: the projection class `quant.linears.LINEARS[cfg.kind]`."""
  features = (features,) if isinstance(features, int) else tuple(features)
  return linears.LINEARS[cfg.kind](
      features=features, in_axes=tuple(in_axes), out_axes=tuple(out_axes), cfg=cfg,
      dtype=dtype, param_dtype=param_dtype, kernel_init_scale=kernel_init_scale,
      name=name)


class RMSNorm(nn.Module):
  eps: float = 1e-6
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  axis_name: str | None = 'embed'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param('scale', nn.with_logical_partitioning(
        nn.initializers.ones, (self.axis_name,)), (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * scale.astype(jnp.float32)).astype(self.dtype)


class Embed(nn.Module):
  """Token embedding with an `attend` method for tied output logits."""
  vocab_size: int
  features: int
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embedding = self.param(
        'embedding', nn.with_logical_partitioning(
            nn.initializers.normal(stddev=1.0), ('vocab', 'embed')),
        (self.vocab_size, self.features), self.param_dtype)

  def __call__(self, ids_BxL: jax.Array) -> jax.Array:
    # Gather from a table whose `embed` (fsdp) shards are all-gathered first, as FSDP
    # does for every weight, keeping its `vocab` (tensor) shards: each device gathers
    # the ids in its vocab range and XLA sums over tensor. Gathering straight from the
    # (tensor, fsdp)-sharded table made the SPMD partitioner fall back to an
    # "Involuntary full rematerialization" of the gather on a data x fsdp x tensor mesh.
    w_VxD = constrain(self.embedding, ('vocab', None))
    x_BxLxD = jnp.take(w_VxD, ids_BxL, axis=0)
    return constrain(x_BxLxD, ('act_batch', 'act_len', 'act_embed')).astype(self.dtype)

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    # Scaled by 1/sqrt(D) since the table is initialised at unit variance.
    w_VxD = self.embedding.astype(self.dtype)
    scale = jnp.sqrt(jnp.asarray(self.features, self.dtype))
    B, L = x_BxLxD.shape[:2]
    if 1 < B * L <= ROWWISE_MAX_ROWS and jax.default_backend() == 'cpu':
      # Decoding's few rows (a speculative verification forward) one at a time:
      # XLA:CPU runs a one-row product with the transposed table as a matrix-vector
      # dot but packs the table for a 2..8-row one (~5x the time at V 384, D 256,
      # benchmarks/speculative_decode), and each row then computes exactly what a
      # plain one-token step computes.
      rows = [jnp.einsum('d,vd->v', x_BxLxD[b, l], w_VxD) for b in range(B)
              for l in range(L)]
      return jnp.stack(rows).reshape(B, L, -1) / scale
    return jnp.einsum('bld,vd->blv', x_BxLxD, w_VxD) / scale


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Activation sharding constraint by logical names (no-op outside a mesh rules ctx)."""
  return nn.with_logical_constraint(x, tuple(axes))


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    'swiglu': jax.nn.silu,
    'geglu': jax.nn.gelu,
    'gelu': jax.nn.gelu,
    'relu2': lambda x: jnp.square(jax.nn.relu(x)),
    'relu2_glu': lambda x: jnp.square(jax.nn.relu(x)),  # gated: relu(xW)^2 * xV
}
