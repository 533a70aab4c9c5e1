"""Batched autoregressive sampling with the KV cache, under jit.

Shape legend: B batch, P prompt length, N new tokens, V vocabulary.

One prefill call writes the prompt into the cache; a `lax.scan` then samples one
token a step (greedy, temperature, top-k, top-p). A `LogitProcessor` can rewrite the
logits each step from a state it carries through the loop (constrained decoding
plugs in here). Rows stop independently at EOS; later tokens are PAD.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from lattice import config as config_lib
from lattice.nn import transformer


class LogitProcessor:
  """Stateful logits rewrite inside the jitted loop. The default does nothing."""

  def init(self, batch_size: int) -> Any:
    return ()

  def __call__(self, pstate: Any, logits_BxV: jax.Array) -> jax.Array:
    return logits_BxV

  def update(self, pstate: Any, token_B: jax.Array) -> Any:
    return pstate


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  temperature: float = 1.0   # 0: greedy
  top_k: int = 0             # 0: off
  top_p: float = 1.0         # 1: off


def sample_logits(key: jax.Array, logits_BxV: jax.Array, s: SamplingConfig) -> jax.Array:
  logits_BxV = logits_BxV.astype(jnp.float32)
  if s.temperature == 0.0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits_BxV = logits_BxV / s.temperature
  if s.top_k:
    kth_Bx1 = jax.lax.top_k(logits_BxV, s.top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  if s.top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    cum_BxV = jnp.cumsum(jax.nn.softmax(sorted_BxV, axis=-1), axis=-1)
    # Keep the smallest prefix whose mass reaches top_p (always at least one token).
    n_keep_B = jnp.sum(cum_BxV - jax.nn.softmax(sorted_BxV, axis=-1) < s.top_p, axis=-1)
    cutoff_Bx1 = jnp.take_along_axis(sorted_BxV, n_keep_B[:, None] - 1, axis=-1)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
  return jax.random.categorical(key, logits_BxV, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('model_cfg', 'max_new_tokens', 'sampling',
                                             'processor', 'eos_id', 'pad_id'))
def generate(variables: dict, prompt_BxP: jax.Array, key: jax.Array, *,
             model_cfg: config_lib.ModelConfig, max_new_tokens: int,
             sampling: SamplingConfig = SamplingConfig(),
             processor: LogitProcessor = LogitProcessor(),
             eos_id: int | None = None, pad_id: int = 0) -> jax.Array:
  """Samples `max_new_tokens` after each (equal-length) prompt; returns int32[B, N].

  `variables` holds 'params' (and any non-gradient collections); no 'cache'.
  """
  B, P = prompt_BxP.shape
  if P + max_new_tokens > model_cfg.max_len:
    raise config_lib.ConfigError(
        f'model.max_len: prompt ({P}) + max_new_tokens ({max_new_tokens}) exceed the '
        f'KV cache of {model_cfg.max_len} positions')
  model = transformer.Transformer(model_cfg, decode=True)
  cache = transformer.init_cache(model, B)
  logits_BxPxV, mut = model.apply({**variables, 'cache': cache}, prompt_BxP,
                                  mutable=['cache'])

  def pick(key, logits_BxV, pstate, done_B):
    token_B = sample_logits(key, processor(pstate, logits_BxV), sampling)
    token_B = jnp.where(done_B, pad_id, token_B)
    pstate = processor.update(pstate, token_B)
    if eos_id is not None:
      done_B = done_B | (token_B == eos_id)
    return token_B, pstate, done_B

  def body(carry, key):
    cache, token_B, pstate, done_B = carry
    logits_Bx1xV, mut = model.apply({**variables, 'cache': cache}, token_B[:, None],
                                    mutable=['cache'])
    token_B, pstate, done_B = pick(key, logits_Bx1xV[:, -1], pstate, done_B)
    return (mut['cache'], token_B, pstate, done_B), token_B

  keys = jax.random.split(key, max_new_tokens)
  first_B, pstate, done_B = pick(keys[0], logits_BxPxV[:, -1], processor.init(B),
                                 jnp.zeros((B,), bool))
  _, rest_BxN = jax.lax.scan(body, (mut['cache'], first_B, pstate, done_B), keys[1:])
  return jnp.concatenate([first_B[:, None], rest_BxN.T], axis=1)
