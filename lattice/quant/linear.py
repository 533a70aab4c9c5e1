"""Quantized projections: `model.linear.kind='bitnet'` (W1.58A8) and 'quest' (WbAb).

Shape legend: N leading (token) dims, I the contracted input dims flattened,
O the output dims flattened.

Each kind is a `Linear` whose static `prepare(cfg, x, w, n_in)` returns the
(input, kernel) the contraction sees; it is pure, so MoE experts vmap it per expert
(lattice/moe/layer.py). The float kernel stays the trained parameter; quantization
happens in the forward pass with straight-through / trust gradients.
"""

from __future__ import annotations

import math

import jax

from lattice import config as config_lib
from lattice.nn import layers
from lattice.quant import quest, ste


class BitLinear(layers.Linear):
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


def _check(cfg: config_lib.LinearConfig) -> None:
  for field in ('w_bits', 'a_bits'):
    bits = getattr(cfg, field)
    if bits not in quest.GAUSSIAN_ALPHA:
      raise config_lib.ConfigError(
          f'model.linear.{field}: QuEST supports 1..8 bits, got {bits!r}')
  if cfg.trust < 0:
    raise config_lib.ConfigError(
        f'model.linear.trust: must be non-negative (0: default), got {cfg.trust}')


class QuestLinear(layers.Linear):
  """QuEST (arXiv 2502.05003): both operands rotated by the same block Hadamard along
  the contracted dim (so the product is preserved), then trust-quantized per row:
  activations per token at `a_bits`, weights per output unit at `w_bits`."""

  @staticmethod
  def prepare(cfg: config_lib.LinearConfig, x: jax.Array, w: jax.Array,
              n_in: int) -> tuple[jax.Array, jax.Array]:
    _check(cfg)
    n_i = math.prod(w.shape[:n_in])
    x_NxI = x.reshape(*x.shape[:x.ndim - n_in], n_i)
    w_OxI = w.reshape(n_i, -1).T
    x_q = quest.quest_quantize(x_NxI, cfg.a_bits, hadamard=cfg.hadamard, trust=cfg.trust)
    w_q = quest.quest_quantize(w_OxI, cfg.w_bits, hadamard=cfg.hadamard, trust=cfg.trust)
    return x_q.reshape(x.shape), w_q.T.reshape(w.shape)


layers.register_linear('bitnet', BitLinear)
layers.register_linear('quest', QuestLinear)
