"""Native CPU kernel (C++, AVX2 / AVX-512 VNNI) for int8 x 2-bit ternary matmul."""

from kernels.ternary_cpu.ops import available, best_isa, supports, ternary_matmul_cpu

__all__ = ['available', 'best_isa', 'supports', 'ternary_matmul_cpu']
