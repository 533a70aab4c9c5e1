"""Parameter counts and decoder train FLOPs per token (PaLM's rule).

FLOPs per token follow PaLM (arXiv 2204.02311, App. B): 6 N for the matmuls of the
N matmul parameters (forward 2N, backward 4N) plus 12 * layers * seq_len * attn_width
for attention scores and values. N counts every matrix a token goes through once,
so the tied embedding counts as the output projection (the lookup is free).
Techniques that add compute outside the decoder's blocks (extra heads, an image
path) add their share in `lattice.model.flops`.

Active parameters are found by logical axis, never by parameter name: a weight
whose leading axis (after scan's 'layers') is `EXPERT_AXIS` is a stack of one matrix
per expert, of which a token goes through `model.ffn.top_k` of `model.ffn.n_experts`
(DeepSeekMoE's "activated parameters", arXiv 2401.06066). A router (D x E, 'exp' as
its output axis) counts fully. The axes come from the boxed params (flax
`LogicallyPartitioned`) or an `axes` tree (`logical_axes(boxed)`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
from flax import traverse_util

from lattice import config as config_lib


def count_params(params: Any) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


# Norm gains and biases: vectors, even when nn.scan stacks them into [layers, D].
VECTOR_PARAMS = ('scale', 'bias')


EXPERT_AXIS = 'exp'  # the logical axis of per-expert weight stacks (sharding.RULES)


def logical_axes(boxed: Any) -> Any:
  """The tree of logical axis names (tuples; () where none) of a boxed param tree."""
  return jax.tree.map(lambda x: tuple(x.names) if isinstance(x, nn.Partitioned) else (),
                      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def _weights_and_axes(params: Any, axes: Any) -> list[tuple[tuple, Any, tuple]]:
  """(path, leaf, logical axes) of every parameter; `params` may be boxed."""
  if axes is None:
    if not any(isinstance(x, nn.Partitioned) for x in jax.tree.leaves(
        params, is_leaf=lambda x: isinstance(x, nn.Partitioned))):
      raise ValueError('lattice.nn.flops: unboxed params need axes= (logical_axes of '
                       'the boxed params, e.g. Setup.param_axes) to find expert weights')
    axes = logical_axes(params)
  params = nn.unbox(params)
  flat_axes = traverse_util.flatten_dict(axes) if axes else {}
  return [(path, leaf, tuple(flat_axes.get(path) or ()))
          for path, leaf in traverse_util.flatten_dict(params).items()]


def _active_fraction(names: tuple, model_cfg: config_lib.ModelConfig) -> float:
  """k/E for a stack of per-expert matrices (leading axis EXPERT_AXIS), else 1."""
  names = tuple(n for n in names if n != 'layers')
  if names and names[0] == EXPERT_AXIS:
    return model_cfg.ffn.top_k / model_cfg.ffn.n_experts
  return 1.0


def matmul_params(params: Any, model_cfg: config_lib.ModelConfig,
                  active: bool = True, axes: Any = None) -> int:
  """Parameters in matrices a token goes through (excludes norms and the lookup);
  with `active`, per-expert weights count only the k of E a token is routed to.
  `params` boxed, or unboxed with their `axes` (`logical_axes`); ValueError if neither."""
  total = 0.0
  for path, leaf, names in _weights_and_axes(params, axes):
    if 'embedding' in path:
      total += leaf.size if model_cfg.tie_embeddings else 0
    elif path[-1] not in VECTOR_PARAMS and leaf.ndim >= 2:
      total += leaf.size * (_active_fraction(names, model_cfg) if active else 1.0)
  return int(total)


def active_params(params: Any, model_cfg: config_lib.ModelConfig, axes: Any = None) -> int:
  """All parameters, per-expert weights counted at k/E (DeepSeek's 'activated').
  `params` boxed, or unboxed with their `axes` (`logical_axes`); ValueError if neither."""
  return int(sum(leaf.size * _active_fraction(names, model_cfg)
                 for _, leaf, names in _weights_and_axes(params, axes)))


def train_flops_per_token(params: Any, model_cfg: config_lib.ModelConfig,
                          seq_len: int, axes: Any = None) -> float:
  """Decoder train FLOPs per token: 6 x active matmul params + 12 L T (H Dh)."""
  attn_width = model_cfg.n_heads * model_cfg.head_dim
  return float(6 * matmul_params(params, model_cfg, axes=axes)
               + 12 * model_cfg.n_layers * seq_len * attn_width)
