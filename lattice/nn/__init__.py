"""lattice.nn: the Llama-style decoder and the Dense factory every projection uses."""

from lattice.nn.layers import dense
from lattice.nn.layers import register_linear
from lattice.nn.mlp import register_ffn
from lattice.nn.transformer import Transformer
from lattice.nn.transformer import init_cache
