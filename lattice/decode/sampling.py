"""Batched autoregressive sampling with the KV cache, under jit.

Shape legend: B batch, P prompt length, N new tokens, V vocabulary.

One prefill call writes the prompt into the cache; a `lax.scan` then samples one
token a step (greedy, temperature, top-k, top-p). A `LogitProcessor` can rewrite the
logits each step from a state it carries through the loop. A `constraint`
(`lattice.decode.constraints.TokenIndex`) carries each row's automaton state and
masks every token whose remaining need does not fit in the steps left, so the
output always matches its schema or regex (see that module). Rows stop
independently at EOS; later tokens are PAD.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from lattice import config as config_lib
from lattice.decode import constraints as constraints_lib
from lattice import model as model_lib
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
  """How a token is drawn from the logits.

  temperature: 0 is greedy; top_k: 0 is off; top_p: 1 is off. top_p = 0 keeps only
  the most likely token(s) (the nucleus is never empty, as in Holtzman et al. 2019,
  arXiv 1904.09751, which keeps the smallest set whose mass reaches p).

  Raises:
    ValueError naming the field when temperature < 0, top_k < 0 or top_p is
    outside [0, 1].
  """
  temperature: float = 1.0   # 0: greedy
  top_k: int = 0             # 0: off
  top_p: float = 1.0         # 1: off

  def __post_init__(self):
    if not self.temperature >= 0.0:
      raise ValueError(f'sampling.temperature: expected >= 0, got {self.temperature}')
    if not self.top_k >= 0:
      raise ValueError(f'sampling.top_k: expected >= 0 (0 is off), got {self.top_k}')
    if not 0.0 <= self.top_p <= 1.0:
      raise ValueError(f'sampling.top_p: expected a value in [0, 1] (1 is off), '
                       f'got {self.top_p}')


def filtered_logits(logits_xV: jax.Array, s: SamplingConfig) -> jax.Array:
  """float32 logits after temperature, top-k and top-p; -inf where filtered out.

  The one filter both plain sampling and speculative verification draw from, so the
  two sample the same distribution. `logits_xV` has any leading axes and the
  vocabulary last; needs `s.temperature > 0`. The nucleus is the smallest prefix of
  the tokens sorted by probability whose mass reaches `top_p`, and always holds at
  least the most likely token (top_p = 0 keeps only it, ties included).
  """
  logits_xV = logits_xV.astype(jnp.float32) / s.temperature
  if s.top_k:
    kth_x1 = jax.lax.top_k(logits_xV, s.top_k)[0][..., -1:]
    logits_xV = jnp.where(logits_xV < kth_x1, -jnp.inf, logits_xV)
  if s.top_p < 1.0:
    sorted_xV = jnp.sort(logits_xV, axis=-1)[..., ::-1]
    probs_xV = jax.nn.softmax(sorted_xV, axis=-1)
    # Tokens whose preceding mass is still short of top_p; at least one, else index
    # -1 below would wrap to the least likely token and keep everything.
    n_keep_x = jnp.maximum(
        jnp.sum(jnp.cumsum(probs_xV, axis=-1) - probs_xV < s.top_p, axis=-1), 1)
    cutoff_x1 = jnp.take_along_axis(sorted_xV, n_keep_x[..., None] - 1, axis=-1)
    logits_xV = jnp.where(logits_xV < cutoff_x1, -jnp.inf, logits_xV)
  return logits_xV


def sample_logits(key: jax.Array, logits_BxV: jax.Array, s: SamplingConfig) -> jax.Array:
  """int32[B]: one token per row, greedy at temperature 0, else from `filtered_logits`."""
  if s.temperature == 0.0:
    return jnp.argmax(logits_BxV.astype(jnp.float32), axis=-1).astype(jnp.int32)
  return jax.random.categorical(key, filtered_logits(logits_BxV, s),
                                axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=('model_cfg', 'max_new_tokens', 'sampling',
                                             'processor', 'eos_id', 'pad_id'))
def generate(variables: dict, prompt_BxP: jax.Array, key: jax.Array, *,
             model_cfg: config_lib.ModelConfig, max_new_tokens: int,
             sampling: SamplingConfig = SamplingConfig(),
             processor: LogitProcessor = LogitProcessor(),
             eos_id: int | None = None, pad_id: int = 0,
             constraint: constraints_lib.Index | None = None) -> jax.Array:
  """Samples `max_new_tokens` after each (equal-length) prompt; returns int32[B, N].

  `variables` holds 'params' (and any non-gradient collections); no 'cache'.
  With a `constraint`, every row's tokens up to EOS (or all N) match it; `eos_id`
  then defaults to, and must equal, the constraint's.
  """
  B, P = prompt_BxP.shape
  if P + max_new_tokens > model_cfg.max_len:
    raise config_lib.ConfigError(
        f'model.max_len: prompt ({P}) + max_new_tokens ({max_new_tokens}) exceed the '
        f'KV cache of {model_cfg.max_len} positions')
  model = model_lib.make_model(model_cfg, decode=True)
  cache = transformer.init_cache(model, B)
  logits_BxPxV, mut = model.apply({**variables, 'cache': cache}, prompt_BxP,
                                  mutable=['cache'])
  if constraint is not None:
    eos_id = _check_constraint(constraint, eos_id, max_new_tokens,
                               logits_BxPxV.shape[-1])

  def pick(key, logits_BxV, pstate, cstate_B, done_B, step):
    logits_BxV = processor(pstate, logits_BxV)
    if constraint is not None:
      # Allowed: the tokens after which an accepting state is still reachable in
      # the steps left (`need` is INF for tokens the automaton rejects).
      left = max_new_tokens - 1 - step
      allowed_BxV = constraint.need_rows(cstate_B) <= left
      logits_BxV = jnp.where(allowed_BxV, logits_BxV, -jnp.inf)
    token_B = sample_logits(key, logits_BxV, sampling)
    token_B = jnp.where(done_B, pad_id, token_B)
    pstate = processor.update(pstate, token_B)
    if constraint is not None:
      new_B = constraint.advance(cstate_B, token_B)
      cstate_B = jax.tree.map(lambda old, new: jnp.where(done_B, old, new), cstate_B, new_B)
    if eos_id is not None:
      done_B = done_B | (token_B == eos_id)
    return token_B, pstate, cstate_B, done_B

  def body(carry, xs):
    key, step = xs
    cache, token_B, pstate, cstate_B, done_B = carry
    logits_Bx1xV, mut = model.apply({**variables, 'cache': cache}, token_B[:, None],
                                    mutable=['cache'])
    token_B, pstate, cstate_B, done_B = pick(key, logits_Bx1xV[:, -1], pstate,
                                             cstate_B, done_B, step)
    return (mut['cache'], token_B, pstate, cstate_B, done_B), token_B

  keys = jax.random.split(key, max_new_tokens)
  cstate_B = (constraint.init_state(B) if constraint is not None
              else jnp.zeros((B,), jnp.int32))
  first_B, pstate, cstate_B, done_B = pick(
      keys[0], logits_BxPxV[:, -1], processor.init(B), cstate_B,
      jnp.zeros((B,), bool), 0)
  _, rest_BxN = jax.lax.scan(body, (mut['cache'], first_B, pstate, cstate_B, done_B),
                             (keys[1:], jnp.arange(1, max_new_tokens)))
  return jnp.concatenate([first_B[:, None], rest_BxN.T], axis=1)


def _check_constraint(constraint: constraints_lib.Index, eos_id: int | None,
                      max_new_tokens: int, vocab_size: int) -> int:
  """The EOS id to stop at; errors a caller can cause, raised while tracing."""
  if eos_id is not None and eos_id != constraint.eos_id:
    raise ValueError(f'generate: eos_id {eos_id} differs from the constraint\'s '
                     f'{constraint.eos_id}')
  if constraint.vocab_size != vocab_size:
    raise config_lib.ConfigError(
        f'model.vocab_size: the constraint was built for {constraint.vocab_size} '
        f'tokens, the model has {vocab_size} (build_index(vocab_size=...))')
  if constraint.min_tokens > max_new_tokens:
    raise ValueError(f'generate: the shortest match takes {constraint.min_tokens} '
                     f'tokens, more than max_new_tokens={max_new_tokens}')
  return constraint.eos_id
