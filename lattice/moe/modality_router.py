"""Hard modality routing: the MoE router `model.ffn.router='modality'`.

Shape legend: T tokens, E experts.

Image tokens (modality id 1) may only reach the first `image_experts` experts and
text tokens (id 0) only the others; within its modality's experts a token is routed
by softmax affinities like the 'softmax' router (top-k, gates, balance losses
unchanged). This is the "hard" routing arm of Shukor et al. 2025, "Scaling Laws for
Native Multimodal Models" (arXiv 2504.07951), compared there with learned routing.
Modality ids come from the batch (`lattice.data.interleaved`, data.source=shapes)
through the trunk; a forward without them (text-only decoding) is all text, so
decoded text goes to the text experts it was trained on.

The router is an entry of `lattice.moe.router.ROUTERS`: this file plus that one line.
"""

from __future__ import annotations

import typing

import jax
import jax.numpy as jnp

from lattice.errors import ConfigError

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the router table
  from lattice import config as config_lib

# A router logit no softmax/sigmoid picks (finite, so z-loss and softmax stay finite).
MASKED_LOGIT = -1e9


def image_experts(f: config_lib.FFNConfig) -> int:
  """Experts reserved for image tokens: `model.ffn.image_experts`, 0 meaning half."""
  return f.image_experts or f.n_experts // 2


def modality_mask(modality_T: jax.Array, n_experts: int, n_image: int) -> jax.Array:
  """bool[T, E], True where a token may go: image tokens (modality 1) to experts
  [0, n_image), text tokens (modality 0) to [n_image, E)."""
  image_E = jnp.arange(n_experts) < n_image
  return jnp.where(modality_T[:, None] > 0, image_E[None, :], ~image_E[None, :])


def restrict(logits_TxE: jax.Array, modality_T: jax.Array | None,
             f: config_lib.FFNConfig) -> jax.Array:
  """logits_TxE with every expert outside a token's modality set to MASKED_LOGIT.

  `modality_T` None (no modality ids in the batch) counts every token as text.
  """
  T, E = logits_TxE.shape
  if modality_T is None:
    modality_T = jnp.zeros((T,), jnp.int32)
  allowed_TxE = modality_mask(modality_T, E, image_experts(f))
  return jnp.where(allowed_TxE, logits_TxE, MASKED_LOGIT)


def check(f: config_lib.FFNConfig, cfg: config_lib.Config) -> None:
  """Raises ConfigError naming the field: each modality needs >= top_k experts, and
  modality ids come only from an image frontend (model.frontend.kind early|late)."""
  if cfg.model.frontend.kind == 'text':
    raise ConfigError("model.ffn.router: 'modality' routes image and text tokens apart; "
                      "it needs an image frontend (model.frontend.kind early or late)")
  if f.image_experts < 0:
    raise ConfigError(f'model.ffn.image_experts: must be non-negative, got '
                      f'{f.image_experts}')
  k, e = image_experts(f), f.n_experts
  if not 0 < k < e or f.top_k > min(k, e - k):
    raise ConfigError(f'model.ffn.image_experts: {k} image experts of {e} leave a '
                      f'modality fewer experts than model.ffn.top_k={f.top_k}')
