"""int8 x 2-bit ternary matmul (BitNet b1.58 inference): Pallas kernels, ops, reference."""

from kernels.ternary_matmul.kernel import ternary_gemv_pallas, ternary_matmul_pallas
from kernels.ternary_matmul.ops import (cpu_auto, cpu_path, pack_weight,
                                        quantize_activation, ternary_matmul)
from kernels.ternary_matmul.reference import ternary_matmul_reference, unpack_weight

__all__ = ['cpu_auto', 'cpu_path', 'pack_weight', 'quantize_activation', 'ternary_gemv_pallas',
           'ternary_matmul', 'ternary_matmul_pallas', 'ternary_matmul_reference', 'unpack_weight']
