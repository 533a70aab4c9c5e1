// int8 x 2-bit ternary matmul on CPU, called from JAX through the XLA FFI.
//
// Shape legend: M tokens, K contracted features, N output features, Kq = ceil(K/4)
// packed rows. Operands and result are those of kernels/ternary_matmul/reference.py:
//   x      int8    [M, K]   activation codes (x ~= x_q / sx, per-token absmax)
//   sx     float32 [M, 1]   activation scales
//   w      uint8   [Kq, N]  byte [g, n] holds w[4g + i, n] + 1 in bits 2i..2i+1
//   sw     float32 []       weight scale (w ~= w_t / sw)
//   y      float32 [M, N]   y = (x_q @ w_t) / (sx * sw)
//
// Method (bitnet.cpp's I2_S idea, arXiv 2410.16144, with the madd dot of its x86
// kernels): a packed byte already holds 4 consecutive K rows of one column, which is
// exactly the 4-byte group that VPDPBUSD (AVX-512 VNNI) or VPMADDUBSW + VPMADDWD
// (AVX2) sums. So each byte is spread into the four bytes of a 32-bit lane, as the
// unsigned digits d = code + 1 in {0, 1, 2}, and dotted with the 4 int8 activations of
// that K group broadcast to every lane. Digits are unsigned (as the instructions
// want); the +1 offset is removed once per row: sum_k code*x = sum_k d*x - sum_k x.
// The int32 sum is exact, and y = float(acc) * (1 / (sx * sw)) matches reference.py
// as XLA compiles it bit for bit (same float32 ops; built with -ffp-contract=off).
//
// Columns are split into chunks run on XLA's intra-op thread pool (the caller takes
// chunks too, so nothing waits on a pool that is busy). Instruction set: chosen at run
// time from CPUID (AVX-512 F/BW/VNNI/VBMI, else AVX2, else portable C++), or forced by
// the `isa` attribute (tests use it to check every path on one machine).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "../column_chunks.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LATTICE_X86 1
#endif

namespace ffi = xla::ffi;

namespace {

enum Isa : int32_t { kAuto = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3 };

// Everything one call needs; xpad rows are K padded with zeros to 4 * Kq.
struct Problem {
  const int8_t* xpad;    // [M, 4 Kq]
  const int32_t* sumx;   // [M]
  const float* scale;    // [M]: 1 / (sx * sw)
  const uint8_t* w;      // [Kq, N]
  int64_t m, kq, n;
  float* y;              // [M, N]
};

// `inv` is 1 / (sx * sw): XLA computes the reference's division by a broadcast scale as
// a multiply by its reciprocal, and so does this kernel, so the two agree bit for bit.
inline float Finish(int32_t acc, int32_t sumx, float inv) {
  return static_cast<float>(acc - sumx) * inv;
}

void ColumnsScalar(const Problem& p, int64_t n0, int64_t n1) {
  for (int64_t r = 0; r < p.m; ++r) {
    const int8_t* x = p.xpad + r * 4 * p.kq;
    for (int64_t c = n0; c < n1; ++c) {
      int32_t acc = 0;
      for (int64_t g = 0; g < p.kq; ++g) {
        const uint32_t b = p.w[g * p.n + c];
        acc += static_cast<int32_t>(b & 3) * x[4 * g] +
               static_cast<int32_t>((b >> 2) & 3) * x[4 * g + 1] +
               static_cast<int32_t>((b >> 4) & 3) * x[4 * g + 2] +
               static_cast<int32_t>((b >> 6) & 3) * x[4 * g + 3];
      }
      p.y[r * p.n + c] = Finish(acc, p.sumx[r], p.scale[r]);
    }
  }
}

#ifdef LATTICE_X86

// ---- AVX2: 8 columns per ymm, 32 per step; int16 partial sums for up to 63 groups.

__attribute__((target("avx2"))) inline __m256i Digits8(const uint8_t* src) {
  // 8 bytes -> 8 lanes of 4 digit bytes: lane = b | b<<6 | b<<12 | b<<18, & 0x03030303.
  __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src)));
  __m256i t = _mm256_or_si256(_mm256_or_si256(b, _mm256_slli_epi32(b, 6)),
                              _mm256_or_si256(_mm256_slli_epi32(b, 12),
                                              _mm256_slli_epi32(b, 18)));
  return _mm256_and_si256(t, _mm256_set1_epi32(0x03030303));
}

__attribute__((target("avx2"))) void ColumnsAvx2(const Problem& p, int64_t n0,
                                                 int64_t n1) {
  // |pair sum| <= 2 * 2 * 128 = 512, so 63 groups stay below 2^15 in int16.
  constexpr int64_t kGroups16 = 63;
  const __m256i ones = _mm256_set1_epi16(1);
  int64_t c = n0;
  for (; c + 32 <= n1; c += 32) {
    for (int64_t r = 0; r < p.m; ++r) {
      const int32_t* x4 = reinterpret_cast<const int32_t*>(p.xpad + r * 4 * p.kq);
      __m256i acc[4];
      for (auto& a : acc) a = _mm256_setzero_si256();
      for (int64_t g0 = 0; g0 < p.kq; g0 += kGroups16) {
        const int64_t g1 = std::min(p.kq, g0 + kGroups16);
        __m256i part[4];
        for (auto& a : part) a = _mm256_setzero_si256();
        for (int64_t g = g0; g < g1; ++g) {
          const __m256i xb = _mm256_set1_epi32(x4[g]);
          const uint8_t* row = p.w + g * p.n + c;
          for (int j = 0; j < 4; ++j)
            part[j] = _mm256_add_epi16(part[j],
                                       _mm256_maddubs_epi16(Digits8(row + 8 * j), xb));
        }
        for (int j = 0; j < 4; ++j)
          acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(part[j], ones));
      }
      alignas(32) int32_t out[32];
      for (int j = 0; j < 4; ++j)
        _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8 * j), acc[j]);
      for (int j = 0; j < 32; ++j)
        p.y[r * p.n + c + j] = Finish(out[j], p.sumx[r], p.scale[r]);
    }
  }
  if (c < n1) ColumnsScalar(p, c, n1);
}

// ---- AVX-512 VNNI + VBMI: 16 columns per zmm, 64 (one cache line) per step, up to
// 4 token rows share each spread weight vector.

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi"))) inline __m512i
Digits16(const uint8_t* src) {
  // 16 bytes -> 8 qwords holding 2 bytes each; VPMULTISHIFTQB picks bits 2i.. of the
  // qword into byte i, so lane 2j gets column 2j's 4 digits and lane 2j+1 column 2j+1's.
  const __m512i ctrl = _mm512_set1_epi64(0x0E0C0A0806040200LL);
  __m512i q = _mm512_cvtepu16_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  return _mm512_and_si512(_mm512_multishift_epi64_epi8(ctrl, q), _mm512_set1_epi8(3));
}

template <int R>
__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi"))) void Block512(
    const Problem& p, int64_t r0, int64_t c) {
  __m512i acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_si512();
  const int32_t* x4[R];
  for (int r = 0; r < R; ++r)
    x4[r] = reinterpret_cast<const int32_t*>(p.xpad + (r0 + r) * 4 * p.kq);
  for (int64_t g = 0; g < p.kq; ++g) {
    const uint8_t* row = p.w + g * p.n + c;
    __m512i d[4];
    for (int j = 0; j < 4; ++j) d[j] = Digits16(row + 16 * j);
    for (int r = 0; r < R; ++r) {
      const __m512i xb = _mm512_set1_epi32(x4[r][g]);
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], d[j], xb);
    }
  }
  for (int r = 0; r < R; ++r) {
    alignas(64) int32_t out[64];
    for (int j = 0; j < 4; ++j) _mm512_store_si512(out + 16 * j, acc[r][j]);
    const int64_t row = r0 + r;
    for (int j = 0; j < 64; ++j)
      p.y[row * p.n + c + j] = Finish(out[j], p.sumx[row], p.scale[row]);
  }
}

__attribute__((target("avx512f,avx512bw,avx512vnni,avx512vbmi"))) void ColumnsAvx512(
    const Problem& p, int64_t n0, int64_t n1) {
  int64_t c = n0;
  for (; c + 64 <= n1; c += 64) {
    int64_t r = 0;
    for (; r + 4 <= p.m; r += 4) Block512<4>(p, r, c);
    for (; r < p.m; ++r) Block512<1>(p, r, c);
  }
  if (c < n1) ColumnsAvx2(p, c, n1);
}

bool Supports(int32_t isa) {
  __builtin_cpu_init();
  if (isa == kAvx512)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vbmi");
  if (isa == kAvx2) return __builtin_cpu_supports("avx2");
  return isa == kScalar;
}

#else

bool Supports(int32_t isa) { return isa == kScalar; }

#endif  // LATTICE_X86

int32_t BestIsa() {
  for (int32_t isa : {kAvx512, kAvx2})
    if (Supports(isa)) return isa;
  return kScalar;
}

void Columns(int32_t isa, const Problem& p, int64_t n0, int64_t n1) {
#ifdef LATTICE_X86
  if (isa == kAvx512) return ColumnsAvx512(p, n0, n1);
  if (isa == kAvx2) return ColumnsAvx2(p, n0, n1);
#endif
  ColumnsScalar(p, n0, n1);
}

// Below this many weight bytes x rows a call runs on the caller alone: handing work
// to the pool costs a few microseconds.
constexpr int64_t kParallelMinBytes = 1 << 16;

ffi::Error TernaryMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::S8> x,
                         ffi::Buffer<ffi::F32> sx, ffi::Buffer<ffi::U8> w,
                         ffi::Buffer<ffi::F32> sw, ffi::ResultBuffer<ffi::F32> y,
                         int32_t isa) {
  const auto xd = x.dimensions(), wd = w.dimensions();
  if (xd.size() != 2 || wd.size() != 2 || sx.element_count() != xd[0] ||
      sw.element_count() != 1 || wd[0] != (xd[1] + 3) / 4 ||
      y->element_count() != xd[0] * wd[1])
    return ffi::Error::InvalidArgument(
        "lattice_ternary_matmul: want x int8 [M, K], sx [M, 1], w uint8 [ceil(K/4), N], "
        "sw [], y [M, N]");
  if (isa == kAuto) isa = BestIsa();
  if (!Supports(isa))
    return ffi::Error::InvalidArgument(
        "lattice_ternary_matmul: isa " + std::to_string(isa) + " is not supported by this CPU");
  const int64_t m = xd[0], k = xd[1], kq = wd[0], n = wd[1];
  if (m == 0 || n == 0) return ffi::Error::Success();

  std::vector<int8_t> xpad(m * 4 * kq, 0);
  std::vector<int32_t> sumx(m);
  std::vector<float> scale(m);
  const float w_scale = sw.typed_data()[0];
  for (int64_t r = 0; r < m; ++r) {
    const int8_t* src = x.typed_data() + r * k;
    std::memcpy(xpad.data() + r * 4 * kq, src, k);
    int32_t s = 0;
    for (int64_t i = 0; i < k; ++i) s += src[i];
    sumx[r] = s;
    scale[r] = 1.0f / (sx.typed_data()[r] * w_scale);
  }
  const Problem p{xpad.data(), sumx.data(), scale.data(), w.typed_data(),
                  m, kq, n, y->typed_data()};
  // 4 chunks per thread balance a loaded machine; chunks are whole 64-column blocks.
  lattice::ParallelColumns(pool, n, 64, 4, m * kq * n >= kParallelMinBytes,
                           [&](int64_t n0, int64_t n1) { Columns(isa, p, n0, n1); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeTernaryMatmul, TernaryMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("isa"));

// Plain C queries for Python (ctypes): the best instruction set here, and whether a
// given one runs. Codes: 1 portable C++, 2 AVX2, 3 AVX-512 VNNI + VBMI.
extern "C" int32_t LatticeTernaryBestIsa() { return BestIsa(); }
extern "C" int32_t LatticeTernarySupports(int32_t isa) { return Supports(isa) ? 1 : 0; }
