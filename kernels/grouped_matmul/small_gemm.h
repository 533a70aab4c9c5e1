// Products of one expert's block of rows without sgemm's packing and zeroing passes.
// OpenBLAS's sgemm spent ~30% of the dropless MoE layer's kernel time on those at ~128
// rows an expert (its packing copies and its beta = 0 memset; perf of
// benchmarks/moe_layer.py at E = 32 on the 2-core Xeon, 3 Dec 2026). Used through
// `Products` (grouped_cpu.h) by moe_cpu.cc and grouped_cpu.cc.
//
// Shape legend: row-major float32; M, N the output's rows and columns, K the
// contraction; lda/ldb/ldc the row strides in floats. `accumulate` adds into C
// (sgemm's beta = 1), else C is overwritten (beta = 0). C must not alias A or B.
//   nn: C [M, N] (+)= A [M, K] B [K, N]
//   nt: C [M, N] (+)= A [M, K] B [N, K]^T
//   tn: C [M, N] (+)= A [K, M]^T B [K, N]
//
// How (small_gemm_impl.inc, compiled once for AVX2 + FMA and once for AVX-512F): every
// form is an outer product on a register tile of kMr rows x two vectors (AVX-512: 12 x
// 32, AVX2: 6 x 16; 2 kMr accumulators): each step loads the two vectors of one row of
// the right-hand operand and broadcasts one element of A per tile row. That operand's
// strip of two vectors' columns (a block of <= 256 of its rows) is first copied (nn,
// tn) or transposed in registers (nt) into an aligned L1 buffer, which every tile down
// the rows then reads: read in place at its own 1 KB stride, a strip's rows fall in a
// few L1 sets (the AVX-512 nn tile ran ~150 GFLOP/s that way vs ~175 from the buffer,
// one core, informal). The buffer (32 KB on AVX-512, 16 KB on AVX2) is sized for the
// 48 KB L1 of recent Xeons and EPYCs (a 128-row K block measured no faster there); on a
// 32 KB L1 it fills the cache. nn and nt read A in place (a tile's rows stream along K); tn's A
// is read down its columns, so it is first packed in blocks of kMr columns (one pass, a
// per-thread buffer of M x <= 256 floats). C is read only when accumulating. Tails are
// masked loads and stores, so any M, N, K works. Summation order differs from sgemm's
// (sgemm's differs between its own kernels too).
//
// Defined on x86-64 with GCC/Clang (LATTICE_SMALL_GEMM); `SmallGemmFor(isa)` returns the
// products of that instruction set (3 AVX-512F, 2 AVX2 + FMA), or nulls where the
// library or the CPU has neither: callers fall back to sgemm.

#ifndef LATTICE_KERNELS_GROUPED_MATMUL_SMALL_GEMM_H_
#define LATTICE_KERNELS_GROUPED_MATMUL_SMALL_GEMM_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#define LATTICE_SMALL_GEMM 1
#include <immintrin.h>
#endif

namespace lattice_grouped {

using GemmFn = void (*)(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                        const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate);

struct SmallGemm {
  GemmFn nn = nullptr, nt = nullptr, tn = nullptr;
  int isa = 0;  // 3 AVX-512F, 2 AVX2 + FMA, 0 none
};

// The best instruction set this CPU runs the products on (3, 2 or 0, as above).
inline int SmallGemmBestIsa() {
#ifdef LATTICE_SMALL_GEMM
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return 3;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
#endif
  return 0;
}

}  // namespace lattice_grouped

#ifdef LATTICE_SMALL_GEMM

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace lattice_grouped::small_gemm_avx2 {

using V = __m256;
using M = __m256i;
constexpr int kW = 8, kMr = 6;  // 12 accumulators of the 16 registers

inline V Zero() { return _mm256_setzero_ps(); }
inline V Load(const float* p) { return _mm256_load_ps(p); }
inline V LoadU(const float* p) { return _mm256_loadu_ps(p); }
inline M MaskOf(int64_t n) {
  const int32_t c = static_cast<int32_t>(std::max<int64_t>(0, std::min<int64_t>(kW, n)));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline V LoadMasked(M m, const float* p) { return _mm256_maskload_ps(p, m); }
inline void Store(float* p, V v) { _mm256_store_ps(p, v); }
inline void StoreU(float* p, V v) { _mm256_storeu_ps(p, v); }
inline void StoreMasked(M m, float* p, V v) { _mm256_maskstore_ps(p, m, v); }
inline V Bcast(const float* p) { return _mm256_broadcast_ss(p); }
inline V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }

// out[j] lane i = r[i] lane j (8 x 8).
inline void TransposeW(const V* r, V* out) {
  V t[8], s[8];
  for (int p = 0; p < 4; ++p) {
    t[2 * p] = _mm256_unpacklo_ps(r[2 * p], r[2 * p + 1]);
    t[2 * p + 1] = _mm256_unpackhi_ps(r[2 * p], r[2 * p + 1]);
  }
  // s[4q + c], 128-bit half H: column 4H + c of rows 4q..4q+3.
  for (int q = 0; q < 2; ++q) {
    s[4 * q] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * q + 1] = _mm256_shuffle_ps(t[4 * q], t[4 * q + 2], _MM_SHUFFLE(3, 2, 3, 2));
    s[4 * q + 2] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], _MM_SHUFFLE(1, 0, 1, 0));
    s[4 * q + 3] = _mm256_shuffle_ps(t[4 * q + 1], t[4 * q + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int c = 0; c < 4; ++c) {
    out[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
    out[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
  }
}

#include "small_gemm_impl.inc"

}  // namespace lattice_grouped::small_gemm_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
namespace lattice_grouped::small_gemm_avx512 {

using V = __m512;
using M = __mmask16;
constexpr int kW = 16, kMr = 12;  // 24 accumulators of the 32 registers

inline V Zero() { return _mm512_setzero_ps(); }
inline V Load(const float* p) { return _mm512_load_ps(p); }
inline V LoadU(const float* p) { return _mm512_loadu_ps(p); }
inline M MaskOf(int64_t n) {
  return n >= kW ? static_cast<M>(0xffff)
                 : (n <= 0 ? static_cast<M>(0) : static_cast<M>((1u << n) - 1));
}
inline V LoadMasked(M m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
inline void Store(float* p, V v) { _mm512_store_ps(p, v); }
inline void StoreU(float* p, V v) { _mm512_storeu_ps(p, v); }
inline void StoreMasked(M m, float* p, V v) { _mm512_mask_storeu_ps(p, m, v); }
inline V Bcast(const float* p) { return _mm512_set1_ps(*p); }
inline V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }

// out[j] lane i = r[i] lane j (16 x 16), in four shuffle stages.
inline void TransposeW(const V* r, V* out) {
  V t[16], u[16];
  for (int p = 0; p < 8; ++p) {
    t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
    t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
  }
  // u[4q + c], 128-bit lane L: column 4L + c of rows 4q..4q+3.
  for (int q = 0; q < 4; ++q) {
    const __m512d t0 = _mm512_castps_pd(t[4 * q]), t1 = _mm512_castps_pd(t[4 * q + 1]),
                  t2 = _mm512_castps_pd(t[4 * q + 2]), t3 = _mm512_castps_pd(t[4 * q + 3]);
    u[4 * q] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * q + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * q + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * q + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int c = 0; c < 4; ++c) {
    const V e01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    const V o01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
    const V e23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const V o23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
    out[c] = _mm512_shuffle_f32x4(e01, e23, 0x88);
    out[8 + c] = _mm512_shuffle_f32x4(e01, e23, 0xdd);
    out[4 + c] = _mm512_shuffle_f32x4(o01, o23, 0x88);
    out[12 + c] = _mm512_shuffle_f32x4(o01, o23, 0xdd);
  }
}

#include "small_gemm_impl.inc"

}  // namespace lattice_grouped::small_gemm_avx512
#pragma GCC pop_options

#endif  // LATTICE_SMALL_GEMM

namespace lattice_grouped {

// The products of instruction set `isa` (3 AVX-512F, 2 AVX2 + FMA), capped at what this
// CPU runs; nulls (isa 0) where neither is available.
inline SmallGemm SmallGemmFor(int isa) {
  SmallGemm g;
#ifdef LATTICE_SMALL_GEMM
  isa = std::min(isa, SmallGemmBestIsa());
  if (isa >= 3) {
    g = {small_gemm_avx512::GemmNN, small_gemm_avx512::GemmNT, small_gemm_avx512::GemmTN, 3};
  } else if (isa == 2) {
    g = {small_gemm_avx2::GemmNN, small_gemm_avx2::GemmNT, small_gemm_avx2::GemmTN, 2};
  }
#endif
  return g;
}

}  // namespace lattice_grouped

#endif  // LATTICE_KERNELS_GROUPED_MATMUL_SMALL_GEMM_H_
