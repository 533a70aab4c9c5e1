"""`lattice plan`: what a mode costs, before anything trains.

  lattice plan --config=experiments/bitnet_b158.py:full --chips v5e-64 [--mfu 0.4]
      [--compile] [--json F] [--config.train.steps=...]

For every arm: parameters and active parameters, training tokens, tokens per
parameter, epochs over the configured corpus when its size is known, training
FLOPs (lattice.train.flops: PaLM App. B accounting), and for the chosen slice the
estimated step time and chip-hours at an assumed MFU (`--mfu`, default 0.4 of the
chip's published dense bf16 peak, lattice.chips) and an analytic per-device memory:
parameters, gradients and Adam moments sharded over every chip (FSDP), plus
activations per Korthikanti et al. 2022 ("Reducing Activation Recomputation in
Large Transformer Models", arXiv 2205.05198, eq. 2: s*b*h*(34 + 5*a*s/h) bytes per
layer without recomputation, 2*s*b*h per layer with full recomputation). With
`--compile`, the train step is also compiled on this machine's first device and its
`memory_analysis()` printed (exact for that device, not for the slice).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import jax
import numpy as np

from lattice import chips as chips_lib
from lattice import config as config_lib
from lattice.data import sources
from lattice.run import arms as arms_lib
from lattice.run import config_file
from lattice.run import scale
from lattice.train import flops, loop


@dataclasses.dataclass
class ArmPlan:
  arm: str
  params: int
  active_params: int
  tokens: int
  tokens_per_param: float
  epochs: float | None
  train_flops: float
  step_s: float
  chip_hours: float
  memory_per_device_bytes: float
  memory_source: str
  seeds: int = 1            # the mode's seeds: the arm trains this many times

  @property
  def total_chip_hours(self) -> float:
    """Chip-hours of the arm over all its seeds."""
    return self.chip_hours * self.seeds


def corpus_tokens(data_cfg: config_lib.DataConfig) -> int | None:
  """Tokens in the training corpus when known without reading it (stdlib: its bytes
  under the byte tokenizer; a streamed HF corpus of lattice.run.scale.CORPORA: its
  published count, in its own tokenizer's tokens), else None."""
  if data_cfg.source == 'stdlib' and data_cfg.tokenizer == 'byte':
    return int(sources.stdlib_info().get('n_bytes', 0)) or None
  if data_cfg.source == 'hf':  # a published size (lattice.run.scale.CORPORA)
    return scale.corpus_tokens(data_cfg.hf_name, data_cfg.hf_config)
  return None


def activation_bytes(cfg: config_lib.Config, local_batch: int) -> float:
  """Per-device activation bytes of one step (Korthikanti et al. 2022, eq. 2)."""
  m = cfg.model
  s, b, h, a = cfg.data.seq_len, local_batch, m.d_model, m.n_heads
  per_layer = s * b * h * (34 + 5 * a * s / h)
  if m.remat == 'full':
    per_layer = 2 * s * b * h
  width = 0.5 if m.dtype == 'float32' else 1.0   # eq. 2 assumes 16-bit activations
  return m.n_layers * per_layer / width


def _counts(cfg: config_lib.Config, cache: dict | None) -> tuple[config_lib.Config, int, int, float]:
  """(resolved cfg, params, active params, train FLOPs per token) of `cfg`'s model,
  from its abstract state (nothing is compiled); `cache` reuses one count for arms
  whose model and sequence length are the same."""
  key = (repr(cfg.model), cfg.data.seq_len)
  if cache is not None and key in cache:
    n, active, per_token = cache[key]
    return cfg, n, active, per_token
  # A mode that sets model.vocab_size plans without its (possibly remote) tokenizer.
  setup = loop.build(cfg, devices=jax.devices()[:1], check_vocab=False)
  params = setup.abstract_state.params
  n = flops.count_params(params)
  active = flops.active_params(params, setup.cfg.model, setup.param_axes)
  per_token = flops.train_flops_per_token(params, setup.cfg.model, cfg.data.seq_len,
                                          setup.param_axes)
  if cache is not None:
    cache[key] = (n, active, per_token)
  return setup.cfg, n, active, per_token


def plan_arm(name: str, cfg: config_lib.Config, chip: chips_lib.Chip, n_chips: int,
             mfu: float, *, seeds: int = 1, cache: dict | None = None) -> ArmPlan:
  """The plan of one arm (trained `seeds` times) on `n_chips` chips of `chip` at an
  assumed `mfu` (a fraction of the chip's dense bf16 peak)."""
  cfg, n, active, per_token = _counts(cfg, cache)
  tokens = cfg.train.steps * cfg.data.batch_size * cfg.data.seq_len
  total = per_token * tokens
  step_s = per_token * cfg.data.batch_size * cfg.data.seq_len / (n_chips * chip.bf16_flops * mfu)
  corpus = corpus_tokens(cfg.data)
  param_bytes = np.dtype(cfg.model.param_dtype).itemsize
  state_bytes = n * (param_bytes + 4 + 8) / n_chips   # params + f32 grads + Adam m, v
  # Activations live for one microbatch at a time (train.microbatches).
  local_batch = max(cfg.data.batch_size // n_chips // cfg.train.microbatches, 1)
  return ArmPlan(
      arm=name, params=n, active_params=active, tokens=tokens,
      tokens_per_param=tokens / max(active, 1),
      epochs=tokens / corpus if corpus else None, train_flops=total, step_s=step_s,
      chip_hours=step_s * cfg.train.steps * n_chips / 3600,
      memory_per_device_bytes=state_bytes + activation_bytes(cfg, local_batch),
      memory_source='analytic', seeds=seeds)


def plan_config(config, chip: chips_lib.Chip, n_chips: int, mfu: float) -> list[ArmPlan]:
  """The plan of every arm of an experiment's ConfigDict (`get_config(mode)`).

  Raises:
    ConfigError: an arm whose overrides do not fit the config.
  """
  seeds = arms_lib.arm_seeds(config)
  cache: dict = {}
  return [plan_arm(name, arms_lib.arm_config(config, overrides, seed=0), chip, n_chips,
                   mfu, seeds=len(seeds[name]), cache=cache)
          for name, overrides in arms_lib.arm_list(config)]


def plan_mode(spec: str, chips: str = 'h100x1', mfu: float = 0.4,
              overrides: list[tuple[str, str | None]] = ()) -> list[ArmPlan]:
  """`plan_config` of `FILE.py:MODE` (with `--config.KEY=VALUE` overrides) on the
  slice `chips` (e.g. `h100x1`, `v5e-64`).

  Raises:
    ConfigError: a bad file, mode or override. ValueError: a bad slice or mfu.
  """
  chip, n_chips = chips_lib.parse_slice(chips)
  if not 0 < mfu <= 1:
    raise ValueError(f'--mfu: must lie in (0, 1], got {mfu}')
  _, config = config_file.load(spec)
  config_file.apply(config, list(overrides))
  return plan_config(config, chip, n_chips, mfu)


def compiled_memory(cfg: config_lib.Config) -> dict[str, int]:
  """memory_analysis() of the train step compiled for this machine's first device."""
  # A mode that sets model.vocab_size plans without its (possibly remote) tokenizer.
  setup = loop.build(cfg, devices=jax.devices()[:1], check_vocab=False)
  B, L = setup.cfg.data.batch_size, setup.cfg.data.seq_len
  spec = jax.ShapeDtypeStruct((B, L), np.int32)
  batch = {'inputs': spec, 'targets': spec, 'weights': jax.ShapeDtypeStruct((B, L), np.float32)}
  stats = setup.train_step.lower(setup.abstract_state, batch).compile().memory_analysis()
  return {k: int(getattr(stats, k)) for k in (
      'argument_size_in_bytes', 'output_size_in_bytes', 'temp_size_in_bytes')}


def _fmt(x: float, unit: str = '') -> str:
  for size, suffix in ((1e18, 'E'), (1e15, 'P'), (1e12, 'T'), (1e9, 'G'), (1e6, 'M'),
                       (1e3, 'k')):
    if abs(x) >= size:
      return f'{x / size:.2f}{suffix}{unit}'
  return f'{x:.2f}{unit}'


def parse_overrides(argv: list[str]) -> list[tuple[str, str | None]]:
  """`--config.KEY=VALUE` arguments as (KEY, VALUE) pairs.

  Raises:
    ValueError: an argument that is not such an override.
  """
  out = []
  for arg in argv:
    if not arg.startswith('--config.'):
      raise ValueError(f'{arg}: expected --config.KEY=VALUE')
    key, eq, value = arg[len('--config.'):].partition('=')
    out.append((key, value if eq else None))
  return out


def main(argv: list[str]) -> list[ArmPlan]:
  """Entry point of `lattice plan`; exits 2 with one line on a user error."""
  parser = argparse.ArgumentParser(prog='lattice plan', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='FILE.py:MODE')
  parser.add_argument('--chips', default='h100x8', help='slice, e.g. v5e-64, h100x8')
  parser.add_argument('--mfu', type=float, default=0.4, help='assumed MFU for time')
  parser.add_argument('--compile', action='store_true',
                      help='also compile each arm here and print memory_analysis()')
  parser.add_argument('--json', default=None)
  args, overrides = parser.parse_known_args(argv)
  try:
    chip, n_chips = chips_lib.parse_slice(args.chips)
    if not 0 < args.mfu <= 1:
      raise ValueError(f'--mfu: must lie in (0, 1], got {args.mfu}')
    _, config = config_file.load(args.config)
    notes = config_file.apply(config, parse_overrides(overrides))
    for note in notes:
      print(f'# {note}')
    plans, memory = plan_config(config, chip, n_chips, args.mfu), {}
    if args.compile:
      for name, arm_overrides in arms_lib.arm_list(config):
        memory[name] = compiled_memory(arms_lib.arm_config(config, arm_overrides, seed=0))
  except (config_lib.ConfigError, ValueError) as e:
    print(f'lattice: error: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'{args.config} on {n_chips} x {chip.name} ({_fmt(chip.bf16_flops, "FLOP/s")} '
        f'bf16 each), assumed MFU {args.mfu:.0%}')
  print(f'{"arm":<24} {"params":>9} {"active":>9} {"tokens":>9} {"tok/param":>9} '
        f'{"epochs":>7} {"FLOPs":>9} {"step":>9} {"chip-h":>9} {"mem/dev":>10}')
  for p in plans:
    epochs = f'{p.epochs:.2f}' if p.epochs is not None else '?'
    print(f'{p.arm:<24} {_fmt(p.params):>9} {_fmt(p.active_params):>9} {_fmt(p.tokens):>9} '
          f'{p.tokens_per_param:>9.1f} {epochs:>7} {_fmt(p.train_flops):>9} '
          f'{p.step_s:>8.3g}s {p.chip_hours:>9.3g} '
          f'{_fmt(p.memory_per_device_bytes, "B"):>10}')
  counts = sorted({p.seeds for p in plans}) or [1]
  seeds = counts[0] if len(counts) == 1 else f'{counts[0]}-{counts[-1]}'
  print(f'{len(plans)} arm(s) x {seeds} seed(s): '
        f'{sum(p.total_chip_hours for p in plans):.3g} chip-hours in all')
  print('mem/dev: analytic (sharded params+grads+Adam, activations per arXiv 2205.05198)')
  for name, stats in memory.items():
    print(f'compiled here ({jax.devices()[0].device_kind}), {name}: '
          + ', '.join(f'{k} {_fmt(v, "B")}' for k, v in stats.items()))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'chips': args.chips, 'mfu': args.mfu,
                 'arms': [dataclasses.asdict(p) for p in plans], 'compiled': memory,
                 'total_chip_hours': sum(p.total_chip_hours for p in plans)},
                f, indent=1)
  return plans
