// float32 decode attention of a few query rows over a heads-major KV cache, called
// from JAX through the XLA FFI (kernels/skinny_cpu/attention.py).
//
// Shape legend: N batch entries (batch rows, times any vmapped axes), L query rows
// (1 for a plain decoding step, K + 1 for a self-speculative verification forward,
// the prompt's length for a prefill),
// H query heads, KV key/value heads (H = KV * G, query head h = kv * G + g), S cache
// positions, Dh head dimension.
//   q    float32 [N, L, H, Dh]
//   k, v float32 [N, KV, S, Dh]
//   pos  int32   [N, L]        query row l sees cache positions s <= pos[n, l]
//   out  float32 [N, L, H, Dh]
//
// Why: XLA:CPU runs decode attention as about eight small ops per layer (two dots, the
// scale, the mask, four softmax pieces), and a 2..8-row verification forward either
// doubles them (row by row) or hands the dots to a library GEMM at ~3x the cost
// (profile of benchmarks/speculative_decode). Here one call per layer computes every
// row and head, reads only the visible positions, and a row's result does not depend
// on the other rows of the call.
//
// Arithmetic (per row and head), the formula of jax.nn.dot_product_attention's XLA
// path: logits_s = (q . k_s) * (1 / sqrt(Dh)) for the visible s, p = softmax(logits)
// (max subtracted, exp, sum, divide), out = sum_s p_s v_s, in an order fixed by the
// row's visible count alone. With AVX-512 and Dh a multiple of 16 (<= 128, `Rows16`):
// the same steps 16 positions and 16 lanes at a time (logits summed across lanes by a
// fixed shuffle tree), the rows of a head in one pass over its cache, up to 8 at a
// time (a prefill's L rows in groups of 8). With AVX2 + FMA (also on AVX-512 CPUs for other Dh) and Dh a
// multiple of 8 (`Row8`): the logits of 8 positions at a time, each an 8-lane fused
// multiply-add over Dh, summed across lanes together in a fixed tree; exp and the
// softmax sum 8 lanes at a time; out in four accumulators over s (s mod 4), added
// in a fixed order. Otherwise (`Row`, portable C++): one position at a time, lanes
// summed in a fixed tree, out over s in increasing s. So every row's result is
// bitwise the same in a one-row call and in an L-row call (self-speculative decoding
// relies on this) on a given machine; the code paths round differently from each
// other. exp is a Cephes-style polynomial (relative error about 2e-7 on the
// arguments that occur, x <= 0), not libm's.
//
// Work is split over (entry, kv head) pairs on XLA's intra-op thread pool
// (kernels/column_chunks.h). Instruction set: chosen at run time like skinny_cpu.cc
// (kernels/skinny_cpu/isa.h), or forced by the `isa` attribute (tests).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "xla/ffi/api/ffi.h"
#include "../column_chunks.h"
#include "isa.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

using namespace lattice_skinny;  // the Isa codes, Supports and BestIsa (isa.h)

constexpr int kLanes = 8;

struct Problem {
  const float *q, *k, *v;
  const int32_t* pos;
  float* out;
  int64_t n, l, h, kv, s, dh;
  float scale;
};

// exp(x) for x <= 0 (and moderate x > 0): Cephes expf's range reduction and degree-6
// polynomial, branch-free so that loops over it vectorize.
inline __attribute__((always_inline)) float ExpF(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(std::fma(x, 1.44269504088896341f, 0.5f));
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  const float y = std::fma(p, r * r, r) + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return y * two_n;
}

// The fixed-order sum of 8 lanes.
inline __attribute__((always_inline)) float Lanes(const float* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// One query row of one head: out_Dh = softmax(q . k_s * scale, s < visible) . v.
// `buf` holds S floats.
inline __attribute__((always_inline)) void Row(const Problem& p, const float* q,
                                               const float* k, const float* v,
                                               int64_t visible, float* buf, float* out) {
  const int64_t dh = p.dh, vec = dh / kLanes * kLanes;
  float m = -INFINITY;
  for (int64_t s = 0; s < visible; ++s) {
    const float* ks = k + s * dh;
    float acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t d = 0; d < vec; d += kLanes)
      for (int j = 0; j < kLanes; ++j) acc[j] = std::fma(q[d + j], ks[d + j], acc[j]);
    float dot = Lanes(acc);
    for (int64_t d = vec; d < dh; ++d) dot = std::fma(q[d], ks[d], dot);
    buf[s] = dot * p.scale;
    m = std::max(m, buf[s]);
  }
  float sums[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t s = 0;
  for (; s + kLanes <= visible; s += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      buf[s + j] = ExpF(buf[s + j] - m);
      sums[j] += buf[s + j];
    }
  float total = Lanes(sums);
  for (; s < visible; ++s) {
    buf[s] = ExpF(buf[s] - m);
    total += buf[s];
  }
  for (s = 0; s < visible; ++s) buf[s] = buf[s] / total;
  for (int64_t d = 0; d < dh; ++d) out[d] = 0.0f;
  for (s = 0; s < visible; ++s) {
    const float* vs = v + s * dh;
    const float ps = buf[s];
    for (int64_t d = 0; d < dh; ++d) out[d] = std::fma(ps, vs[d], out[d]);
  }
}

#if defined(__x86_64__) || defined(__i386__)
// exp of 8 lanes (x <= 88), the same polynomial as ExpF.
__attribute__((target("avx2,fma"))) inline __m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-0.693359375f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r),
                                 _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}

// The 8 lane sums of a[0..7], in one vector, in a fixed order.
__attribute__((target("avx2,fma"))) inline __m256 Sums8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20),
                       _mm256_permute2f128_ps(t0, t1, 0x31));
}

// Row() for Dh a multiple of 8 with AVX2 + FMA: the logits of 8 positions at a time
// (one accumulator per position, summed across lanes together), exp 8 lanes at a
// time, out accumulated over s. Positions past the last whole block of 8 are padded
// with zero logits that are then dropped, so the blocks are the same for a given
// number of visible positions whatever L is.
__attribute__((target("avx2,fma"))) void Row8(const Problem& p, const float* q,
                                              const float* k, const float* v,
                                              int64_t visible, float* buf, float* out) {
  const int64_t dh = p.dh, blocks = (visible + 7) / 8;
  const __m256 scale = _mm256_set1_ps(p.scale);
  __m256 m8 = _mm256_set1_ps(-INFINITY);
  for (int64_t b = 0; b < blocks; ++b) {
    __m256 acc[8];
    for (int j = 0; j < 8; ++j) {
      acc[j] = _mm256_setzero_ps();
      const int64_t s = b * 8 + j;
      if (s >= visible) continue;
      const float* ks = k + s * dh;
      for (int64_t d = 0; d < dh; d += 8)
        acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(ks + d), acc[j]);
    }
    const __m256 logits = _mm256_mul_ps(Sums8(acc), scale);
    _mm256_storeu_ps(buf + b * 8, logits);
    const int64_t valid = std::min<int64_t>(8, visible - b * 8);
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
        _mm256_set1_epi32(static_cast<int32_t>(valid)),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    m8 = _mm256_max_ps(m8, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), logits, keep));
  }
  alignas(32) float mx[8];
  _mm256_store_ps(mx, m8);
  const float m = std::max(std::max(std::max(mx[0], mx[1]), std::max(mx[2], mx[3])),
                           std::max(std::max(mx[4], mx[5]), std::max(mx[6], mx[7])));
  __m256 sum8 = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t valid = std::min<int64_t>(8, visible - b * 8);
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
        _mm256_set1_epi32(static_cast<int32_t>(valid)),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    const __m256 e = _mm256_and_ps(
        Exp8(_mm256_sub_ps(_mm256_loadu_ps(buf + b * 8), _mm256_set1_ps(m))), keep);
    _mm256_storeu_ps(buf + b * 8, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  alignas(32) float sm[8];
  _mm256_store_ps(sm, sum8);
  const __m256 total = _mm256_set1_ps(Lanes(sm));
  for (int64_t b = 0; b < blocks; ++b)
    _mm256_storeu_ps(buf + b * 8, _mm256_div_ps(_mm256_loadu_ps(buf + b * 8), total));
  // Four accumulators over s (s mod 4), added in a fixed order: a single chain of
  // dependent multiply-adds would wait on their latency at every position.
  for (int64_t d = 0; d < dh; d += 8) {
    __m256 o[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
    int64_t s = 0;
    for (; s + 4 <= visible; s += 4)
      for (int j = 0; j < 4; ++j)
        o[j] = _mm256_fmadd_ps(_mm256_set1_ps(buf[s + j]),
                               _mm256_loadu_ps(v + (s + j) * dh + d), o[j]);
    for (int j = 0; s < visible; ++s, ++j)
      o[j] = _mm256_fmadd_ps(_mm256_set1_ps(buf[s]), _mm256_loadu_ps(v + s * dh + d), o[j]);
    _mm256_storeu_ps(out + d, _mm256_add_ps(_mm256_add_ps(o[0], o[1]),
                                            _mm256_add_ps(o[2], o[3])));
  }
}

// exp of 16 lanes (x <= 88), the same polynomial as ExpF and Exp8.
__attribute__((target("avx512f"))) inline __m512 Exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(
      _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), _mm512_set1_ps(0.5f)),
      _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
                                 _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(bits));
}

// The 16 lane sums of t[0..15], in one vector (lane j: the sum of t[j]), by a fixed
// tree of in-lane unpacks and shuffles, then across the four 128-bit lanes.
__attribute__((target("avx512f"))) inline __m512 Sums16(const __m512* t) {
  __m512 u[8], w[4], x[2];
  for (int i = 0; i < 8; ++i)  // per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3]
    u[i] = _mm512_add_ps(_mm512_unpacklo_ps(t[2 * i], t[2 * i + 1]),
                         _mm512_unpackhi_ps(t[2 * i], t[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per 128-bit lane: four vectors' lane-partial sums
    w[i] = _mm512_add_ps(_mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(u[2 * i], u[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)
    x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(w[2 * i], w[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(x[0], x[1], 0x88),
                       _mm512_shuffle_f32x4(x[0], x[1], 0xDD));
}

// Rows16's limits: rows per call, and rows whose outputs share one pass over the values
// (their accumulators stay in registers).
constexpr int kMaxRows = 8;
constexpr int kJointRows = 4;

// The softmax weights of one row into buf[0, visible): logits, max, exp, normalised.
__attribute__((target("avx512f"))) void Weights16(const Problem& p, const float* q,
                                                  const float* k, int64_t visible,
                                                  float* buf) {
  const int64_t dh = p.dh, chunks = dh / 16, blocks = (visible + 15) / 16;
  __m512 qc[8];
  for (int64_t c = 0; c < chunks; ++c) qc[c] = _mm512_loadu_ps(q + 16 * c);
  const __m512 scale = _mm512_set1_ps(p.scale);
  __m512 m16 = _mm512_set1_ps(-INFINITY);
  for (int64_t b = 0; b < blocks; ++b) {
    __m512 t[16];
    for (int j = 0; j < 16; ++j) {
      const int64_t s = b * 16 + j;
      if (s >= visible) {
        t[j] = _mm512_setzero_ps();
        continue;
      }
      const float* ks = k + s * dh;
      __m512 acc = _mm512_mul_ps(qc[0], _mm512_loadu_ps(ks));
      for (int64_t c = 1; c < chunks; ++c)
        acc = _mm512_fmadd_ps(qc[c], _mm512_loadu_ps(ks + 16 * c), acc);
      t[j] = acc;
    }
    const __m512 logits = _mm512_mul_ps(Sums16(t), scale);
    _mm512_storeu_ps(buf + b * 16, logits);
    const int64_t valid = std::min<int64_t>(16, visible - b * 16);
    const __mmask16 keep = static_cast<__mmask16>((1u << valid) - 1u);
    m16 = _mm512_mask_max_ps(m16, keep, m16, logits);
  }
  const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(m16));
  __m512 sum16 = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t valid = std::min<int64_t>(16, visible - b * 16);
    const __mmask16 keep = static_cast<__mmask16>((1u << valid) - 1u);
    const __m512 e = _mm512_maskz_mov_ps(
        keep, Exp16(_mm512_sub_ps(_mm512_loadu_ps(buf + b * 16), m)));
    _mm512_storeu_ps(buf + b * 16, e);
    sum16 = _mm512_add_ps(sum16, e);
  }
  alignas(64) float sm[16];
  _mm512_store_ps(sm, sum16);
  const __m512 total16 = _mm512_set1_ps(Lanes(sm) + Lanes(sm + 8));
  for (int64_t b = 0; b < blocks; ++b)
    _mm512_storeu_ps(buf + b * 16, _mm512_div_ps(_mm512_loadu_ps(buf + b * 16), total16));
}

// out[r] = sum_s buf[r][s] v_s for R rows: position s into accumulator s mod 4 of its
// row, s increasing; the shared loop (each v_s loaded once for every row) runs to the
// fewest visible positions rounded down to 4, then each row finishes its own.
template <int R>
__attribute__((target("avx512f"))) void Outs16(const Problem& p, const float* v,
                                               const int64_t* visible,
                                               float* const* buf, float* const* out) {
  const int64_t dh = p.dh, chunks = dh / 16;
  int64_t least = visible[0];
  for (int r = 1; r < R; ++r) least = std::min(least, visible[r]);
  for (int64_t c = 0; c < chunks; ++c) {
    __m512 o[R][4];
    for (int r = 0; r < R; ++r)
      for (int j = 0; j < 4; ++j) o[r][j] = _mm512_setzero_ps();
    const float* vc = v + 16 * c;
    int64_t s = 0;
    for (; s + 4 <= least; s += 4)
      for (int j = 0; j < 4; ++j) {
        const __m512 vs = _mm512_loadu_ps(vc + (s + j) * dh);
        for (int r = 0; r < R; ++r)
          o[r][j] = _mm512_fmadd_ps(_mm512_set1_ps(buf[r][s + j]), vs, o[r][j]);
      }
    for (int r = 0; r < R; ++r) {
      for (int64_t t = s; t < visible[r]; ++t)
        o[r][t % 4] = _mm512_fmadd_ps(_mm512_set1_ps(buf[r][t]),
                                      _mm512_loadu_ps(vc + t * dh), o[r][t % 4]);
      _mm512_storeu_ps(out[r] + 16 * c, _mm512_add_ps(_mm512_add_ps(o[r][0], o[r][1]),
                                                      _mm512_add_ps(o[r][2], o[r][3])));
    }
  }
}

// Row() for `rows` query rows of one head (<= kMaxRows), Dh a multiple of 16 (<= 128),
// with AVX-512: each row's logits 16 positions at a time (a 16-lane multiply-add over
// Dh, summed across lanes by Sums16), exp and the softmax sum 16 lanes at a time; then
// the rows' outputs together, kJointRows at a time, sharing each value load. A row's
// arithmetic depends on its own visible count alone (positions past it are zero
// logits, then masked; its out sums stop at it), so it gives the same bits in any
// call. About 1.75x faster per row than Row8 at Dh 16 (Row8's per-position horizontal
// sums and 8-lane exp dominated).
__attribute__((target("avx512f"))) void Rows16(const Problem& p, int rows,
                                               const float* const* q, const float* k,
                                               const float* v, const int64_t* visible,
                                               float* const* buf, float* const* out) {
  for (int r = 0; r < rows; ++r) Weights16(p, q[r], k, visible[r], buf[r]);
  for (int r0 = 0; r0 < rows; r0 += kJointRows) {
    switch (std::min(kJointRows, rows - r0)) {
      case 1: Outs16<1>(p, v, visible + r0, buf + r0, out + r0); break;
      case 2: Outs16<2>(p, v, visible + r0, buf + r0, out + r0); break;
      case 3: Outs16<3>(p, v, visible + r0, buf + r0, out + r0); break;
      default: Outs16<4>(p, v, visible + r0, buf + r0, out + r0); break;
    }
  }
}
#endif

// Asks for the visible keys and values of (entry, kv head) pair c (into L2) while the
// pair before it computes: at decode time the cache has usually been evicted by the
// weights streamed since the last step, and without this a pair's rows waited on
// memory before any of their arithmetic could start.
inline void PrefetchPair(const Problem& p, int64_t c) {
#if defined(__x86_64__) || defined(__i386__)
  const int64_t e = c / p.kv;
  int64_t visible = 0;
  for (int64_t l = 0; l < p.l; ++l) {
    const int64_t pos = p.pos[e * p.l + l];
    visible = std::max(visible, pos < 0 ? p.s : std::min<int64_t>(pos + 1, p.s));
  }
  const char* k = reinterpret_cast<const char*>(p.k + c * p.s * p.dh);
  const char* v = reinterpret_cast<const char*>(p.v + c * p.s * p.dh);
  const int64_t bytes = visible * p.dh * static_cast<int64_t>(sizeof(float));
  for (int64_t b = 0; b < bytes; b += 64) {
    _mm_prefetch(k + b, _MM_HINT_T1);
    _mm_prefetch(v + b, _MM_HINT_T1);
  }
#endif
}

// Every row and head of the (entry, kv head) pairs [c0, c1). kVector: 0 portable,
// 1 AVX2 (Row8), 2 AVX-512 (Rows16 where Dh and L allow, else Row8).
template <int kVector>
inline __attribute__((always_inline)) void PairsBody(const Problem& p, int64_t c0,
                                                     int64_t c1) {
  // Row8 / Rows16 store whole blocks of 8 / 16; Rows16 keeps one buffer per row of a
  // group of at most kMaxRows rows (a longer call, e.g. a prompt's prefill, runs its
  // rows in such groups: a row's bits do not depend on its group).
  const bool joint = kVector == 2 && p.dh % 16 == 0 && p.dh <= 128;
  std::vector<float> buf((p.s + 16) * (joint ? std::min<int64_t>(p.l, kMaxRows) : 1));
  const std::vector<float> zeros(p.dh, 0.0f);  // the query of a fully masked row
  const int64_t g_per = p.h / p.kv;
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t e = c / p.kv, kvh = c % p.kv;
    const float* k = p.k + (e * p.kv + kvh) * p.s * p.dh;
    const float* v = p.v + (e * p.kv + kvh) * p.s * p.dh;
    if (c + 1 < c1) PrefetchPair(p, c + 1);
#if defined(__x86_64__) || defined(__i386__)
    if (joint) {  // every row of each query head in one pass over its keys and values
      for (int64_t g = 0; g < g_per; ++g) {
        const int64_t h = kvh * g_per + g;
        const float* qs[kMaxRows];
        float *bufs[kMaxRows], *outs[kMaxRows];
        int64_t vis[kMaxRows];
        int rows = 0;
        for (int64_t l = 0; l < p.l; ++l) {
          const int64_t pos = p.pos[e * p.l + l];
          const int64_t at = ((e * p.l + l) * p.h + h) * p.dh;
          if (pos < 0) {  // masked everywhere: XLA's equal logits average all S rows
            Row(p, zeros.data(), k, v, p.s, buf.data() + rows * (p.s + 16), p.out + at);
            continue;
          }
          qs[rows] = p.q + at;
          outs[rows] = p.out + at;
          bufs[rows] = buf.data() + rows * (p.s + 16);
          vis[rows] = std::min<int64_t>(pos + 1, p.s);
          if (++rows == kMaxRows) {
            Rows16(p, rows, qs, k, v, vis, bufs, outs);
            rows = 0;
          }
        }
        if (rows) Rows16(p, rows, qs, k, v, vis, bufs, outs);
      }
      continue;
    }
#endif
    for (int64_t l = 0; l < p.l; ++l) {
      // Masked everywhere (pos < 0): XLA's equal masked logits average all S rows.
      const int64_t pos = p.pos[e * p.l + l];
      const int64_t visible = pos < 0 ? p.s : std::min<int64_t>(pos + 1, p.s);
      for (int64_t g = 0; g < g_per; ++g) {
        const int64_t h = kvh * g_per + g;
        const int64_t at = ((e * p.l + l) * p.h + h) * p.dh;
        if (pos < 0) {
          Row(p, zeros.data(), k, v, visible, buf.data(), p.out + at);
        } else {
#if defined(__x86_64__) || defined(__i386__)
          if (kVector && p.dh % 8 == 0) {
            Row8(p, p.q + at, k, v, visible, buf.data(), p.out + at);
            continue;
          }
#endif
          Row(p, p.q + at, k, v, visible, buf.data(), p.out + at);
        }
      }
    }
  }
}

void PairsScalar(const Problem& p, int64_t c0, int64_t c1) { PairsBody<0>(p, c0, c1); }
#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) void PairsAvx2(const Problem& p, int64_t c0,
                                                   int64_t c1) {
  PairsBody<1>(p, c0, c1);
}
__attribute__((target("avx512f,avx2,fma"))) void PairsAvx512(const Problem& p, int64_t c0,
                                                    int64_t c1) {
  PairsBody<2>(p, c0, c1);
}
#endif

void Pairs(int32_t isa, const Problem& p, int64_t c0, int64_t c1) {
#if defined(__x86_64__) || defined(__i386__)
  if (isa == kAvx512) return PairsAvx512(p, c0, c1);
  if (isa == kAvx2) return PairsAvx2(p, c0, c1);
#endif
  PairsScalar(p, c0, c1);
}

// Below this many cache bytes read a call runs on the caller alone.
constexpr int64_t kParallelMinBytes = 1 << 18;

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                           ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                           ffi::Buffer<ffi::S32> pos, ffi::ResultBuffer<ffi::F32> out,
                           int32_t isa) {
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  const size_t r = qd.size();
  if (r < 4 || kd.size() != r || vd.size() != r || qd[r - 1] != kd[r - 1] ||
      !std::equal(kd.begin(), kd.end(), vd.begin()))
    return ffi::Error::InvalidArgument(
        "lattice_decode_attention: want q [..., L, H, Dh], k and v [..., KV, S, Dh]");
  const int64_t l = qd[r - 3], h = qd[r - 2], dh = qd[r - 1], kvh = kd[r - 3],
                s = kd[r - 2];
  int64_t n = 1;
  for (size_t i = 0; i + 3 < r; ++i) {
    if (qd[i] != kd[i])
      return ffi::Error::InvalidArgument("lattice_decode_attention: q, k batch dims differ");
    n *= qd[i];
  }
  if (kvh == 0 || h % kvh != 0 || pos.element_count() != n * l ||
      out->element_count() != q.element_count())
    return ffi::Error::InvalidArgument(
        "lattice_decode_attention: want H a multiple of KV, pos [..., L], out like q");
  if (isa == kAuto) isa = BestIsa();
  if (!Supports(isa))
    return ffi::Error::InvalidArgument("lattice_decode_attention: isa " +
                                       std::to_string(isa) + " is not supported here");
  if (n * l * h * dh == 0) return ffi::Error::Success();
  const Problem p{q.typed_data(), k.typed_data(), v.typed_data(), pos.typed_data(),
                  out->typed_data(), n, l, h, kvh, s, dh,
                  1.0f / std::sqrt(static_cast<float>(dh))};
  lattice::ParallelColumns(pool, n * kvh, 1, 1, n * kvh * s * dh * 8 >= kParallelMinBytes,
                           [&](int64_t c0, int64_t c1) { Pairs(isa, p, c0, c1); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("isa"));
