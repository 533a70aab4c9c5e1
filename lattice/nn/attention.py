"""Grouped-query attention with RoPE and a KV cache.

Shape legend: B batch, L query length, S key length (cache size), D model width,
H query heads, K kv heads, Dh head width.

The cache lives in the flax 'cache' collection: keys/values [B, S, K, Dh] and a
per-row write index [B]. A call with `decode=True` writes its L new keys at the
row's index and attends to every cached position <= the query's position, so the
same code does one-token decoding, multi-token prefill and the verification pass of
speculative decoding; rolling back is just lowering the index (stale entries past it
are masked until overwritten).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lattice import config as config_lib
from lattice.nn import layers


def rope(x_BxLxNxDh: jax.Array, positions_BxL: jax.Array, theta: float) -> jax.Array:
  """Rotary position embedding (Su et al. 2021), half-split layout as in Llama/MaxText."""
  d_half = x_BxLxNxDh.shape[-1] // 2
  freq = theta ** (-jnp.arange(d_half, dtype=jnp.float32) / d_half)
  angle_BxLx1xDh2 = (positions_BxL.astype(jnp.float32)[..., None] * freq)[:, :, None, :]
  sin, cos = jnp.sin(angle_BxLx1xDh2), jnp.cos(angle_BxLx1xDh2)
  x1, x2 = jnp.split(x_BxLxNxDh.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxNxDh.dtype)


def _implementation(name: str) -> str | None:
  return None if name == 'auto' else name


class Attention(nn.Module):
  cfg: config_lib.ModelConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array) -> jax.Array:
    cfg = self.cfg
    dtype, pdtype = layers.dtype_of(cfg.dtype), layers.dtype_of(cfg.param_dtype)
    H, K, Dh = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim

    def proj(n, axis, name):
      return layers.dense(cfg.linear, (n, Dh), ('embed',), (axis, 'head_dim'),
                          dtype=dtype, param_dtype=pdtype, name=name)(x_BxLxD)

    if self.decode and self.has_variable('cache', 'cache_index'):
      # Decoding positions come from the cache, so callers cannot get them wrong.
      L = x_BxLxD.shape[1]
      positions_BxL = self.get_variable('cache', 'cache_index')[:, None] + jnp.arange(L)
    q_BxLxHxDh = rope(proj(H, 'heads', 'query'), positions_BxL, cfg.attention.rope_theta)
    k_BxLxKxDh = rope(proj(K, 'kv_heads', 'key'), positions_BxL, cfg.attention.rope_theta)
    v_BxLxKxDh = proj(K, 'kv_heads', 'value')
    q_BxLxHxDh = layers.constrain(q_BxLxHxDh, ('act_batch', 'act_len', 'act_heads', None))

    if self.decode:
      out_BxLxHxDh = self._cached_attention(q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh)
    else:
      out_BxLxHxDh = jax.nn.dot_product_attention(
          q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh, is_causal=True,
          implementation=_implementation(cfg.attention.implementation))
    out_BxLxHxDh = layers.constrain(out_BxLxHxDh,
                                    ('act_batch', 'act_len', 'act_heads', None))
    if cfg.subln:  # one norm over the concatenated heads, as in BitNet 2B4T
      B, L, H, Dh = out_BxLxHxDh.shape
      out_BxLxHxDh = layers.RMSNorm(cfg.norm_eps, dtype, pdtype, None, name='subln')(
          out_BxLxHxDh.reshape(B, L, H * Dh)).reshape(B, L, H, Dh)
    return layers.dense(cfg.linear, cfg.d_model, ('heads', 'head_dim'), ('embed',),
                        dtype=dtype, param_dtype=pdtype, name='out')(out_BxLxHxDh)

  def _cached_attention(self, q_BxLxHxDh, k_BxLxKxDh, v_BxLxKxDh):
    B, L, K, Dh = k_BxLxKxDh.shape
    S = self.cfg.max_len
    initialized = self.has_variable('cache', 'cached_key')
    zeros = lambda: jnp.zeros((B, S, K, Dh), k_BxLxKxDh.dtype)
    cache_k = self.variable('cache', 'cached_key', zeros)
    cache_v = self.variable('cache', 'cached_value', zeros)
    index = self.variable('cache', 'cache_index', lambda: jnp.zeros((B,), jnp.int32))
    if not initialized:  # Shape-only call from init_cache: nothing to attend to yet.
      return jnp.zeros(q_BxLxHxDh.shape, q_BxLxHxDh.dtype)
    i_B = index.value
    write = jax.vmap(lambda c, new, i: jax.lax.dynamic_update_slice(c, new, (i, 0, 0)))
    cache_k.value = write(cache_k.value, k_BxLxKxDh, i_B)
    cache_v.value = write(cache_v.value, v_BxLxKxDh, i_B)
    index.value = i_B + L
    q_pos_BxL = i_B[:, None] + jnp.arange(L)
    mask_Bx1xLxS = (jnp.arange(S)[None, None, :] <= q_pos_BxL[:, :, None])[:, None]
    return jax.nn.dot_product_attention(
        q_BxLxHxDh, cache_k.value, cache_v.value, mask=mask_Bx1xLxS,
        implementation=_implementation(self.cfg.attention.implementation))
