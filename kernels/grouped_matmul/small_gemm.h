// Products of one expert's block of rows on AVX-512, read in place: no packed copies of
// either operand and no pass that zeroes C first (what OpenBLAS's sgemm spends ~30% of
// the dropless MoE layer's kernel time on at ~128 rows an expert: its packing copies
// and its beta = 0 memset, perf on the 2-core Xeon, 3 Dec 2026).
//
// Shape legend: row-major float32; M, N the output's rows and columns, K the
// contraction; lda/ldb/ldc the row strides in floats. `accumulate` adds into C
// (sgemm's beta = 1), else C is overwritten (beta = 0).
//   GemmNN: C [M, N] (+)= A [M, K] B [K, N]
//   GemmNT: C [M, N] (+)= A [M, K] B [N, K]^T
//   GemmTN: C [M, N] (+)= A [K, M]^T B [K, N]
//
// How: NN and TN are outer products: a register tile of up to 12 rows x 32 columns
// (24 accumulators) takes each step's two 16-float vectors of B's row and broadcasts
// one element of A per row of the tile; B's 32-column strip (K x 128 bytes, K cut in
// blocks of 256) stays in L1 while the tile walks down the rows. NT is a dot-product
// form: a tile of 4 rows of A x 6 rows of B accumulates 16-float partial sums along K
// (both operands contiguous there), and a transpose-add tree turns each tile's 24
// vectors into its 24 sums. Tails are masked loads and stores, so any M, N, K works.
// Summation order differs from sgemm's (as sgemm's differs between its own kernels).
//
// Defined on x86-64 with GCC/Clang (LATTICE_SMALL_GEMM); callers check
// `SmallGemmAvailable()` (the CPU has AVX-512F) and otherwise use sgemm.

#ifndef LATTICE_KERNELS_GROUPED_MATMUL_SMALL_GEMM_H_
#define LATTICE_KERNELS_GROUPED_MATMUL_SMALL_GEMM_H_

#include <algorithm>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#define LATTICE_SMALL_GEMM 1
#include <immintrin.h>
#endif

namespace lattice_grouped {

inline bool SmallGemmAvailable() {
#ifdef LATTICE_SMALL_GEMM
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

}  // namespace lattice_grouped

#ifdef LATTICE_SMALL_GEMM
namespace lattice_grouped {

#define LATTICE_AVX512 __attribute__((target("avx512f,avx2,fma")))

namespace small_gemm {

constexpr int kNr = 32;    // columns of an outer-product tile (two vectors)
constexpr int kMr = 12;    // rows of an outer-product tile
constexpr int64_t kKc = 256;  // K block of the outer products (B strip K x 128 B in L1)

LATTICE_AVX512 inline __mmask16 Mask(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff)
                 : (n <= 0 ? static_cast<__mmask16>(0)
                           : static_cast<__mmask16>((1u << n) - 1));
}

// C tile [MR, 32 masked by m0/m1] (+)= sum over k < kc of a(r, k) * B[k, :], where a(r,
// k) = a[r * ar + k * ak] (NN: ar = lda, ak = 1; TN: ar = 1, ak = lda). kFull: all 32
// columns (unmasked loads); kPrefetch: also fetch the next strip's B row (the strip's
// first tile, so later strips come from cache, not memory at a 1 KB stride).
template <int MR, bool kFull, bool kPrefetch>
LATTICE_AVX512 inline void OuterTile(int64_t kc, const float* a, int64_t ar, int64_t ak,
                                     const float* b, int64_t ldb, float* c, int64_t ldc,
                                     bool load_c, __mmask16 m0, __mmask16 m1) {
  __m512 c0[MR], c1[MR];
  if (load_c) {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      c0[r] = kFull ? _mm512_loadu_ps(c + r * ldc) : _mm512_maskz_loadu_ps(m0, c + r * ldc);
      c1[r] = kFull ? _mm512_loadu_ps(c + r * ldc + 16)
                    : _mm512_maskz_loadu_ps(m1, c + r * ldc + 16);
    }
  } else {
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const float* bk = b + k * ldb;
    if (kPrefetch) {
      _mm_prefetch(reinterpret_cast<const char*>(bk + kNr), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(bk + kNr + 16), _MM_HINT_T0);
    }
    const __m512 b0 = kFull ? _mm512_loadu_ps(bk) : _mm512_maskz_loadu_ps(m0, bk);
    const __m512 b1 = kFull ? _mm512_loadu_ps(bk + 16) : _mm512_maskz_loadu_ps(m1, bk + 16);
    const float* ak_ = a + k * ak;
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(ak_[r * ar]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    if (kFull) {
      _mm512_storeu_ps(c + r * ldc, c0[r]);
      _mm512_storeu_ps(c + r * ldc + 16, c1[r]);
    } else {
      _mm512_mask_storeu_ps(c + r * ldc, m0, c0[r]);
      _mm512_mask_storeu_ps(c + r * ldc + 16, m1, c1[r]);
    }
  }
}

template <int MR, bool kFull>
LATTICE_AVX512 inline void OuterRows(int64_t m, int64_t kc, const float* a, int64_t ar,
                                     int64_t ak, const float* b, int64_t ldb, float* c,
                                     int64_t ldc, bool load_c, __mmask16 m0, __mmask16 m1,
                                     bool prefetch, int64_t* row) {
  for (; *row + MR <= m; *row += MR) {
    if (prefetch && *row == 0)
      OuterTile<MR, kFull, true>(kc, a, ar, ak, b, ldb, c, ldc, load_c, m0, m1);
    else
      OuterTile<MR, kFull, false>(kc, a + *row * ar, ar, ak, b, ldb, c + *row * ldc, ldc,
                                  load_c, m0, m1);
  }
}

template <bool kFull>
LATTICE_AVX512 inline void OuterStrip(int64_t m, int64_t kc, const float* a, int64_t ar,
                                      int64_t ak, const float* b, int64_t ldb, float* c,
                                      int64_t ldc, bool load_c, __mmask16 m0, __mmask16 m1,
                                      bool prefetch) {
  int64_t row = 0;
  OuterRows<kMr, kFull>(m, kc, a, ar, ak, b, ldb, c, ldc, load_c, m0, m1, prefetch, &row);
  OuterRows<8, kFull>(m, kc, a, ar, ak, b, ldb, c, ldc, load_c, m0, m1, prefetch, &row);
  OuterRows<4, kFull>(m, kc, a, ar, ak, b, ldb, c, ldc, load_c, m0, m1, prefetch, &row);
  OuterRows<2, kFull>(m, kc, a, ar, ak, b, ldb, c, ldc, load_c, m0, m1, prefetch, &row);
  OuterRows<1, kFull>(m, kc, a, ar, ak, b, ldb, c, ldc, load_c, m0, m1, prefetch, &row);
}

// The outer-product driver of NN (ar = lda, ak = 1) and TN (ar = 1, ak = lda).
LATTICE_AVX512 inline void Outer(int64_t m, int64_t n, int64_t k, const float* a, int64_t ar,
                                 int64_t ak, const float* b, int64_t ldb, float* c,
                                 int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.0f);
    return;
  }
  for (int64_t k0 = 0; k0 < k; k0 += kKc) {
    const int64_t kc = std::min(kKc, k - k0);
    const bool load_c = accumulate || k0 > 0;
    const float* ap = a + k0 * ak;
    const float* bp = b + k0 * ldb;
    for (int64_t j = 0; j < n; j += kNr) {
      const __mmask16 m0 = Mask(n - j), m1 = Mask(n - j - 16);
      const bool prefetch = j + 2 * kNr <= n;  // the next strip is a full one
      if (j + kNr <= n)
        OuterStrip<true>(m, kc, ap, ar, ak, bp + j, ldb, c + j, ldc, load_c, m0, m1, prefetch);
      else
        OuterStrip<false>(m, kc, ap, ar, ak, bp + j, ldb, c + j, ldc, load_c, m0, m1, false);
    }
  }
}

// out[j] lane i = rows[i] lane j: a 16 x 16 transpose in four shuffle stages.
LATTICE_AVX512 inline void Transpose16(const __m512* r, __m512* out) {
  __m512 t[16], u[16];
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
    const __m512 e01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    const __m512 o01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
    const __m512 e23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    const __m512 o23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
    out[c] = _mm512_shuffle_f32x4(e01, e23, 0x88);
    out[8 + c] = _mm512_shuffle_f32x4(e01, e23, 0xdd);
    out[4 + c] = _mm512_shuffle_f32x4(o01, o23, 0x88);
    out[12 + c] = _mm512_shuffle_f32x4(o01, o23, 0xdd);
  }
}

// buf [kc, 32] = B rows [nr <= 32, kc]^T (rows past nr as zeros).
LATTICE_AVX512 inline void TransposeStrip(const float* b, int64_t ldb, int64_t nr, int64_t kc,
                                          float* buf) {
  for (int h = 0; h < 2; ++h)
    for (int64_t k0 = 0; k0 < kc; k0 += 16) {
      const __mmask16 mk = Mask(kc - k0);
      __m512 rows[16], cols[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t row = 16 * h + i;
        rows[i] = row < nr ? _mm512_maskz_loadu_ps(mk, b + row * ldb + k0) : _mm512_setzero_ps();
      }
      Transpose16(rows, cols);
      const int64_t kn = std::min<int64_t>(16, kc - k0);
      for (int64_t i = 0; i < kn; ++i) _mm512_store_ps(buf + (k0 + i) * kNr + 16 * h, cols[i]);
    }
}

// buf [kc, 32] = B [kc, nr <= 32] (columns past nr as zeros).
LATTICE_AVX512 inline void CopyStrip(const float* b, int64_t ldb, int64_t nr, int64_t kc,
                                     float* buf) {
  const __mmask16 m0 = Mask(nr), m1 = Mask(nr - 16);
  for (int64_t k = 0; k < kc; ++k) {
    _mm512_store_ps(buf + k * kNr, _mm512_maskz_loadu_ps(m0, b + k * ldb));
    _mm512_store_ps(buf + k * kNr + 16, _mm512_maskz_loadu_ps(m1, b + k * ldb + 16));
  }
}

// The driver of all three forms: C [m, n] (+)= sum over k of a(r, k) B'[k, :] with a(r,
// k) = a[r * ar + k * ak]; each 32-column strip of B' (a block of <= 256 of its rows) is
// first put in an L1 buffer [kc, 32]: copied from B [k, n] (kTransposed false) or
// transposed from B [n, k] (true), so the tiles read it at a 128-byte stride (B's own
// stride, often 1 KB, maps its rows to a few L1 sets).
template <bool kTransposed>
LATTICE_AVX512 inline void Strips(int64_t m, int64_t n, int64_t k, const float* a, int64_t ar,
                                  int64_t ak, const float* b, int64_t ldb, float* c,
                                  int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.0f);
    return;
  }
  alignas(64) float buf[kKc * kNr];
  for (int64_t k0 = 0; k0 < k; k0 += kKc) {
    const int64_t kc = std::min(kKc, k - k0);
    const bool load_c = accumulate || k0 > 0;
    for (int64_t j = 0; j < n; j += kNr) {
      const int64_t nr = std::min<int64_t>(kNr, n - j);
      if (kTransposed)
        TransposeStrip(b + j * ldb + k0, ldb, nr, kc, buf);
      else
        CopyStrip(b + k0 * ldb + j, ldb, nr, kc, buf);
      const __mmask16 m0 = Mask(nr), m1 = Mask(nr - 16);
      if (nr == kNr)
        OuterStrip<true>(m, kc, a + k0 * ak, ar, ak, buf, kNr, c + j, ldc, load_c, m0, m1, false);
      else
        OuterStrip<false>(m, kc, a + k0 * ak, ar, ak, buf, kNr, c + j, ldc, load_c, m0, m1, false);
    }
  }
}

}  // namespace small_gemm

// C [M, N] (+)= A [M, K] B [K, N].
LATTICE_AVX512 inline void GemmNN(int64_t m, int64_t n, int64_t k, const float* a,
                                  int64_t lda, const float* b, int64_t ldb, float* c,
                                  int64_t ldc, bool accumulate) {
  small_gemm::Strips<false>(m, n, k, a, lda, 1, b, ldb, c, ldc, accumulate);
}

// C [M, N] (+)= A [K, M]^T B [K, N].
LATTICE_AVX512 inline void GemmTN(int64_t m, int64_t n, int64_t k, const float* a,
                                  int64_t lda, const float* b, int64_t ldb, float* c,
                                  int64_t ldc, bool accumulate) {
  small_gemm::Strips<false>(m, n, k, a, 1, lda, b, ldb, c, ldc, accumulate);
}

// C [M, N] (+)= A [M, K] B [N, K]^T.
LATTICE_AVX512 inline void GemmNT(int64_t m, int64_t n, int64_t k, const float* a,
                                  int64_t lda, const float* b, int64_t ldb, float* c,
                                  int64_t ldc, bool accumulate) {
  small_gemm::Strips<true>(m, n, k, a, lda, 1, b, ldb, c, ldc, accumulate);
}

#undef LATTICE_AVX512

}  // namespace lattice_grouped
#endif  // LATTICE_SMALL_GEMM

#endif  // LATTICE_KERNELS_GROUPED_MATMUL_SMALL_GEMM_H_
