"""Model families: which module, loss, init inputs and eval step a config trains.

The plain decoder is the default family. A technique whose model is not just
`Transformer` (multi-token heads, multimodal frontends) registers a `Family` under
its config concern and kind, e.g. `register_family('mtp', 'parallel', Family(...))`;
`lattice.train.loop.build` then picks it from the config, so the train loop,
checkpointing and the CLI work for it unchanged.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from lattice import config as config_lib
from lattice.nn import transformer
from lattice.train import step as step_lib


@dataclasses.dataclass(frozen=True)
class Family:
  # (model config, decode) -> module.
  make_model: Callable[[config_lib.ModelConfig, bool], nn.Module]
  # loss_fn(model, variables, batch, mutable) -> (loss, (metrics, mutated)).
  loss_fn: Callable = step_lib.lm_loss
  # (config) -> positional args for model.init after the key.
  init_args: Callable[[config_lib.Config], tuple[Any, ...]] = (
      lambda cfg: (jnp.zeros((1, cfg.data.seq_len), jnp.int32),))
  # (model) -> eval_step(state, batch) -> sums (see lattice.train.step.make_eval_step).
  make_eval_step: Callable[[nn.Module], Callable] = step_lib.make_eval_step
  # Batches other than packed text (e.g. images + text): (config, tokenizer) -> a
  # checkpointable grain iterator, and (config, tokenizer) -> the eval batches.
  # None: lattice.data.pipeline's text batches.
  make_train_iterator: Callable | None = None
  make_eval_batches: Callable | None = None
  # (params, model config, seq_len) -> train FLOPs per token; None: the decoder's
  # (lattice.train.flops). Multimodal families add their image path.
  flops_per_token: Callable | None = None


DEFAULT = Family(make_model=lambda cfg, decode=False: transformer.Transformer(cfg, decode))

# (concern, kind) -> Family. The default kinds of each concern are not listed.
_FAMILIES: dict[tuple[str, str], Family] = {}
_DEFAULT_KINDS = {'mtp': 'none', 'frontend': 'text'}


def register_family(concern: str, kind: str, family: Family) -> None:
  if concern not in _DEFAULT_KINDS:
    raise ValueError(f'unknown model concern {concern!r}')
  config_lib.register_kind(concern, kind)
  _FAMILIES[(concern, kind)] = family


def family_for(cfg: config_lib.ModelConfig) -> Family:
  """The registered family for `cfg`; the plain decoder when every kind is default."""
  chosen = [(c, getattr(cfg, c).kind) for c, d in _DEFAULT_KINDS.items()
            if getattr(cfg, c).kind != d]
  if not chosen:
    return DEFAULT
  if len(chosen) > 1:
    raise config_lib.ConfigError(
        'model: ' + ' and '.join(f'{c}.kind={k!r}' for c, k in chosen)
        + ' cannot be combined yet')
  key = chosen[0]
  if key not in _FAMILIES:
    raise config_lib.ConfigError(f'model.{key[0]}.kind: {key[1]!r} has no registered model')
  return _FAMILIES[key]


def _register_plugins() -> None:
  """Imports the technique packages that register families (they import this module)."""
  for name in ('lattice.mtp', 'lattice.multimodal'):
    if importlib.util.find_spec(name) is not None:
      importlib.import_module(name)


_register_plugins()
