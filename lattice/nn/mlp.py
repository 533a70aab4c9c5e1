"""Feed-forward blocks. Shape legend: B batch, L length, D model width, F FFN width.

`FFN_CLASSES` maps `model.ffn.kind` to a module class; the MoE package registers its
layer there, so the transformer block never branches on the kind.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from lattice import config as config_lib
from lattice.nn import layers

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


FFN_CLASSES: dict[str, type[nn.Module]] = {'dense': MLP}


def register_ffn(kind: str, cls: type[nn.Module]) -> None:
  """Makes `model.ffn.kind=<kind>` build every block's FFN with `cls(cfg=...)`."""
  FFN_CLASSES[kind] = cls
