"""lattice.moe: DeepSeek-style mixture of experts (importing it registers ffn kind 'moe')."""

from lattice.moe.layer import MoE
from lattice.moe.layer import BIAS_COLLECTION
