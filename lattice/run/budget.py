"""FLOP budgets: train FLOPs per token of a config, and the steps that spend a budget.

FLOPs per token come from abstract shapes (`jax.eval_shape`, nothing runs) through
the model's count (`lattice.train.flops`: 6 x active parameters plus
attention, Kaplan et al. 2020 arXiv 2001.08361 eq. 2.1 and the PaLM appendix B
attention term). `run.arms` calls `match_flops` once per arm and reuses the count.
"""

from __future__ import annotations

from lattice import config as config_lib
from lattice import model as model_lib
from lattice.run import config_file
from lattice.train import loop


def flops_per_token(cfg: config_lib.Config) -> float:
  """Train FLOPs per token of `cfg`'s model (FLOPs/token), from abstract shapes."""
  import jax  # pylint: disable=g-import-not-at-top
  cfg = loop.resolve(cfg)
  model = model_lib.make_model(cfg.model)
  boxed = jax.eval_shape(model.init, jax.random.key(0), model_lib.init_batch(cfg))
  return model_lib.train_flops_per_token(boxed['params'], cfg.model, cfg.data.seq_len)


def scale_steps(cfg: config_lib.Config, steps: int) -> config_lib.Config:
  """`cfg` with train.steps = `steps` and every other step count
  (`config_file.step_fields`: warmup, eval, log and checkpoint intervals, a
  technique's *_step) scaled by the same ratio (at least 1; 0, i.e. off, stays off)."""
  ratio = steps / cfg.train.steps
  fields = {'train.steps': steps}
  as_dict = config_lib.to_config_dict(cfg)
  for path in config_file.step_fields(as_dict):
    value = config_file.check_key(as_dict, path)
    if value > 0:
      fields[path] = max(1, int(round(value * ratio)))
  return config_lib.replace(cfg, **fields)


def match_flops(cfg: config_lib.Config, budget: float,
                fpt: float | None = None) -> config_lib.Config:
  """`cfg` with train.steps set so that steps x tokens/step x FLOPs/token ~ budget.

  FLOPs per token count active parameters (MoE experts at k/E) plus attention, so
  arms that cost more per token train on fewer tokens; `fpt` reuses a count
  already made. Intervals scale with the steps (`scale_steps`). Raises ConfigError
  when the budget buys less than one step.
  """
  tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
  fpt = flops_per_token(cfg) if fpt is None else fpt
  steps = int(round(budget / (fpt * tokens_per_step)))
  if steps < 1:
    raise config_lib.ConfigError(
        f'flops_budget: {budget:.3g} FLOPs buys less than one step of this arm '
        f'({fpt * tokens_per_step:.3g} FLOPs per step)')
  return scale_steps(cfg, steps)
