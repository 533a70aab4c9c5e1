"""Projections: float `Linear`, and the quantized 'bitnet' (W1.58A8) and 'quest' (WbAb).

Shape legend: N leading (token) dims, I the contracted input dims flattened,
O the output dims flattened.

Each kind is a `Linear` whose static `prepare(cfg, x, w, n_in)` returns the
(input, kernel) the contraction sees; it is pure, so MoE experts vmap it per expert
(lattice/moe/layer.py). The float kernel stays the trained parameter; quantization
happens in the forward pass with straight-through / trust gradients.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice.errors import ConfigError
from lattice.nn import contraction
from lattice.quant import quest, ste

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module's table
  from lattice import config as config_lib


class Linear(nn.Module):
  """A float projection contracting the last `len(in_axes)` input dims.

  The kernel has shape `in_shape + features` and the logical axis names
  `in_axes + out_axes`, so e.g. the query projection is a D -> (H, Dh) map with
  kernel axes ('embed', 'heads', 'head_dim').
  """
  features: Sequence[int]
  in_axes: Sequence[str]
  out_axes: Sequence[str]
  cfg: config_lib.LinearConfig | None = None  # None: float, no bias (e.g. an output head)
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
    if self.cfg is None or not self.cfg.use_bias:
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
    packed = contraction.PACKED_COLLECTION
    if self.has_variable(packed, 'kernel'):  # decoding with packed weights
      y = contraction.contract_packed(x, w, self.get_variable(packed, 'kernel'), n_in)
    else:
      if (self.is_mutable_collection(packed) and not self.is_initializing()
          and type(self).prepare is Linear.prepare
          and (w_packed := contraction.pack(w, n_in)) is not None):
        self.put_variable(packed, 'kernel', w_packed)  # lattice.decode.packed_weights
      y = contraction.contract(x, w, n_in)  # dot_general; its backward avoids transposes
    b = self.bias()
    return y if b is None else y + b.astype(self.dtype)


class BitLinear(Linear):
  """BitNet b1.58 (arXiv 2402.17764): per-tensor absmean ternary weights, per-token
  absmax int8 activations, straight-through gradients.

  BitLinear's own input RMSNorm is left out: the q/k/v and FFN-in projections
  already read the block's pre-norm output (RMS-normalized, with a learned gain), so a
  second norm there would be redundant. The attention-output and FFN-down projections
  see unnormalized inputs; normalizing those is 2B4T's SubLN, a model change rather
  than a Linear one. (The absmax int8 quantizer itself is per-token scale-equivariant.)
  """

  @staticmethod
  def prepare(cfg: config_lib.LinearConfig, x: jax.Array, w: jax.Array,
              n_in: int) -> tuple[jax.Array, jax.Array]:
    del cfg
    token_axes = tuple(range(x.ndim - n_in, x.ndim))
    return ste.int8_activation(x, token_axes), ste.ternary_weight(w)


@dataclasses.dataclass(frozen=True)
class Quest:
  """QuEST's own fields of `model.linear` (read only when `model.linear.kind='quest'`).

  Bits are per weight (per output unit) and per activation (per token), 1..8: the
  range of `quest.GAUSSIAN_ALPHA`, the paper's MSE-optimal Gaussian clipping scales.
  """
  w_bits: int = 4              # QuEST weight bits, 1..8
  a_bits: int = 4              # QuEST activation bits, 1..8
  hadamard: bool = True        # rotate the contracted dim before quantizing
  trust: float = 0.0           # trust factor; 0: the default alpha/(2^bits - 1)

  def check(self, cfg: config_lib.Config) -> None:
    """Raises ConfigError naming `model.linear.<field>` for a value QuEST cannot use."""
    del cfg
    for field in ('w_bits', 'a_bits'):
      bits = getattr(self, field)
      if bits not in quest.GAUSSIAN_ALPHA:
        raise ConfigError(f'model.linear.{field}: QuEST supports 1..8 bits, got {bits!r}')
    if self.trust < 0:
      raise ConfigError(
          f'model.linear.trust: must be non-negative (0: default), got {self.trust}')


class QuestLinear(Linear):
  """QuEST (arXiv 2502.05003): both operands rotated by the same block Hadamard along
  the contracted dim (so the product is preserved), then trust-quantized per row:
  activations per token at `a_bits`, weights per output unit at `w_bits`."""
  options = Quest  # its fields of model.linear, checked once when the config is built

  @staticmethod
  def prepare(cfg: config_lib.LinearConfig, x: jax.Array, w: jax.Array,
              n_in: int) -> tuple[jax.Array, jax.Array]:
    n_i = math.prod(w.shape[:n_in])
    x_NxI = x.reshape(*x.shape[:x.ndim - n_in], n_i)
    w_OxI = w.reshape(n_i, -1).T
    x_q = quest.quest_quantize(x_NxI, cfg.a_bits, hadamard=cfg.hadamard, trust=cfg.trust)
    w_q = quest.quest_quantize(w_OxI, cfg.w_bits, hadamard=cfg.hadamard, trust=cfg.trust)
    return x_q.reshape(x.shape), w_q.T.reshape(w.shape)

