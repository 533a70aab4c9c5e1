"""Sampling with the KV cache: greedy equals step-by-step argmax of the full forward."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lattice import config as config_lib
from lattice.decode import sampling
from lattice.nn import transformer

from conftest import tiny_config

CFG = config_lib.build(tiny_config(model={'vocab_size': 384})).model
PROMPT = jax.random.randint(jax.random.key(1), (3, 5), 0, 256)


@pytest.fixture(scope='module')
def variables():
  return nn.unbox(transformer.Transformer(CFG).init(jax.random.key(0), PROMPT))


def _reference_greedy(variables, prompt, n):
  """Step-by-step argmax of the full forward, no KV cache.

  The tokens sit in a buffer of the final width (zeros past the current end), so one
  compiled forward serves every step (eager applies at n widths took ~20 s); under
  the causal mask, position t - 1's logits do not see the zeros after it.
  """
  model = transformer.Transformer(CFG)
  B, P = prompt.shape
  argmax = jax.jit(lambda v, t_BxL: jnp.argmax(model.apply(v, t_BxL), axis=-1))
  tokens_BxL = np.zeros((B, P + n), np.int32)
  tokens_BxL[:, :P] = np.asarray(prompt)
  for t in range(P, P + n):
    tokens_BxL[:, t] = np.asarray(argmax(variables, tokens_BxL))[:, t - 1]
  return tokens_BxL[:, P:]


def test_greedy_matches_full_forward_argmax(variables):
  out = sampling.generate(variables, PROMPT, jax.random.key(0), model_cfg=CFG,
                          max_new_tokens=8, sampling=sampling.SamplingConfig(0.0))
  np.testing.assert_array_equal(out, _reference_greedy(variables, PROMPT, 8))


def test_top_k_one_is_greedy_and_sampling_is_seeded(variables):
  greedy = sampling.generate(variables, PROMPT, jax.random.key(0), model_cfg=CFG,
                             max_new_tokens=6, sampling=sampling.SamplingConfig(0.0))
  top1 = sampling.generate(variables, PROMPT, jax.random.key(5), model_cfg=CFG,
                           max_new_tokens=6, sampling=sampling.SamplingConfig(1.0, top_k=1))
  np.testing.assert_array_equal(greedy, top1)
  hot = sampling.SamplingConfig(2.0, top_p=0.99)
  a = sampling.generate(variables, PROMPT, jax.random.key(1), model_cfg=CFG,
                        max_new_tokens=12, sampling=hot)
  b = sampling.generate(variables, PROMPT, jax.random.key(1), model_cfg=CFG,
                        max_new_tokens=12, sampling=hot)
  c = sampling.generate(variables, PROMPT, jax.random.key(2), model_cfg=CFG,
                        max_new_tokens=12, sampling=hot)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_top_p_keeps_the_smallest_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 400)
  draw = jax.vmap(lambda k: sampling.sample_logits(
      k, logits, sampling.SamplingConfig(1.0, top_p=0.7)))(keys)
  assert set(np.unique(draw).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3


def test_top_p_zero_keeps_only_the_argmax():
  # Issue 19: n_keep was 0 at top_p = 0 and index -1 wrapped to the smallest logit,
  # so every token stayed (samples {0, 1, 2}).
  logits = jnp.log(jnp.array([[0.6, 0.3, 0.1]]))
  keys = jax.random.split(jax.random.key(0), 200)
  draw = jax.vmap(lambda k: sampling.sample_logits(
      k, logits, sampling.SamplingConfig(1.0, top_p=0.0)))(keys)
  assert set(np.unique(draw).tolist()) == {0}
  kept = sampling.filtered_logits(logits, sampling.SamplingConfig(1.0, top_p=0.0))
  assert np.isfinite(np.asarray(kept)).tolist() == [[True, False, False]]


def test_speculative_draws_from_the_same_filter():
  from lattice.decode import speculative
  assert speculative.filtered_logits is sampling.filtered_logits


@pytest.mark.parametrize('field,kw', [('top_p', dict(top_p=-0.1)),
                                      ('top_p', dict(top_p=1.5)),
                                      ('top_k', dict(top_k=-1)),
                                      ('temperature', dict(temperature=-1.0))])
def test_sampling_config_rejects_out_of_range(field, kw):
  with pytest.raises(ValueError, match=f'sampling.{field}'):
    sampling.SamplingConfig(**kw)


class _OnlyToken(sampling.LogitProcessor):
  """Allows one token, then EOS: exercises the processor state and EOS handling."""

  def init(self, batch_size):
    return jnp.zeros((batch_size,), jnp.int32)

  def __call__(self, count_B, logits_BxV):
    allowed = jnp.where(count_B[:, None] < 3, 65, 258)
    return jnp.where(jnp.arange(logits_BxV.shape[-1]) == allowed, 0.0, -jnp.inf)

  def update(self, count_B, token_B):
    return count_B + 1


def test_logit_processor_and_eos_padding(variables):
  out = sampling.generate(variables, PROMPT, jax.random.key(0), model_cfg=CFG,
                          max_new_tokens=6, processor=_OnlyToken(), eos_id=258,
                          pad_id=256)
  np.testing.assert_array_equal(out, [[65, 65, 65, 258, 256, 256]] * 3)


def test_too_long_for_the_cache_is_a_clear_error(variables):
  with pytest.raises(config_lib.ConfigError, match='model.max_len'):
    sampling.generate(variables, PROMPT, jax.random.key(0), model_cfg=CFG,
                      max_new_tokens=CFG.max_len)
