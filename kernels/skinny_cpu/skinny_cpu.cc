// float32 skinny matmul y = x . w for a few rows (decoding), called from JAX through
// the XLA FFI.
//
// Shape legend: M rows (tokens; decoding: 1 for a plain step, L = K + 1 for a
// speculative verification forward), K contracted features, N output features.
//   x  float32 [M, K]
//   w  float32 [K, N]   row-major, as flax stores a Dense kernel (no packing)
//   y  float32 [M, N]
//
// Why: at decode sizes XLA:CPU sends a one-row dot to its matrix-vector routine but a
// 2..8-row dot to a GEMM library that packs the weight panel first, so a 4-row
// product costs ~2x a one-row one even where both should be bound by reading the
// weights once (measured: benchmarks/speculative_decode). This kernel streams each
// 64-column panel of w once and keeps up to 4 rows' accumulators in registers, so a
// 4-row product reads w as often as a one-row product does.
//
// Row independence: y[m, n] is always sum_k x[m, k] * w[k, n] accumulated with one
// fused multiply-add per k in increasing k, whatever M is and whichever rows share a
// panel pass, so a row's result is bitwise the same in a one-row call and in an
// L-row call. Self-speculative decoding relies on this: its verification forward and
// plain decoding then compute identical logits, not merely close ones.
//
// Layouts: w row-major [K, N] (LatticeSkinnyMatmul), or packed [N / 64, K, 64]
// (LatticeSkinnyMatmulPacked; ops.pack, made once per model by
// lattice.decode.packed_weights), where each 64-column panel is one contiguous stream;
// both run the same multiply-adds in the same order, so they give the same bits.
//
// Columns are split into chunks run on XLA's intra-op thread pool (kernels/column_chunks.h,
// shared with kernels/ternary_cpu). Instruction set: AVX-512F, else AVX2 + FMA, else portable
// C++ (std::fma, the same rounding), chosen at run time from CPUID or forced by the
// `isa` attribute (tests check every path on one machine).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "../column_chunks.h"
#include "isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LATTICE_X86 1
#endif

namespace ffi = xla::ffi;

namespace {

using namespace lattice_skinny;  // the Isa codes, Supports and BestIsa (isa.h)

// Panel width of the packed weight layout: w [N / 64, K, 64], each 64-column panel
// contiguous (ops.pack), so a panel streams through memory in order instead of 256
// bytes per k at a stride of N floats.
constexpr int64_t kPackWidth = 64;

struct Problem {
  const float* x;  // [M, K]
  const float* w;  // [K, N] row-major, or packed [N / 64, K, 64]
  int64_t m, k, n;
  float* y;        // [M, N]
  bool packed = false;

  // w[0, j]; the next k is `Ldw()` floats further on.
  const float* Col(int64_t j) const {
    return packed ? w + (j / kPackWidth) * k * kPackWidth + j % kPackWidth : w + j;
  }
  int64_t Ldw() const { return packed ? kPackWidth : n; }
};

// Columns [n0, n1) of rows [r0, r0 + rows), one column at a time (tails, scalar path).
void ColumnsScalar(const Problem& p, int64_t r0, int64_t rows, int64_t n0, int64_t n1) {
  const int64_t ldw = p.Ldw();
  for (int64_t r = r0; r < r0 + rows; ++r)
    for (int64_t j = n0; j < n1; ++j) {
      const float* w = p.Col(j);
      float acc = 0.0f;
      for (int64_t kk = 0; kk < p.k; ++kk)
        acc = std::fma(p.x[r * p.k + kk], w[kk * ldw], acc);
      p.y[r * p.n + j] = acc;
    }
}

#ifdef LATTICE_X86
// ROWS rows x 4 vectors of 16 columns: 4 * ROWS accumulators stay in registers while
// the panel w[:, n0:n0+64] streams past once (rows of w read 256 bytes at a time).
// PACKED: the panel is contiguous (w [N / 64, K, 64]); it is prefetched 64 k ahead
// (16 KB), and for several rows the four weight vectors are pinned in registers:
// otherwise the compiler folds each load into every row's multiply-add, so a 2-row
// call issued twice the loads of a 1-row call (2-row over 1-row time 1.23 -> 1.08 on
// the 256 x 704 projection, streaming from L3/DRAM, one thread; 1.14 with the weights
// in L2, was 1.56). The order of the multiply-adds is the same in both layouts.
template <int ROWS, bool PACKED = false>
__attribute__((target("avx512f"))) void Panel512(const Problem& p, int64_t r0,
                                                 int64_t n0) {
  __m512 acc[ROWS][4];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < 4; ++v) acc[r][v] = _mm512_setzero_ps();
  const int64_t ldw = PACKED ? kPackWidth : p.n, ahead = (PACKED ? 64 : 8) * ldw;
  const float* w = p.Col(n0);
  for (int64_t kk = 0; kk < p.k; ++kk, w += ldw) {
    _mm_prefetch(reinterpret_cast<const char*>(w + ahead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + ahead + 16), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + ahead + 32), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + ahead + 48), _MM_HINT_T0);
    __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16),
           w2 = _mm512_loadu_ps(w + 32), w3 = _mm512_loadu_ps(w + 48);
#if defined(__GNUC__)
    if (PACKED && ROWS > 1) asm volatile("" : "+v"(w0), "+v"(w1), "+v"(w2), "+v"(w3));
#endif
    for (int r = 0; r < ROWS; ++r) {
      const __m512 xv = _mm512_set1_ps(p.x[(r0 + r) * p.k + kk]);
      acc[r][0] = _mm512_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(xv, w1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(xv, w2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(xv, w3, acc[r][3]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    float* y = p.y + (r0 + r) * p.n + n0;
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(y + 16 * v, acc[r][v]);
  }
}

// ROWS rows x VECS vectors of 8 columns (AVX2 has 16 registers: ROWS * VECS
// accumulators, the VECS weight vectors and a broadcast). PACKED: as Panel512's, the
// panel's rows are contiguous and prefetched 64 k ahead, and for several rows the
// weight vectors are pinned in registers, so each is loaded once per k rather than
// once per row (a 2-row call was 1.35-1.42x a 1-row call's time with 16-column
// passes and the loads folded into every row's multiply-add: 96 MB of packed weights
// streaming from DRAM, 2 threads, AMD EPYC Zen 1, 1 Dec; see WidePanel256).
template <int ROWS, int VECS = 2, bool PACKED = false>
__attribute__((target("avx2,fma"))) void Panel256(const Problem& p, int64_t r0,
                                                  int64_t n0) {
  __m256 acc[ROWS][VECS];
  for (int r = 0; r < ROWS; ++r)
    for (int v = 0; v < VECS; ++v) acc[r][v] = _mm256_setzero_ps();
  const int64_t ldw = p.Ldw();
  const float* w = p.Col(n0);  // <= 32 columns never straddle a packed 64-column panel
  for (int64_t kk = 0; kk < p.k; ++kk, w += ldw) {
    if (PACKED) {
      _mm_prefetch(reinterpret_cast<const char*>(w + 64 * ldw), _MM_HINT_T0);
      if (VECS > 2) _mm_prefetch(reinterpret_cast<const char*>(w + 64 * ldw + 16), _MM_HINT_T0);
    }
    __m256 wv[VECS];
    for (int v = 0; v < VECS; ++v) wv[v] = _mm256_loadu_ps(w + 8 * v);
#if defined(__GNUC__)
    if (PACKED && ROWS > 1) {
      if (VECS == 4) asm volatile("" : "+x"(wv[0]), "+x"(wv[1]), "+x"(wv[2]), "+x"(wv[3]));
      else asm volatile("" : "+x"(wv[0]), "+x"(wv[1]));
    }
#endif
    for (int r = 0; r < ROWS; ++r) {
      const __m256 xv = _mm256_set1_ps(p.x[(r0 + r) * p.k + kk]);
      for (int v = 0; v < VECS; ++v) acc[r][v] = _mm256_fmadd_ps(xv, wv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < ROWS; ++r) {
    float* y = p.y + (r0 + r) * p.n + n0;
    for (int v = 0; v < VECS; ++v) _mm256_storeu_ps(y + 8 * v, acc[r][v]);
  }
}

// 32 packed columns for ROWS rows: one 32-column pass for 1-2 rows (8 accumulators at
// most), two 16-column passes for 3-4 (the registers hold 2 x 4 accumulators, not 4 x
// 4). Each output is the same multiply-add chain either way.
template <int ROWS>
__attribute__((target("avx2,fma"))) void WidePanel256(const Problem& p, int64_t r0,
                                                      int64_t n0) {
  if (ROWS <= 2) {
    Panel256<ROWS, 4, true>(p, r0, n0);
  } else {
    Panel256<ROWS, 2, true>(p, r0, n0);
    Panel256<ROWS, 2, true>(p, r0, n0 + 16);
  }
}

// Whole panels of WIDTH columns in [n0, n1), rows four at a time; returns the first
// column not done.
template <int WIDTH, void (*P1)(const Problem&, int64_t, int64_t),
          void (*P2)(const Problem&, int64_t, int64_t),
          void (*P3)(const Problem&, int64_t, int64_t),
          void (*P4)(const Problem&, int64_t, int64_t)>
int64_t Panels(const Problem& p, int64_t n0, int64_t n1) {
  int64_t j = n0;
  for (; j + WIDTH <= n1; j += WIDTH) {
    int64_t r = 0;
    for (; r + 4 <= p.m; r += 4) P4(p, r, j);
    if (p.m - r == 3) P3(p, r, j);
    if (p.m - r == 2) P2(p, r, j);
    if (p.m - r == 1) P1(p, r, j);
  }
  return j;
}
#endif

// Columns [n0, n1) of every row: whole panels with the vector path, the rest scalar
// (std::fma in the same order, so the rounding is the same).
void Columns(int32_t isa, const Problem& p, int64_t n0, int64_t n1) {
  int64_t j = n0;
#ifdef LATTICE_X86
  if (isa == kAvx512 && p.packed)
    j = Panels<64, Panel512<1, true>, Panel512<2, true>, Panel512<3, true>,
               Panel512<4, true>>(p, n0, n1);
  else if (isa == kAvx512)
    j = Panels<64, Panel512<1>, Panel512<2>, Panel512<3>, Panel512<4>>(p, n0, n1);
  else if (isa == kAvx2 && p.packed)
    j = Panels<32, WidePanel256<1>, WidePanel256<2>, WidePanel256<3>, WidePanel256<4>>(p, n0,
                                                                                       n1);
  else if (isa == kAvx2)
    j = Panels<16, Panel256<1>, Panel256<2>, Panel256<3>, Panel256<4>>(p, n0, n1);
#endif
  if (j < n1) ColumnsScalar(p, 0, p.m, j, n1);
}

// Below this many weight bytes a call runs on the caller alone: handing work to the
// pool costs a few microseconds, more than reading a small panel.
constexpr int64_t kParallelMinBytes = 1 << 18;

// One [M, K] x [K, N] product (one batch entry).
void Product(ffi::ThreadPool& pool, int32_t isa, const Problem& problem) {
  // Two chunks of whole 64-column panels per thread.
  lattice::ParallelColumns(pool, problem.n, 64, 2, problem.k * problem.n * 4 >= kParallelMinBytes,
                           [&](int64_t n0, int64_t n1) { Columns(isa, problem, n0, n1); });
}

// x [M, K] . w [K, N], or a batch of them: x [H, M, K] . w [H, K, N] (the draft heads
// of self-speculative decoding, each its own weights, as ops.py's vmap rule makes).
ffi::Error SkinnyMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                        ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
                        int32_t isa) {
  const auto xd = x.dimensions(), wd = w.dimensions();
  const size_t r = xd.size();
  if ((r != 2 && r != 3) || wd.size() != r || xd[r - 1] != wd[r - 2] ||
      (r == 3 && xd[0] != wd[0]))
    return ffi::Error::InvalidArgument(
        "lattice_skinny_matmul: want x float32 [M, K], w [K, N] (or [H, M, K], [H, K, N])");
  if (isa == kAuto) isa = BestIsa();
  if (!Supports(isa))
    return ffi::Error::InvalidArgument(
        "lattice_skinny_matmul: isa " + std::to_string(isa) + " is not supported by this CPU");
  const int64_t h = r == 3 ? xd[0] : 1, m = xd[r - 2], k = xd[r - 1], n = wd[r - 1];
  if (y->element_count() != h * m * n)
    return ffi::Error::InvalidArgument("lattice_skinny_matmul: y must be [H, M, N]");
  if (m == 0 || n == 0) return ffi::Error::Success();
  for (int64_t b = 0; b < h; ++b)
    Product(pool, isa, Problem{x.typed_data() + b * m * k, w.typed_data() + b * k * n,
                               m, k, n, y->typed_data() + b * m * n});
  return ffi::Error::Success();
}

// x [M, K] . w for w packed [N / 64, K, 64] (ops.pack), or a batch of them:
// x [H, M, K], w [H, N / 64, K, 64]. Every output is the same chain of multiply-adds
// as SkinnyMatmul's on the unpacked w, so both give the same bits.
ffi::Error SkinnyMatmulPacked(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                              ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y,
                              int32_t isa) {
  const auto xd = x.dimensions(), wd = w.dimensions();
  const size_t r = xd.size();
  if ((r != 2 && r != 3) || wd.size() != r + 1 || wd[r] != kPackWidth ||
      xd[r - 1] != wd[r - 1] || (r == 3 && xd[0] != wd[0]))
    return ffi::Error::InvalidArgument(
        "lattice_skinny_matmul_packed: want x float32 [M, K], w [N / 64, K, 64] (or "
        "[H, M, K], [H, N / 64, K, 64])");
  if (isa == kAuto) isa = BestIsa();
  if (!Supports(isa))
    return ffi::Error::InvalidArgument("lattice_skinny_matmul_packed: isa " +
                                       std::to_string(isa) + " is not supported by this CPU");
  const int64_t h = r == 3 ? xd[0] : 1, m = xd[r - 2], k = xd[r - 1],
                n = wd[r - 2] * kPackWidth;
  if (y->element_count() != h * m * n)
    return ffi::Error::InvalidArgument("lattice_skinny_matmul_packed: y must be [H, M, N]");
  if (m == 0 || n == 0) return ffi::Error::Success();
  for (int64_t b = 0; b < h; ++b)
    Product(pool, isa, Problem{x.typed_data() + b * m * k, w.typed_data() + b * k * n,
                               m, k, n, y->typed_data() + b * m * n, /*packed=*/true});
  return ffi::Error::Success();
}

}  // namespace

// Both entry points take (pool; x, w; y; isa).
#define LATTICE_SKINNY_BINDING                         \
  ffi::Ffi::Bind()                                     \
      .Ctx<ffi::ThreadPool>()                          \
      .Arg<ffi::Buffer<ffi::F32>>()                    \
      .Arg<ffi::Buffer<ffi::F32>>()                    \
      .Ret<ffi::Buffer<ffi::F32>>()                    \
      .Attr<int32_t>("isa")

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeSkinnyMatmul, SkinnyMatmul, LATTICE_SKINNY_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeSkinnyMatmulPacked, SkinnyMatmulPacked,
                              LATTICE_SKINNY_BINDING);

// Plain C queries for Python (ctypes). Codes: 1 portable C++, 2 AVX2 + FMA, 3 AVX-512F.
extern "C" int32_t LatticeSkinnyBestIsa() { return BestIsa(); }
extern "C" int32_t LatticeSkinnySupports(int32_t isa) { return Supports(isa) ? 1 : 0; }
