"""Basic layers: the one Dense factory every projection goes through, RMSNorm, Embed.

Shape legend: B batch, L length, D model width, V vocabulary, F FFN width,
H query heads, K kv heads, Dh head width.

Every projection in the model (attention, FFN, MoE experts, MTP heads, adapters) is
built by `dense(...)`, which picks the class registered for `LinearConfig.kind`. A
technique that quantizes weights registers its own class with `register_linear`; no
block ever branches on the kind.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice import config as config_lib

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def dtype_of(name: str):
  return DTYPES[name]


class Linear(nn.Module):
  """A float projection contracting the last `len(in_axes)` input dims.

  The kernel has shape `in_shape + features` and the logical axis names
  `in_axes + out_axes`, so e.g. the query projection is a D -> (H, Dh) map with
  kernel axes ('embed', 'heads', 'head_dim').
  """
  features: Sequence[int]
  in_axes: Sequence[str]
  out_axes: Sequence[str]
  cfg: config_lib.LinearConfig = config_lib.LinearConfig()
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  kernel_init_scale: float = 1.0

  def kernel(self, in_shape: tuple[int, ...]) -> jax.Array:
    n_in = len(in_shape)
    init = nn.initializers.variance_scaling(
        self.kernel_init_scale, 'fan_in', 'truncated_normal',
        in_axis=tuple(range(n_in)),
        out_axis=tuple(range(n_in, n_in + len(self.features))))
    return self.param(
        'kernel', nn.with_logical_partitioning(init, (*self.in_axes, *self.out_axes)),
        (*in_shape, *self.features), self.param_dtype)

  def bias(self) -> jax.Array | None:
    if not self.cfg.use_bias:
      return None
    return self.param('bias', nn.with_logical_partitioning(
        nn.initializers.zeros, tuple(self.out_axes)), tuple(self.features),
                      self.param_dtype)

  @staticmethod
  def prepare(cfg: config_lib.LinearConfig, x: jax.Array, w: jax.Array,
              n_in: int) -> tuple[jax.Array, jax.Array]:
    """(input, kernel) as the contraction should see them; identity for float.

    Quantized kinds override this (e.g. ternary weights, 8-bit activations with a
    straight-through estimator). It is a pure function of its arguments so MoE
    experts can apply it per expert (vmapped over the expert axis).
    """
    del cfg, n_in
    return x, w

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n_in = len(self.in_axes)
    x, w = self.prepare(self.cfg, x, self.kernel(x.shape[x.ndim - n_in:]), n_in)
    x, w = x.astype(self.dtype), w.astype(self.dtype)
    y = jax.lax.dot_general(
        x, w, (((tuple(range(x.ndim - n_in, x.ndim))), tuple(range(n_in))), ((), ())))
    b = self.bias()
    return y if b is None else y + b.astype(self.dtype)


_LINEARS: dict[str, type[Linear]] = {'float': Linear}


def register_linear(kind: str, cls: type[Linear]) -> None:
  """Makes `model.linear.kind=<kind>` build every projection with `cls`."""
  _LINEARS[kind] = cls


def linear_class(cfg: config_lib.LinearConfig) -> type[Linear]:
  return _LINEARS[cfg.kind]


def dense(cfg: config_lib.LinearConfig, features: int | Sequence[int],
          in_axes: Sequence[str], out_axes: Sequence[str], *, dtype=jnp.float32,
          param_dtype=jnp.float32, name: str | None = None,
          kernel_init_scale: float = 1.0) -> Linear:
  """The Dense factory: the projection class chosen by `cfg.kind`."""
  features = (features,) if isinstance(features, int) else tuple(features)
  return linear_class(cfg)(
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
    return jnp.take(self.embedding, ids_BxL, axis=0).astype(self.dtype)

  def attend(self, x_BxLxD: jax.Array) -> jax.Array:
    # Scaled by 1/sqrt(D) since the table is initialised at unit variance.
    w_VxD = self.embedding.astype(self.dtype)
    return jnp.einsum('bld,vd->blv', x_BxLxD, w_VxD) / jnp.sqrt(
        jnp.asarray(self.features, self.dtype))


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
