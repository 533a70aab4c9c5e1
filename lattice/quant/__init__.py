"""lattice.quant: BitNet b1.58 and QuEST quantized training (importing it registers
`model.linear.kind` values 'bitnet' and 'quest')."""

from lattice.quant import packing
from lattice.quant.linear import BitLinear
from lattice.quant.linear import QuestLinear
from lattice.quant.quest import fwht
from lattice.quant.quest import quest_quantize
from lattice.quant.quest import trust_quantize
from lattice.quant.ste import int8_activation
from lattice.quant.ste import int8_codes
from lattice.quant.ste import straight_through
from lattice.quant.ste import ternary_codes
from lattice.quant.ste import ternary_weight
from lattice.quant import inference  # registers model.linear.kind 'bitnet_packed'
from lattice.quant import nanoquant  # registers model.linear.kind 'nanoquant'
