"""Chameleon-style discrete image tokens: a k-means codebook of patches.

Shape legend: T patches, Q values per patch, K codes.

Chameleon (arXiv 2405.09818) turns an image into discrete tokens with a learned
VQ tokenizer and adds them to the vocabulary; at our scale a k-means codebook of
raw patches, fitted on training images, stands in for the VQ-GAN. The codebook is
fitted when the model is initialized (numpy, from the shapes generator with a fixed
seed, so every run gets the same one) and kept as a non-trainable variable in the
`codebook` collection, so it is checkpointed with the model. Code i is token id
FIRST_CODE_ID + i, above the byte tokenizer's 272 ids.
"""

from __future__ import annotations

import typing

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lattice.cluster import kmeans as _kmeans, nearest  # pylint: disable=unused-import
from lattice.data import tokenizer as tokenizer_lib
from lattice.data.tasks import shapes
from lattice.multimodal import patches as patches_lib

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports the kind tables
  from lattice import config as config_lib

FIRST_CODE_ID = tokenizer_lib.VOCAB_SIZE
COLLECTION = 'codebook'
FIT_IMAGES = 256
FIT_SEED = 1234


def training_patches(f: config_lib.FrontendConfig, n_images: int = FIT_IMAGES,
                     seed: int = FIT_SEED) -> np.ndarray:
  """Patches [n_images * P, Q] of shapes images drawn with `seed`."""
  rng = np.random.default_rng(seed)
  images = np.stack([shapes.render(shapes.random_scene(rng), f.image_size)
                     for _ in range(n_images)])
  p = patches_lib.patchify(images, f.patch_size)
  return p.reshape(-1, p.shape[-1])


def kmeans(x_TxQ: np.ndarray, k: int, iters: int = 15, seed: int = 0) -> np.ndarray:
  """The codebook's centres [K, Q]: `lattice.cluster.kmeans` from k distinct rows."""
  return _kmeans(x_TxQ, k, iters=iters, seed=seed)[0]


class Codebook(nn.Module):
  """patches [B, M, Q] -> codes [B, M] (no gradient flows through quantization)."""
  f: config_lib.FrontendConfig

  @nn.compact
  def __call__(self, patches_BxMxQ: jax.Array) -> jax.Array:
    centroids = self.variable(COLLECTION, 'centroids', lambda: jnp.asarray(
        kmeans(training_patches(self.f), self.f.codebook_size)))
    B, M, Q = patches_BxMxQ.shape
    x_TxQ = jax.lax.stop_gradient(patches_BxMxQ.reshape(B * M, Q).astype(jnp.float32))
    return nearest(x_TxQ, centroids.value, jnp).reshape(B, M)
