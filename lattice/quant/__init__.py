"""lattice.quant: quantized training and post-training compression.

Owns the projection kinds (`lattice.quant.linears.LINEARS`: float, BitNet b1.58,
QuEST, packed ternary inference, NanoQuant) with each kind's own config fields
(`linear.Quest`, `nanoquant_linear.NanoQuant`), their straight-through and trust
quantizers, packing formats, the packed-inference export (`quant.inference`) and
NanoQuant's post-training compression (`quant.nanoquant`). Those two use the model
and are imported explicitly; importing this package registers nothing.
"""

from lattice.quant import packing
from lattice.quant.linear import BitLinear
from lattice.quant.linear import Linear
from lattice.quant.linear import QuestLinear
from lattice.quant.quest import fwht
from lattice.quant.quest import quest_quantize
from lattice.quant.quest import trust_quantize
from lattice.quant.ste import int8_activation
from lattice.quant.ste import int8_codes
from lattice.quant.ste import straight_through
from lattice.quant.ste import ternary_codes
from lattice.quant.ste import ternary_weight

__all__ = ['BitLinear', 'Linear', 'QuestLinear', 'fwht', 'int8_activation', 'int8_codes', 'packing',
           'quest_quantize', 'straight_through', 'ternary_codes', 'ternary_weight',
           'trust_quantize']
