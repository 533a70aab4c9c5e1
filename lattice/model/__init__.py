"""lattice.model: the one model factory, its loss, eval step and FLOP count.

Owns the composition: `make_model(cfg)` builds a single decoder from an input
stage (`multimodal.FRONTENDS`), the trunk (`nn.Transformer`: linear kind x FFN
kind) and an output stage (`mtp.HEADS`); `loss_fn` reads its named outputs;
`make_eval_step` / `summarize_eval` measure it; `train_flops_per_token` counts it.
Every combination of kinds composes; nothing here names a technique.
"""

from lattice.model.composed import Model
from lattice.model.composed import init_batch
from lattice.model.composed import make_model
from lattice.model.composed import n_drafts
from lattice.model.composed import trunk_name
from lattice.model.flops import train_flops_per_token
from lattice.model.loss import loss_fn
from lattice.model.loss import make_eval_step
from lattice.model.loss import summarize_eval

__all__ = ['Model', 'init_batch', 'loss_fn', 'make_eval_step', 'make_model', 'n_drafts',
           'summarize_eval', 'train_flops_per_token', 'trunk_name']
