"""The table of projection kinds: `model.linear.kind` -> the class `nn.layers.dense`
builds for every projection (attention, FFN, experts, heads, adapters).

A new quantizer is one file with a `Linear` subclass (its static `prepare` hook,
or its own `__call__`) plus one line here; `lattice.config` reads this table, so the
name needs no second list.
"""

from lattice.quant.linear import BitLinear, Linear, QuestLinear
from lattice.quant.nanoquant_linear import NanoQuantLinear
from lattice.quant.packed_linear import PackedBitLinear

LINEARS = {
    'float': Linear,
    'bitnet': BitLinear,
    'quest': QuestLinear,
    'bitnet_packed': PackedBitLinear,
    'nanoquant': NanoQuantLinear,
}
