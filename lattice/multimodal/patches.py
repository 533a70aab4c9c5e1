"""Images <-> flat patch sequences (einops), as ViT / Fuyu / Chameleon-style models see them.

Shape legend: B batch, N images, H height, W width, C channels, p patch side,
P = (H/p)*(W/p) patches per image, Q = p*p*C values per patch.
Patches are in raster order (row by row), each flattened as (p, p, C).
"""

from __future__ import annotations

import einops

from lattice.data.interleaved import n_patches  # noqa: F401  (one definition)

__all__ = ['n_patches', 'patchify', 'unpatchify']


def patchify(images_BxNxHxWxC, patch: int):
  """[..., H, W, C] -> [..., P, Q]; H and W must be multiples of `patch`."""
  H, W = images_BxNxHxWxC.shape[-3:-1]
  if H % patch or W % patch:
    raise ValueError(f'patchify: image {H}x{W} is not divisible into {patch}x{patch} '
                     f'patches (model.frontend.patch_size)')
  return einops.rearrange(images_BxNxHxWxC, '... (h p1) (w p2) c -> ... (h w) (p1 p2 c)',
                          p1=patch, p2=patch)


def unpatchify(patches_BxNxPxQ, patch: int, height: int, width: int):
  """Inverse of `patchify`: [..., P, Q] -> [..., H, W, C]."""
  return einops.rearrange(patches_BxNxPxQ, '... (h w) (p1 p2 c) -> ... (h p1) (w p2) c',
                          h=height // patch, w=width // patch, p1=patch, p2=patch)
