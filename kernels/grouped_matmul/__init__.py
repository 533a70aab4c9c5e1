"""Grouped (ragged) matmul for dropless MoE: a native CPU kernel (per-expert products on
its own AVX-512 code, `small_gemm.h`, or OpenBLAS; XLA FFI), batched windows, tile
loops, reference; on CPU also the MoE layer's fused SwiGLU experts (`moe.moe_swiglu`) and the row moves, sort and top-k around them
(`permute`)."""

from kernels.grouped_matmul.ffn import grouped_ffn
from kernels.grouped_matmul.ops import grouped_matmul
from kernels.grouped_matmul.reference import (grouped_ffn_reference,
                                               grouped_matmul_reference)

__all__ = ['grouped_ffn', 'grouped_ffn_reference', 'grouped_matmul',
           'grouped_matmul_reference']
