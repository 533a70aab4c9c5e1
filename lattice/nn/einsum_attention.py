"""Causal attention as plain einsums, in query blocks that skip masked-out keys.

Shape legend: B batch, L length (queries and keys), H query heads, K kv heads,
G = H // K query heads per kv head, Dh head width, Q query block, S keys a block sees.

The training path's CPU implementation (`model.attention.implementation='einsum'`,
and what 'auto' picks on CPU). It computes exactly what `jax.nn.dot_product_attention`
(XLA path, `is_causal=True`, optional document mask) computes, up to float rounding:
softmax(q k^T / sqrt(Dh) + mask) v with the softmax in float32 and masked logits set
to the same large negative number. Two things make it cheaper on XLA:CPU, where the
library call was ~28% of a d_model 256 train step for ~14% of its FLOPs (BENCHMARKS.md):

- The queries are split into blocks of `block` rows; block i only multiplies the keys
  0 .. (i+1)Q - 1 it can see, so the causal upper triangle is never computed (the
  "block-sparse causal" skip of FlashAttention, Dao et al. 2022, arXiv 2205.14135,
  done here with static shapes instead of a kernel). At L=256, Q=64 this computes
  10/16 of the score and value matmuls and softmax elements.
- The 1/sqrt(Dh) scale is applied to q (L x Dh elements) instead of the logits
  (L x L), and the mask is a broadcast [L, S] (or [B, 1, 1, Q, S] with documents)
  `where`, not a materialised [B, H, L, L] boolean.

Grouped-query heads are handled by viewing q as [B, L, K, G, Dh], so k and v are
never repeated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def large_negative(dtype) -> float:
  """The masked-logit value of jax.nn.dot_product_attention's XLA path
  (`_get_large_negative`): -0.7 x the dtype's max, capped at float32's range, so
  masked logits are identical between the library, this module and
  `attention.decode_attention`."""
  return float(-0.7 * min(float(jnp.finfo(dtype).max), float(np.finfo(np.float32).max)))


def _block_attention(q_BxQxKxGxDh, k_BxSxKxDh, v_BxSxKxDh, visible_BxQxS):
  """One query block against the keys it may see; `visible` bool, broadcastable."""
  logits_dtype = jnp.promote_types(q_BxQxKxGxDh.dtype, jnp.float32)
  s_BxKxGxQxS = jnp.einsum('bqkgd,bskd->bkgqs', q_BxQxKxGxDh, k_BxSxKxDh,
                           preferred_element_type=logits_dtype)
  s_BxKxGxQxS = jnp.where(visible_BxQxS[:, None, None], s_BxKxGxQxS,
                          large_negative(s_BxKxGxQxS.dtype))
  p_BxKxGxQxS = jax.nn.softmax(s_BxKxGxQxS.astype(jnp.float32), axis=-1)
  return jnp.einsum('bkgqs,bskd->bqkgd', p_BxKxGxQxS.astype(v_BxSxKxDh.dtype),
                    v_BxSxKxDh)


def causal_attention(q_BxLxHxDh: jax.Array, k_BxLxKxDh: jax.Array, v_BxLxKxDh: jax.Array,
                     segment_ids_BxL: jax.Array | None = None,
                     block: int = 64) -> jax.Array:
  """Causal (optionally block-diagonal by `segment_ids`) attention -> [B, L, H, Dh].

  q [B, L, H, Dh], k and v [B, L, K, Dh] with H a multiple of K (grouped-query);
  `segment_ids` int [B, L]: query i sees key j iff j <= i and both have the same id
  (lattice.nn.attention.document_mask's rule). `block` is the query block length
  Q (a positive int; L need not be a multiple: the last block is shorter).
  Raises ValueError if H is not a multiple of K or block < 1.
  """
  B, L, H, Dh = q_BxLxHxDh.shape
  K = k_BxLxKxDh.shape[2]
  if H % K or block < 1:
    raise ValueError(f'einsum attention: n_heads={H} must be a multiple of '
                     f'n_kv_heads={K}, block={block} must be >= 1')
  scale = jnp.asarray(Dh ** -0.5, q_BxLxHxDh.dtype)
  q_BxLxKxGxDh = (q_BxLxHxDh * scale).reshape(B, L, K, H // K, Dh)
  out = []
  for start in range(0, L, block):
    stop = min(start + block, L)  # block [start, stop) sees keys [0, stop)
    causal_QxS = np.arange(start, stop)[:, None] >= np.arange(stop)[None, :]
    visible = jnp.asarray(causal_QxS)[None]
    if segment_ids_BxL is not None:
      same_BxQxS = (segment_ids_BxL[:, start:stop, None]
                    == segment_ids_BxL[:, None, :stop])
      visible = visible & same_BxQxS
    out.append(_block_attention(q_BxLxKxGxDh[:, start:stop], k_BxLxKxDh[:, :stop],
                                v_BxLxKxDh[:, :stop], visible))
  out_BxLxKxGxDh = out[0] if len(out) == 1 else jnp.concatenate(out, axis=1)
  return out_BxLxKxGxDh.reshape(B, L, H, Dh)
