"""The table of FFN kinds: `model.ffn.kind` -> the module every block builds.

Each entry is called as `ffn(cfg=model_cfg, name='ffn')(x_BxLxD[, modality_BxL])`.
A kind with fields of its own declares them as a frozen dataclass in its class
attribute `options` (e.g. `moe.layer.MoE.options = moe.options.MoEOptions`);
`lattice.config` adds them to `model.ffn` and checks them once at config build.
A new FFN is one file plus one line here.
"""

from lattice.moe import layer as moe_layer
from lattice.nn import mlp

FFNS = {
    'dense': mlp.MLP,
    'moe': moe_layer.MoE,
}
