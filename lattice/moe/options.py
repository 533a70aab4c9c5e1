"""MoE's own fields of `model.ffn` and their checks (read only when its kind is 'moe').

The trunk's FFN table (`lattice.nn.ffns.FFNS`) names `moe.layer.MoE`, whose
`options` is `MoEOptions`; `lattice.config` adds these fields to `model.ffn` and runs
`MoEOptions.check` once when the config is built. Routers are the entries of
`moe.router.ROUTERS` (a router's own `check` runs here too); dropless
implementations are the non-capacity entries of `moe.layer.DISPATCH` plus 'auto'
(a test keeps `DROPLESS_IMPLS` equal to them).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import typing

from lattice.errors import ConfigError
from lattice.moe import router

if typing.TYPE_CHECKING:  # annotations only: lattice.config imports this module
  from lattice import config as config_lib

DISPATCHES = ('dropless', 'capacity')
DROPLESS_IMPLS = ('auto', 'blocks', 'ragged', 'grouped', 'tokamax')


@dataclasses.dataclass(frozen=True)
class MoEOptions:
  """A mixture-of-experts FFN (DeepSeekMoE / DeepSeek-V3 routing; see lattice/moe)."""
  n_experts: int = 8           # routed experts per MoE layer
  top_k: int = 2               # routed experts each token goes through
  expert_d_ff: int = 0         # 0: d_ff // top_k (so active FFN width ~ dense d_ff)
  n_shared: int = 0            # always-on shared experts, each expert_d_ff wide
  router: str = 'softmax'      # a moe.router.ROUTERS entry: softmax | sigmoid | modality
  # Renormalize the chosen k gates to sum to 1 (DeepSeek-V3). Must be False with
  # top_k=1: the one gate would always be 1 and the router would get no gradient from
  # the loss; the raw probability is the Switch Transformer gate (arXiv 2101.03961 eq. 2).
  norm_topk: bool = True
  route_scale: float = 1.0     # DeepSeek-V3 uses 2.5
  n_groups: int = 1            # group-limited routing: groups of experts ...
  topk_groups: int = 1         # ... of which this many are kept per token
  aux_loss: float = 0.0        # Switch/GShard balance loss weight (1e-2 in Switch)
  seq_aux_loss: float = 0.0    # DeepSeek-V3 sequence-wise balance loss weight (1e-4)
  z_loss: float = 0.0          # router z-loss weight (ST-MoE: 1e-3)
  bias_rate: float = 0.0       # loss-free balancing step u (1e-3, arXiv 2408.15664)
  dispatch: str = 'dropless'   # dropless | capacity
  capacity_factor: float = 1.25
  # auto | blocks | ragged (jax.lax.ragged_dot) | grouped | tokamax (tokamax.ragged_dot:
  # its Mosaic / Triton grouped-matmul kernels on GPU and TPU, XLA's ragged_dot on CPU)
  dropless_impl: str = 'auto'
  # A per-expert selection bias even when bias_rate=0 (an imported DeepSeek-V3-style
  # router's e_score_correction_bias, kept fixed unless bias_rate > 0).
  router_bias: bool = False
  image_experts: int = 0       # router=modality: experts for image tokens (0: half)

  def check(self, cfg: config_lib.Config) -> None:
    """Raises ConfigError naming `model.ffn.<field>` (or `mesh.expert`'s conflict)."""
    for name, choices in (('router', tuple(router.ROUTERS)), ('dispatch', DISPATCHES),
                          ('dropless_impl', DROPLESS_IMPLS)):
      if getattr(self, name) not in choices:
        raise ConfigError(f'model.ffn.{name}: {getattr(self, name)!r} is not one of '
                          f'{", ".join(choices)}')
    for name in ('n_experts', 'top_k', 'route_scale', 'capacity_factor', 'n_groups',
                 'topk_groups'):
      if getattr(self, name) <= 0:
        raise ConfigError(f'model.ffn.{name}: must be positive, got '
                          f'{getattr(self, name)}')
    for name in ('expert_d_ff', 'n_shared', 'aux_loss', 'seq_aux_loss', 'z_loss',
                 'bias_rate'):
      if getattr(self, name) < 0:
        raise ConfigError(f'model.ffn.{name}: must be non-negative, got '
                          f'{getattr(self, name)}')
    e, k, g = self.n_experts, self.top_k, self.n_groups
    if k > e:
      raise ConfigError(f'model.ffn.top_k: {k} exceeds model.ffn.n_experts={e}')
    if e % g:
      raise ConfigError(f'model.ffn.n_groups: {g} groups do not divide '
                        f'model.ffn.n_experts={e}')
    if self.dropless_impl == 'tokamax' and importlib.util.find_spec('tokamax') is None:
      raise ConfigError("model.ffn.dropless_impl: 'tokamax' needs the tokamax package "
                        "(pip install tokamax, or lattice's 'kernels' extra)")
    if k == 1 and e > 1 and self.norm_topk:
      raise ConfigError('model.ffn.norm_topk: with top_k=1 every normalized gate is 1, '
                        'so the router gets no gradient from the loss; set '
                        'model.ffn.norm_topk=False (the Switch Transformer top-1 gate)')
    if self.topk_groups > g:
      raise ConfigError(f'model.ffn.topk_groups: {self.topk_groups} exceeds '
                        f'model.ffn.n_groups={g}')
    if g > 1 and k > self.topk_groups * (e // g):
      raise ConfigError(f'model.ffn.top_k: {k} experts cannot be chosen from '
                        f'{self.topk_groups} kept groups of {e // g}')
    if e % cfg.mesh.expert:
      raise ConfigError(f'model.ffn.n_experts: {e} experts are not divisible by '
                        f'mesh.expert={cfg.mesh.expert}')
    router_check = router.ROUTERS[self.router].check
    if router_check is not None:  # the router kind's own fields (e.g. image_experts)
      router_check(self, cfg)
