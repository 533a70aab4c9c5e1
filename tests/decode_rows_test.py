"""Decoding's few-row CPU paths (a speculative verification forward's L <= 8 rows):
attention over the KV cache and the tied unembedding run row by row, and must equal
the batched formulas they replace, and each row must equal a one-row call bitwise."""

import jax
import jax.numpy as jnp
import numpy as np

from lattice.nn import attention, layers


def test_rowwise_decode_attention_matches_batched_and_one_row_calls(monkeypatch):
  B, L, H, K, S, Dh = 1, 3, 4, 2, 24, 8
  ks = jax.random.split(jax.random.key(0), 3)
  q = jax.random.normal(ks[0], (B, L, H, Dh))
  k = jax.random.normal(ks[1], (B, K, S, Dh))
  v = jax.random.normal(ks[2], (B, K, S, Dh))
  mask = jnp.arange(S)[None, None, :] <= (10 + jnp.arange(L))[None, :, None]
  rows = attention.decode_attention(q, k, v, mask)
  with monkeypatch.context() as m:
    m.setattr(layers, 'ROWWISE_MAX_ROWS', 0)  # the batched formula
    batched = attention.decode_attention(q, k, v, mask)
  np.testing.assert_allclose(rows, batched, rtol=1e-5, atol=1e-6)
  for l in range(L):
    one = attention.decode_attention(q[:, l:l + 1], k, v, mask[:, l:l + 1])
    np.testing.assert_array_equal(rows[:, l:l + 1], one)


def test_rowwise_unembedding_matches_the_einsum_and_one_row_calls():
  embed = layers.Embed(vocab_size=50, features=16)
  x = jax.random.normal(jax.random.key(1), (1, 4, 16))
  params = embed.init(jax.random.key(2), jnp.zeros((1, 1), jnp.int32))
  out = embed.apply(params, x, method='attend')
  table = params['params']['embedding']
  table = getattr(table, 'value', table)  # flax's logical-partitioning box
  ref = jnp.einsum('bld,vd->blv', x, table) / jnp.sqrt(16.0)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  for l in range(4):
    np.testing.assert_array_equal(out[:, l:l + 1],
                                  embed.apply(params, x[:, l:l + 1], method='attend'))
