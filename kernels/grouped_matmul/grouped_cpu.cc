// Grouped (ragged) float32 matmul on CPU, called from JAX through the XLA FFI.
//
// Shape legend: N rows sorted by group, I input features, O output features, E
// groups; group e owns rows [start_e, start_e + sizes[e]) with start_e the sum of the
// sizes before it. Rows past the sizes' sum give 0.
//   mode 0 (gmm):    y [N, O] = x [N, I] @ w[e],   w [E, I, O]
//   mode 1 (gmm_t):  y [N, O] = x [N, I] @ w[e]^T, w [E, O, I]   (dx of mode 0)
//   mode 2 (tgmm):   y [E, I, O] = x_e^T @ g_e, x [N, I], g [N, O] (dw of mode 0;
//                    a group without rows gives 0)
//   LatticeGroupedMatmulT2: y [N, O] = x @ w[e]^T + x2 @ w2[e]^T (mode 1 twice, summed
//                    in place by sgemm's beta = 1: a gated FFN's input gradient)
//   LatticeGroupedSwigluUp (mode 3): a, b, h [N, F] = x @ w0[e], x @ w1[e], silu(a) * b
//                    (the activation on each chunk right after its two sgemms)
//   LatticeGroupedSwigluDown (mode 4): da, db [N, F], the cotangents of silu(a) * b for
//                    dh = dy @ wo[e]^T (dh never leaves the chunk)
//
// Method: one BLAS sgemm per group (or per row/column chunk of a group), reading the
// group's rows and its weights in place: no padding, no windows, no gathered weight
// copies, and the transposes of the backward are sgemm's transpose flags rather than
// copies. The sgemm is OpenBLAS's (the scipy-openblas32 wheel, the build numpy and
// SciPy ship); the library does not link it: Python loads it and hands this library
// the address of `scipy_cblas_sgemm` (LatticeGroupedSetSgemm), with OpenBLAS set to one
// thread. Why BLAS: XLA:CPU runs a batched [E, C, D] dot (and a [128, 256] x [256, 256]
// 2-D dot) at ~75-87 GFLOP/s on one core of the build machine where OpenBLAS runs the
// same per-group product at ~97-98 GFLOP/s with its AVX2 kernels, as fast as XLA's
// large dense dot (~100), and at ~200-235 with the AVX-512 ones native.py now loads on
// AVX-512 CPUs (CPU-time rates); see kernels/grouped_matmul/native.py. Where the CPU has
// AVX-512 the products run on small_gemm.h instead (no sgemm packing or zeroing passes;
// `Products` and GemmKind in grouped_cpu.h), sgemm otherwise.
//
// Threads: the chunks (a group's rows cut into pieces of <= kRows rows; for tgmm a
// group's output columns cut into pieces of kCols) are claimed from an atomic counter
// by the caller and by helper tasks on XLA's intra-op thread pool (the pattern of
// kernels/ternary_cpu: the caller takes chunks too, so nothing waits on a busy pool).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "grouped_cpu.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using lattice_grouped::Products;
using lattice_grouped::Sgemm;
using lattice_grouped::kRowMajor;
using lattice_grouped::kNoTrans;
using lattice_grouped::kTrans;
std::atomic<int32_t> g_gemm{0};  // the products' code (GemmKind)
std::atomic<Sgemm> g_sgemm{nullptr};
constexpr int64_t kRows = 256;  // rows per chunk (modes 0/1)
constexpr int64_t kCols = 128;  // output columns per chunk (mode 2), when O > kCols

// SwiGLU's elementwise parts over one chunk (n floats, hot in cache after its sgemm):
//   up:   h = silu(a) * b, silu(a) = a * sigmoid(a)
//   down: da = dh * b * s * (1 + a * (1 - s)), db = dh * a * s, s = sigmoid(a)
// (the derivative of silu(a) * b). exp is Cephes' expf (a degree-5 polynomial on
// [-ln2/2, ln2/2] after range reduction, relative error ~1e-7), written so that GCC
// vectorizes the loops; the AVX-512 / AVX2 copies are chosen at run time from CPUID.
__attribute__((always_inline)) static inline float Exp(float x) {
  x = x < -87.0f ? -87.0f : x;  // the a < b ? b : a forms of SSE max / min
  x = 88.0f < x ? 88.0f : x;
  // Round x / ln2 to the nearest integer by adding and removing 1.5 * 2^23 (exact in
  // float32 for |x / ln2| < 2^22; no -ffast-math here, so the sum is not folded away).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

#define LATTICE_SWIGLU_UP_BODY                                   \
  for (int64_t j = 0; j < n; ++j) {                              \
    const float s = 1.0f / (1.0f + Exp(-a[j]));                  \
    h[j] = a[j] * s * b[j];                                      \
  }
#define LATTICE_SWIGLU_DOWN_BODY                                 \
  for (int64_t j = 0; j < n; ++j) {                              \
    const float s = 1.0f / (1.0f + Exp(-a[j])), g = dh[j];       \
    da[j] = g * b[j] * s * (1.0f + a[j] * (1.0f - s));           \
    db[j] = g * a[j] * s;                                        \
  }

static void UpScalar(const float* __restrict a, const float* __restrict b,
                     float* __restrict h, int64_t n) {
  LATTICE_SWIGLU_UP_BODY
}
static void DownScalar(const float* dh, const float* a, const float* b, float* da, float* db,
                       int64_t n) {
  LATTICE_SWIGLU_DOWN_BODY
}
#if defined(__x86_64__) && defined(__GNUC__)
#define LATTICE_X86 1
__attribute__((target("avx2,fma"))) static void UpAvx2(const float* __restrict a,
                                                       const float* __restrict b,
                                                       float* __restrict h, int64_t n) {
  LATTICE_SWIGLU_UP_BODY
}
__attribute__((target("avx2,fma"))) static void DownAvx2(const float* dh, const float* a,
                                                         const float* b, float* da, float* db,
                                                         int64_t n) {
  LATTICE_SWIGLU_DOWN_BODY
}
__attribute__((target("avx512f,avx2,fma"))) static void UpAvx512(const float* __restrict a,
                                                                  const float* __restrict b,
                                                                  float* __restrict h,
                                                                  int64_t n) {
  LATTICE_SWIGLU_UP_BODY
}
__attribute__((target("avx512f,avx2,fma"))) static void DownAvx512(const float* dh, const float* a,
                                                          const float* b, float* da,
                                                          float* db, int64_t n) {
  LATTICE_SWIGLU_DOWN_BODY
}
#endif

using lattice_grouped::DownFn;
using lattice_grouped::UpFn;

static int BestIsa() {  // 3 AVX-512F, 2 AVX2 + FMA, 1 portable C++ (small_gemm.h's check)
  return std::max(1, lattice_grouped::SmallGemmBestIsa());
}

// The elementwise code path: 0 = the best this CPU runs (BestIsa), or 1-3 forced by
// LatticeGroupedSetIsa (tests run every path the CPU supports).
std::atomic<int> g_isa{0};

static int Isa() {
  static const int best = BestIsa();
  const int forced = g_isa.load();
  return forced == 0 ? best : std::min(forced, best);
}

static UpFn Up() {
#ifdef LATTICE_X86
  const int isa = Isa();
  if (isa == 3) return UpAvx512;
  if (isa == 2) return UpAvx2;
#endif
  return UpScalar;
}

static DownFn Down() {
#ifdef LATTICE_X86
  const int isa = Isa();
  if (isa == 3) return DownAvx512;
  if (isa == 2) return DownAvx2;
#endif
  return DownScalar;
}

struct Chunk {
  int64_t group, lo, hi;  // rows [lo, hi) (modes 0/1) or columns [lo, hi) (mode 2)
  int64_t ilo = 0, ihi = -1;  // mode 2: output rows [ilo, ihi) (-1: all)
};

struct Shared {
  Products sgemm{nullptr};  // set with the sgemm when the call starts
  int32_t mode;
  const float *x, *w;
  const float *x2 = nullptr, *w2 = nullptr;  // mode 1 with a second pair: y += x2 @ w2[e]^T
  float* y;
  // SwiGLU modes: 3 up (x, w = w0, w2 = w1 -> y = a, y2 = b, y3 = h); 4 down (x = dy,
  // w = wo [E, D, F] used transposed, a, b -> y = da, y2 = db).
  const float *a = nullptr, *b = nullptr;
  float *y2 = nullptr, *y3 = nullptr;
  int64_t i, o;
  std::vector<int64_t> start;
  std::vector<Chunk> chunks;
  std::atomic<int64_t> next{0}, done{0};

  void Run(const Chunk& c) {
    const int64_t e = c.group;
    if (mode == 3) {
      const int64_t rows = c.hi - c.lo;
      float *ya = y + c.lo * o, *yb = y2 + c.lo * o;
      sgemm(kNoTrans, kNoTrans, rows, o, i, x + c.lo * i, i, w + e * i * o, o,
            0.0f, ya, o);
      sgemm(kNoTrans, kNoTrans, rows, o, i, x + c.lo * i, i, w2 + e * i * o,
            o, 0.0f, yb, o);
      Up()(ya, yb, y3 + c.lo * o, rows * o);
    } else if (mode == 4) {  // dh = dy @ wo[e]^T into da's rows, then da, db in place
      const int64_t rows = c.hi - c.lo;
      float *da = y + c.lo * o, *db = y2 + c.lo * o;
      sgemm(kNoTrans, kTrans, rows, o, i, x + c.lo * i, i, w + e * o * i, i,
            0.0f, da, o);
      Down()(da, a + c.lo * o, b + c.lo * o, da, db, rows * o);
    } else if (mode != 2) {
      const int64_t rows = c.hi - c.lo;
      float* const out = y + c.lo * o;
      if (mode == 0) {
        sgemm(kNoTrans, kNoTrans, rows, o, i, x + c.lo * i, i,
              w + e * i * o, o, 0.0f, out, o);
      } else {
        sgemm(kNoTrans, kTrans, rows, o, i, x + c.lo * i, i,
              w + e * o * i, i, 0.0f, out, o);
        if (x2 != nullptr)
          sgemm(kNoTrans, kTrans, rows, o, i, x2 + c.lo * i, i,
                w2 + e * o * i, i, 1.0f, out, o);
      }
    } else {  // tgmm: x_e^T g_e for columns [lo, hi) of the output; w holds g [N, O]
      const int64_t rows = start[e + 1] - start[e];
      const int64_t ilo = c.ilo, ihi = c.ihi < 0 ? i : c.ihi;
      sgemm(kTrans, kNoTrans, ihi - ilo, c.hi - c.lo, rows, x + start[e] * i + ilo, i,
            w + start[e] * o + c.lo, o, 0.0f, y + e * i * o + ilo * o + c.lo, o);
    }
  }

  void Work() {
    const int64_t n = static_cast<int64_t>(chunks.size());
    for (int64_t k; (k = next.fetch_add(1)) < n;) {
      Run(chunks[k]);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

ffi::Error Launch(ffi::ThreadPool pool, const std::shared_ptr<Shared>& shared,
                  ffi::Buffer<ffi::S32> sizes, int64_t n);

ffi::Error Run(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
               const float* x2, const float* w2, ffi::Buffer<ffi::S32> sizes,
               ffi::ResultBuffer<ffi::F32> y, int32_t mode) {
  const Sgemm sgemm = g_sgemm.load();
  if (sgemm == nullptr)
    return ffi::Error::Internal("lattice_grouped_matmul: no sgemm (LatticeGroupedSetSgemm)");
  const auto xd = x.dimensions(), wd = w.dimensions();
  const int64_t e_count = sizes.element_count();
  if (mode < 0 || mode > 2) return ffi::Error::InvalidArgument("lattice_grouped_matmul: mode");
  if (xd.size() != 2) return ffi::Error::InvalidArgument("lattice_grouped_matmul: x [N, I]");
  const int64_t n = xd[0], i = xd[1];
  int64_t o;
  if (mode == 2) {  // w is g [N, O]; y [E, I, O]
    if (wd.size() != 2 || wd[0] != n)
      return ffi::Error::InvalidArgument("lattice_grouped_matmul: tgmm wants x [N, I], g [N, O]");
    o = wd[1];
    if (y->element_count() != e_count * i * o)
      return ffi::Error::InvalidArgument("lattice_grouped_matmul: tgmm wants y [E, I, O]");
  } else {
    const int64_t w_in = mode == 0 ? 1 : 2;  // w's contracted dim
    if (wd.size() != 3 || wd[0] != e_count || wd[w_in] != i)
      return ffi::Error::InvalidArgument(
          "lattice_grouped_matmul: want w [E, I, O] (mode 0) or [E, O, I] (mode 1)");
    o = mode == 0 ? wd[2] : wd[1];
    if (y->element_count() != n * o)
      return ffi::Error::InvalidArgument("lattice_grouped_matmul: want y [N, O]");
  }
  if (std::max({n, i, o}) > (int64_t{1} << 31) - 1)
    return ffi::Error::InvalidArgument("lattice_grouped_matmul: dims past int32");

  auto shared = std::make_shared<Shared>();
  Shared& s = *shared;
  s.sgemm = Products(sgemm);
  s.mode = mode;
  s.x = x.typed_data();
  s.w = w.typed_data();
  s.x2 = x2;
  s.w2 = w2;
  s.y = y->typed_data();
  s.i = i;
  s.o = o;
  return Launch(pool, shared, sizes, n);
}

// Chunks of the groups (sizes) and their run on the caller and XLA's pool; rows past the
// groups' total are zeroed in every row output (modes other than 2).
ffi::Error Launch(ffi::ThreadPool pool, const std::shared_ptr<Shared>& shared,
                  ffi::Buffer<ffi::S32> sizes, int64_t n) {
  Shared& s = *shared;
  const int32_t mode = s.mode;
  const int64_t i = s.i, o = s.o, e_count = sizes.element_count();
  s.start.assign(e_count + 1, 0);
  const int32_t* sz = sizes.typed_data();
  for (int64_t e = 0; e < e_count; ++e)  // clamped: negative sizes count 0, rows past N drop
    s.start[e + 1] = std::min(n, s.start[e] + std::max<int64_t>(0, sz[e]));
  for (int64_t e = 0; e < e_count; ++e) {
    const int64_t lo = s.start[e], rows = s.start[e + 1] - lo;
    if (mode == 2) {
      if (rows == 0 || i == 0) {
        std::memset(s.y + e * i * o, 0, sizeof(float) * i * o);
        continue;
      }
      const int64_t pieces = o > kCols ? (o + kCols - 1) / kCols : 1;
      const int64_t width = (o + pieces - 1) / pieces;
      // Few groups of narrow outputs (the MoE router's x^T g, [D, E] from one group):
      // also cut the output rows, so every thread gets a piece.
      const int64_t threads = std::max<int64_t>(1, pool.num_threads());
      const int64_t row_pieces =
          e_count * pieces >= 2 * threads ? 1 : std::max<int64_t>(1, std::min(2 * threads, i / 64));
      const int64_t height = (i + row_pieces - 1) / row_pieces;
      for (int64_t c = 0; c < o; c += width)
        for (int64_t r = 0; r < i; r += height)
          s.chunks.push_back({e, c, std::min(o, c + width), r, std::min(i, r + height)});
    } else if (rows > 0) {
      const int64_t pieces = (rows + kRows - 1) / kRows;
      const int64_t step = (rows + pieces - 1) / pieces;
      for (int64_t r = lo; r < lo + rows; r += step)
        s.chunks.push_back({e, r, std::min(lo + rows, r + step)});
    }
  }
  const int64_t first = mode != 2 && i == 0 ? 0 : s.start[e_count];  // i == 0: all rows 0
  if (mode != 2 && first < n) {  // rows past the groups give 0
    for (float* out : {s.y, s.y2, s.y3})
      if (out != nullptr) std::memset(out + first * o, 0, sizeof(float) * (n - first) * o);
  }
  if (mode != 2 && i == 0) return ffi::Error::Success();
  const int64_t count = static_cast<int64_t>(s.chunks.size());
  if (count == 0 || o == 0) return ffi::Error::Success();
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t helpers = std::min(threads, count) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([shared] { shared->Work(); });
  s.Work();
  while (s.done.load(std::memory_order_acquire) < count) std::this_thread::yield();
  return ffi::Error::Success();
}

ffi::Error GroupedMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                         ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::S32> sizes,
                         ffi::ResultBuffer<ffi::F32> y, int32_t mode) {
  return Run(pool, x, w, nullptr, nullptr, sizes, y, mode);
}

// y [N, O] = x @ w[e]^T + x2 @ w2[e]^T (two mode-1 products summed in place: the input
// gradient of a gated FFN's two up-projections without a separate add).
ffi::Error GroupedMatmulT2(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                           ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> x2,
                           ffi::Buffer<ffi::F32> w2, ffi::Buffer<ffi::S32> sizes,
                           ffi::ResultBuffer<ffi::F32> y) {
  auto same = [](auto a, auto b) { return std::equal(a.begin(), a.end(), b.begin(), b.end()); };
  if (!same(x2.dimensions(), x.dimensions()) || !same(w2.dimensions(), w.dimensions()))
    return ffi::Error::InvalidArgument(
        "lattice_grouped_matmul_t2: x2, w2 must have the shapes of x, w");
  return Run(pool, x, w, x2.typed_data(), w2.typed_data(), sizes, y, 1);
}

// a, b, h [N, F] = x @ w0[e], x @ w1[e], silu(a) * b (SwiGLU's up-projections and
// activation, fused per chunk).
ffi::Error SwigluUp(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w0,
                    ffi::Buffer<ffi::F32> w1, ffi::Buffer<ffi::S32> sizes,
                    ffi::ResultBuffer<ffi::F32> a, ffi::ResultBuffer<ffi::F32> b,
                    ffi::ResultBuffer<ffi::F32> h) {
  const Sgemm sgemm = g_sgemm.load();
  if (sgemm == nullptr)
    return ffi::Error::Internal("lattice_grouped_swiglu_up: no sgemm (LatticeGroupedSetSgemm)");
  const auto xd = x.dimensions(), wd = w0.dimensions();
  const int64_t e_count = sizes.element_count();
  if (xd.size() != 2 || wd.size() != 3 || wd[0] != e_count || wd[1] != xd[1] ||
      w1.element_count() != w0.element_count() || a->element_count() != xd[0] * wd[2] ||
      b->element_count() != a->element_count() || h->element_count() != a->element_count())
    return ffi::Error::InvalidArgument(
        "lattice_grouped_swiglu_up: want x [N, D], w0/w1 [E, D, F], a/b/h [N, F]");
  auto shared = std::make_shared<Shared>();
  Shared& s = *shared;
  s.sgemm = Products(sgemm);
  s.mode = 3;
  s.x = x.typed_data();
  s.w = w0.typed_data();
  s.w2 = w1.typed_data();
  s.y = a->typed_data();
  s.y2 = b->typed_data();
  s.y3 = h->typed_data();
  s.i = xd[1];
  s.o = wd[2];
  return Launch(pool, shared, sizes, xd[0]);
}

// da, db [N, F] from dy [N, D], wo [E, F, D], a, b [N, F]: dh = dy @ wo[e]^T and the
// derivative of silu(a) * b, fused per chunk.
ffi::Error SwigluDown(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy,
                      ffi::Buffer<ffi::F32> wo, ffi::Buffer<ffi::F32> a,
                      ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::S32> sizes,
                      ffi::ResultBuffer<ffi::F32> da, ffi::ResultBuffer<ffi::F32> db) {
  const Sgemm sgemm = g_sgemm.load();
  if (sgemm == nullptr)
    return ffi::Error::Internal("lattice_grouped_swiglu_down: no sgemm (LatticeGroupedSetSgemm)");
  const auto yd = dy.dimensions(), wd = wo.dimensions();
  const int64_t e_count = sizes.element_count();
  if (yd.size() != 2 || wd.size() != 3 || wd[0] != e_count || wd[2] != yd[1] ||
      a.element_count() != yd[0] * wd[1] || b.element_count() != a.element_count() ||
      da->element_count() != a.element_count() || db->element_count() != a.element_count())
    return ffi::Error::InvalidArgument(
        "lattice_grouped_swiglu_down: want dy [N, D], wo [E, F, D], a/b/da/db [N, F]");
  auto shared = std::make_shared<Shared>();
  Shared& s = *shared;
  s.sgemm = Products(sgemm);
  s.mode = 4;
  s.x = dy.typed_data();
  s.w = wo.typed_data();
  s.a = a.typed_data();
  s.b = b.typed_data();
  s.y = da->typed_data();
  s.y2 = db->typed_data();
  s.i = yd[1];
  s.o = wd[1];
  return Launch(pool, shared, sizes, yd[0]);
}

}  // namespace

namespace lattice_grouped {
Sgemm GetSgemm() { return g_sgemm.load(); }

int32_t GemmKind() {
  const int32_t want = g_gemm.load();
  if (want == 1) return 1;
  const int isa = SmallGemmFor(want == 0 ? 3 : want).isa;
  return isa == 0 || (want == 0 && isa != 3) ? 1 : isa;
}

void SetGemmKind(int32_t kind) { g_gemm.store(kind >= 0 && kind <= 3 ? kind : 0); }
UpFn SwigluUpKernel() { return Up(); }
DownFn SwigluDownKernel() { return Down(); }
}  // namespace lattice_grouped

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeGroupedSwigluUp, SwigluUp,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeGroupedSwigluDown, SwigluDown,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeGroupedMatmulT2, GroupedMatmulT2,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeGroupedMatmul, GroupedMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("mode"));

// Plain C for Python (ctypes): install the sgemm (address of a cblas_sgemm with 32-bit
// integers); returns 1 once one is set.
extern "C" int32_t LatticeGroupedSetSgemm(void* sgemm) {
  g_sgemm.store(reinterpret_cast<Sgemm>(sgemm));
  return sgemm != nullptr ? 1 : 0;
}

// Force the SwiGLU elementwise path (1 portable, 2 AVX2, 3 AVX-512; capped at what the
// CPU runs) or 0 for the best; returns the path now in use.
extern "C" int32_t LatticeGroupedSetIsa(int32_t isa) {
  g_isa.store(isa < 0 || isa > 3 ? 0 : isa);
  return Isa();
}
