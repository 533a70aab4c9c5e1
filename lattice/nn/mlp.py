"""The dense feed-forward block. Shape legend: B batch, L length, D model width, F FFN width.

`model.ffn.kind` picks the block's FFN from `lattice.nn.ffns.FFNS`.
"""

from __future__ import annotations

import typing

import flax.linen as nn
import jax

from lattice.nn import layers

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module's table
  from lattice import config as config_lib

GATED = ('swiglu', 'geglu', 'relu2_glu')


class MLP(nn.Module):
  """Gated (SwiGLU/GeGLU, Shazeer 2020) or plain (GELU, squared ReLU) FFN."""
  cfg: config_lib.ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, modality_BxL: jax.Array | None = None) -> jax.Array:
    del modality_BxL  # every token goes through the same dense FFN
    cfg = self.cfg
    kw = dict(dtype=layers.dtype_of(cfg.dtype), param_dtype=layers.dtype_of(cfg.param_dtype))
    act = layers.ACTIVATIONS[cfg.ffn.activation]
    up = lambda name: layers.dense(cfg.linear, cfg.d_ff, ('embed',), ('mlp',), name=name,
                                   **kw)(x_BxLxD)
    h_BxLxF = act(up('wi_0'))
    if cfg.ffn.activation in GATED:
      h_BxLxF = h_BxLxF * up('wi_1')
    h_BxLxF = layers.constrain(h_BxLxF, ('act_batch', 'act_len', 'act_mlp'))
    if cfg.subln:
      h_BxLxF = layers.RMSNorm(cfg.norm_eps, kw['dtype'], kw['param_dtype'], 'mlp',
                               name='subln')(h_BxLxF)
    return layers.dense(cfg.linear, cfg.d_model, ('mlp',), ('embed',), name='wo',
                        **kw)(h_BxLxF)
