// The instruction sets of kernels/skinny_cpu (skinny_cpu.cc and attention_cpu.cc):
// the codes of their `isa` FFI attribute and the CPUID checks behind them.

#ifndef LATTICE_KERNELS_SKINNY_CPU_ISA_H_
#define LATTICE_KERNELS_SKINNY_CPU_ISA_H_

#include <cstdint>

namespace lattice_skinny {

// 0 the best this CPU runs, 1 portable C++, 2 AVX2 + FMA, 3 AVX-512F.
enum Isa : int32_t { kAuto = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3 };

inline bool Supports(int32_t isa) {
  if (isa == kScalar) return true;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (isa == kAvx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (isa == kAvx512) return __builtin_cpu_supports("avx512f");
#endif
  return false;
}

inline int32_t BestIsa() {
  if (Supports(kAvx512)) return kAvx512;
  if (Supports(kAvx2)) return kAvx2;
  return kScalar;
}

}  // namespace lattice_skinny

#endif  // LATTICE_KERNELS_SKINNY_CPU_ISA_H_
