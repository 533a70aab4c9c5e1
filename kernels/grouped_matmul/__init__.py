"""Grouped (ragged) matmul for dropless MoE: XLA tile loops, custom VJP, reference."""

from kernels.grouped_matmul.ops import grouped_matmul
from kernels.grouped_matmul.reference import grouped_matmul_reference

__all__ = ['grouped_matmul', 'grouped_matmul_reference']
