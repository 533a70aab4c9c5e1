"""The MTP head kinds' own fields of `model.mtp` and their checks.

Each head kind in `lattice.mtp.HEADS` names its fields as a frozen dataclass in its
class attribute `options` (`ParallelHeads.options = Parallel`, `SequentialHeads.
options = Sequential`); `lattice.config` adds them to `model.mtp` (the keys stay
flat: `--config.model.mtp.n=2`) and runs the selected kind's `check(cfg)` once when
the config is built. The plain next-token head ('none') has no fields.
"""

from __future__ import annotations

import dataclasses
import typing

from lattice.errors import ConfigError

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module
  from lattice import config as config_lib


def loss_weights(mtp: Parallel | config_lib.MTPConfig) -> tuple[float, ...]:
  """The parallel heads' loss weights w_i: all 1 unless `model.mtp.loss_weights`.

  Args:
    mtp: `model.mtp` (or its `Parallel` options): reads `n` and `loss_weights`.

  Returns:
    n non-negative floats, not all zero (head 1 first).

  Raises:
    ConfigError: naming `model.mtp.loss_weights` (not numbers, not n of them,
      negative or all zero).
  """
  if not mtp.loss_weights.strip():
    return (1.0,) * mtp.n
  try:
    weights = tuple(float(w) for w in mtp.loss_weights.split(','))
  except ValueError:
    raise ConfigError(f'model.mtp.loss_weights: expected comma-separated numbers, got '
                      f'{mtp.loss_weights!r}') from None
  if len(weights) != mtp.n:
    raise ConfigError(f'model.mtp.loss_weights: {len(weights)} weights for '
                      f'model.mtp.n={mtp.n} heads')
  if min(weights) < 0 or sum(weights) <= 0:
    raise ConfigError(f'model.mtp.loss_weights: must be non-negative and not all zero, '
                      f'got {mtp.loss_weights!r}')
  return weights


def _not_negative(name: str, value: float) -> None:
  if value < 0:
    raise ConfigError(f'model.mtp.{name}: must be non-negative, got {value}')


@dataclasses.dataclass(frozen=True)
class Parallel:
  """Parallel heads (Gloeckle et al. 2024, arXiv 2404.19737)."""
  n: int = 1                   # heads; head i predicts token t+i (1 = the main head)
  loss_weights: str = ''       # comma-separated weight per head; '': all 1
  memory_efficient: bool = False  # forward+backward one head at a time

  def check(self, cfg: config_lib.Config) -> None:
    """Raises ConfigError naming `model.mtp.<field>` (or `model.n_layers`)."""
    if self.n <= 0:
      raise ConfigError(f'model.mtp.n: must be positive, got {self.n}')
    loss_weights(self)
    m = cfg.model
    # Parallel heads count one head block in model.n_layers (trunk = n_layers - 1); a
    # one-layer model's heads read the embeddings directly, which nn.scan cannot do.
    if m.scan_layers and m.n_layers < 2:
      raise ConfigError(f'model.n_layers: parallel MTP with model.scan_layers counts one '
                        f'head layer in model.n_layers (trunk = n_layers - 1), so it needs '
                        f'>= 2, got {m.n_layers}')


@dataclasses.dataclass(frozen=True)
class Sequential:
  """Sequential modules (DeepSeek-V3, arXiv 2412.19437 §2.2)."""
  depth: int = 1               # modules D; module k predicts token t+1+k
  lam: float = 0.3             # weight λ of the mean module loss
  lam_late: float = 0.1        # λ from lam_switch_step on (V3: 0.3 -> 0.1)
  lam_switch_step: int = 0     # 0 keeps λ = lam throughout

  def check(self, cfg: config_lib.Config) -> None:
    """Raises ConfigError naming `model.mtp.<field>`."""
    if self.depth <= 0:
      raise ConfigError(f'model.mtp.depth: must be positive, got {self.depth}')
    for name in ('lam', 'lam_late', 'lam_switch_step'):
      _not_negative(name, getattr(self, name))
    no_memory_efficient(cfg)


def no_memory_efficient(cfg: config_lib.Config) -> None:
  """The check of a head kind without the head-by-head backward (all but parallel)."""
  if cfg.model.mtp.memory_efficient:
    raise ConfigError(f'model.mtp.memory_efficient: only parallel heads have the '
                      f'head-by-head backward, but model.mtp.kind={cfg.model.mtp.kind!r}')


@dataclasses.dataclass(frozen=True)
class NoOptions:
  """A head kind with no fields of its own (the plain next-token head)."""

  def check(self, cfg: config_lib.Config) -> None:
    no_memory_efficient(cfg)
