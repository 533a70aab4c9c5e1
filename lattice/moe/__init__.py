"""lattice.moe: DeepSeek-style mixture of experts as an FFN kind.

Owns the MoE layer (`layer.MoE`: router, routed and shared experts, aux-loss-free
balancing), routing functions and balance losses (`router`), token dispatch
(dropless blocks / ragged, capacity; `dispatch`) and expert parallelism
(`parallel`). The trunk picks it as `model.ffn.kind='moe'` from its FFN table.
"""

from lattice.moe.layer import BIAS_COLLECTION
from lattice.moe.layer import MoE
