// Grouped (ragged) float32 matmul on CPU, called from JAX through the XLA FFI.
//
// Shape legend: N rows sorted by group, I input features, O output features, E
// groups; group e owns rows [start_e, start_e + sizes[e]) with start_e the sum of the
// sizes before it. Rows past the sizes' sum give 0.
//   mode 0 (gmm):    y [N, O] = x [N, I] @ w[e],   w [E, I, O]
//   mode 1 (gmm_t):  y [N, O] = x [N, I] @ w[e]^T, w [E, O, I]   (dx of mode 0)
//   mode 2 (tgmm):   y [E, I, O] = x_e^T @ g_e, x [N, I], g [N, O] (dw of mode 0;
//                    a group without rows gives 0)
//
// Method: one BLAS sgemm per group (or per row/column chunk of a group), reading the
// group's rows and its weights in place: no padding, no windows, no gathered weight
// copies, and the transposes of the backward are sgemm's transpose flags rather than
// copies. The sgemm is OpenBLAS's (the scipy-openblas32 wheel, the build numpy and
// SciPy ship); the library does not link it: Python loads it and hands this library
// the address of `scipy_cblas_sgemm` (LatticeGroupedSetSgemm), with OpenBLAS set to one
// thread. Why BLAS: XLA:CPU runs a batched [E, C, D] dot (and a [128, 256] x [256, 256]
// 2-D dot) at ~75-87 GFLOP/s on one core of the build machine where OpenBLAS runs the
// same per-group product at ~97-98 GFLOP/s, as fast as XLA's large dense dot (~100);
// see kernels/grouped_matmul/native.py.
//
// Threads: the chunks (a group's rows cut into pieces of <= kRows rows; for tgmm a
// group's output columns cut into pieces of kCols) are claimed from an atomic counter
// by the caller and by helper tasks on XLA's intra-op thread pool (the pattern of
// kernels/ternary_cpu: the caller takes chunks too, so nothing waits on a busy pool).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// cblas_sgemm with 32-bit integers (scipy-openblas32's ABI; enums are ints).
using Sgemm = void (*)(int order, int trans_a, int trans_b, int m, int n, int k,
                       float alpha, const float* a, int lda, const float* b, int ldb,
                       float beta, float* c, int ldc);
std::atomic<Sgemm> g_sgemm{nullptr};
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
constexpr int64_t kRows = 256;  // rows per chunk (modes 0/1)
constexpr int64_t kCols = 128;  // output columns per chunk (mode 2), when O > kCols

struct Chunk {
  int64_t group, lo, hi;  // rows [lo, hi) (modes 0/1) or columns [lo, hi) (mode 2)
};

struct Shared {
  Sgemm sgemm;
  int32_t mode;
  const float *x, *w;
  const float *x2 = nullptr, *w2 = nullptr;  // mode 1 with a second pair: y += x2 @ w2[e]^T
  float* y;
  int64_t i, o;
  std::vector<int64_t> start;
  std::vector<Chunk> chunks;
  std::atomic<int64_t> next{0}, done{0};

  void Run(const Chunk& c) {
    const int64_t e = c.group;
    if (mode != 2) {
      const int64_t rows = c.hi - c.lo;
      float* const out = y + c.lo * o;
      if (mode == 0) {
        sgemm(kRowMajor, kNoTrans, kNoTrans, rows, o, i, 1.0f, x + c.lo * i, i,
              w + e * i * o, o, 0.0f, out, o);
      } else {
        sgemm(kRowMajor, kNoTrans, kTrans, rows, o, i, 1.0f, x + c.lo * i, i,
              w + e * o * i, i, 0.0f, out, o);
        if (x2 != nullptr)
          sgemm(kRowMajor, kNoTrans, kTrans, rows, o, i, 1.0f, x2 + c.lo * i, i,
                w2 + e * o * i, i, 1.0f, out, o);
      }
    } else {  // tgmm: x_e^T g_e for columns [lo, hi) of the output; w holds g [N, O]
      const int64_t rows = start[e + 1] - start[e];
      sgemm(kRowMajor, kTrans, kNoTrans, i, c.hi - c.lo, rows, 1.0f, x + start[e] * i, i,
            w + start[e] * o + c.lo, o, 0.0f, y + e * i * o + c.lo, o);
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
  s.sgemm = sgemm;
  s.mode = mode;
  s.x = x.typed_data();
  s.w = w.typed_data();
  s.x2 = x2;
  s.w2 = w2;
  s.y = y->typed_data();
  s.i = i;
  s.o = o;
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
      for (int64_t c = 0; c < o; c += width) s.chunks.push_back({e, c, std::min(o, c + width)});
    } else if (rows > 0) {
      const int64_t pieces = (rows + kRows - 1) / kRows;
      const int64_t step = (rows + pieces - 1) / pieces;
      for (int64_t r = lo; r < lo + rows; r += step)
        s.chunks.push_back({e, r, std::min(lo + rows, r + step)});
    }
  }
  if (mode != 2 && s.start[e_count] < n)  // rows past the groups give 0
    std::memset(s.y + s.start[e_count] * o, 0, sizeof(float) * (n - s.start[e_count]) * o);
  if (mode != 2 && i == 0) {  // nothing contracted: every row is 0
    std::memset(s.y, 0, sizeof(float) * n * o);
    return ffi::Error::Success();
  }
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

}  // namespace

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
