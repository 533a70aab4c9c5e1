// A dropless MoE layer's SwiGLU experts, forward and backward, one pass over each
// expert's rows on CPU, called from JAX through the XLA FFI.
//
// Shape legend: T tokens, K experts per token, D model width, F expert width, E
// experts, N = T*K expert-sorted rows (expert e owns rows [start_e, start_e +
// sizes[e]), start_e the sum of the sizes before it; rows past the sizes' sum give 0);
// src [N] the token of each sorted row; inv [T, K] the sorted row of assignment (t, k).
//   LatticeMoeSwigluFwd: x [T, D], src, w0/w1 [E, D, F], wo [E, F, D], sizes, inv,
//     gate [T, K] -> a, b [N, F] (x[src] w0[e], x[src] w1[e], kept for the backward),
//     ys [N, D] = (silu(a) * b) wo[e] and y [T, D] = sum_k gate[t, k] ys[inv[t, k]]
//   LatticeMoeSwigluBwd: dy [T, D] (the cotangent of y), x, src, gate [N] (each sorted
//     row's gate), w0, w1, wo, a, b, sizes, inv -> dxs [N, D] = da w0[e]^T + db w1[e]^T
//     (each row's input gradient), dx [T, D] = sum_k dxs[inv[t, k]], dgate [N] (each
//     row's gate cotangent, dy[src] . ys), dw0, dw1 [E, D, F], dwo [E, F, D]
//   with h = silu(a) * b, u = dy[src] wo[e]^T, dgate = u . h (= dy[src] . h wo[e], so ys
//   is not kept), dys = gate dy[src], dh = gate u, (da, db) the cotangents of dh
//   through silu(a) * b, dwo[e] = h_e^T dys_e, dw0[e] = x_e^T da_e, dw1[e] = x_e^T db_e.
//
// Why one pass: with grouped_cpu.cc's products (one FFI call per product) every
// intermediate ([N, D] gathered rows, h [N, F], the backward's dys, dh, da, db) went
// through memory between calls. Here a block of <= kRows rows of one expert goes
// through all its products while its rows and scratch stay in cache: the token rows
// (x forward, x and dy backward) are read by index (no gathered copy), h is recomputed
// from a and b in the backward, and dh, da, db never leave the block. The combine
// (forward) and the per-token sum of input gradients (backward) follow in the same
// call. What is left at E = 32 over E = 8 (~10% in the kernel-only A/B on the 2-core
// machine) is each expert's weights read and gradients written once a direction.
//
// Products: small_gemm.h's AVX-512 code where the CPU has it, else OpenBLAS's sgemm
// (`Products` in grouped_cpu.h; LatticeMoeSetGemm picks, AVX2 included; each strip of
// the right-hand side copied or transposed into an L1 buffer, no pass zeroing C). At ~128 rows an expert (E = 32 in
// benchmarks/moe_layer.py) perf put ~30% of the kernels' time on the 2-core Xeon in
// sgemm's packing copies and its beta = 0 memset; the layer's fwd+bwd took ~1.3x as long
// on sgemm as on small_gemm.h in the same process.
//
// Threads (RunTasks): forward tasks are row blocks; a backward task is one expert (its
// weight gradients accumulate over its blocks with sgemm's beta = 1; an expert with
// more than a thread's share of the rows is cut into runs of blocks with partial
// gradients added at the end), tasks taken
// largest first.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "grouped_cpu.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using namespace lattice_grouped;

namespace {

// An expert's rows are cut into the fewest blocks of <= kRows rows, of equal size
// (a 140-row expert is one block, not 128 + 12: each block fetches the expert's weights
// and, backward, updates its weight gradients, so a small tail block costs nearly what
// a full one does).
#ifndef LATTICE_MOE_ROWS
#define LATTICE_MOE_ROWS 256
#endif
constexpr int64_t kRows = LATTICE_MOE_ROWS;

// Block size for an expert of `rows` rows: the fewest pieces of <= kRows, evened out.
int64_t BlockRows(int64_t rows) {
  const int64_t pieces = std::max<int64_t>(1, (rows + kRows - 1) / kRows);
  return (rows + pieces - 1) / pieces;
}

struct Problem {
  int64_t t, n, d, f, e;
  std::vector<int64_t> start;  // [E + 1]
};

// Group starts from sizes (clamped: negative sizes count 0, rows past N drop).
Problem Groups(int64_t t, int64_t n, int64_t d, int64_t f, ffi::Buffer<ffi::S32> sizes) {
  Problem p{t, n, d, f, static_cast<int64_t>(sizes.element_count()), {}};
  p.start.assign(p.e + 1, 0);
  const int32_t* sz = sizes.typed_data();
  for (int64_t e = 0; e < p.e; ++e)
    p.start[e + 1] = std::min(n, p.start[e] + std::max<int64_t>(0, sz[e]));
  return p;
}

// x rows src[lo..hi) into out [hi - lo, d].
void GatherRows(const float* x, const int32_t* src, int64_t lo, int64_t hi, int64_t d,
                float* out) {
  for (int64_t r = lo; r < hi; ++r) std::memcpy(out + (r - lo) * d, x + src[r] * d, sizeof(float) * d);
}

float* Scratch(int64_t floats) {  // per-thread, reused across calls (no page faults)
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < floats) buf.resize(floats);
  return buf.data();
}

// out [T, D] = sum over k of gate[t, k] * rows[inv[t, k]] (gate null: 1), the k terms
// added in order, over blocks of 64 tokens on the pool. False if an inv is out of range.
bool Combine(ffi::ThreadPool pool, const float* rows, int64_t n, const int32_t* inv,
             const float* gate, int64_t t, int64_t k, int64_t d, float* out) {
  for (int64_t i = 0; i < t * k; ++i)
    if (inv[i] < 0 || inv[i] >= n) return false;
  constexpr int64_t kTokens = 64;
  RunTasks(pool, (t + kTokens - 1) / kTokens, [&](int64_t blk) {
    for (int64_t r = blk * kTokens; r < std::min(t, (blk + 1) * kTokens); ++r) {
      float* o = out + r * d;
      if (k == 0) std::memset(o, 0, sizeof(float) * d);
      for (int64_t q = 0; q < k; ++q) {
        const float c = gate ? gate[r * k + q] : 1.0f;
        const float* y = rows + inv[r * k + q] * d;
        if (q == 0) {
          for (int64_t j = 0; j < d; ++j) o[j] = c * y[j];
        } else {
          for (int64_t j = 0; j < d; ++j) o[j] += c * y[j];
        }
      }
    }
  });
  return true;
}

ffi::Error Fwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> src,
               ffi::Buffer<ffi::F32> w0, ffi::Buffer<ffi::F32> w1, ffi::Buffer<ffi::F32> wo,
               ffi::Buffer<ffi::S32> sizes, ffi::Buffer<ffi::S32> inv, ffi::Buffer<ffi::F32> gate,
               ffi::ResultBuffer<ffi::F32> a, ffi::ResultBuffer<ffi::F32> b,
               ffi::ResultBuffer<ffi::F32> ys, ffi::ResultBuffer<ffi::F32> y) {
  if (GetSgemm() == nullptr) return ffi::Error::Internal("lattice_moe_swiglu_fwd: no sgemm");
  const Products gemm(GetSgemm());
  const auto xd = x.dimensions(), wd = w0.dimensions();
  const int64_t n = src.element_count();
  if (xd.size() != 2 || wd.size() != 3 || wd[0] != sizes.element_count() || wd[1] != xd[1] ||
      w1.element_count() != w0.element_count() || wo.element_count() != w0.element_count() ||
      a->element_count() != n * wd[2] || b->element_count() != n * wd[2] ||
      ys->element_count() != n * xd[1] || inv.element_count() != n ||
      gate.element_count() != n || inv.dimensions().size() != 2 || inv.dimensions()[0] != xd[0] ||
      y->element_count() != x.element_count())
    return ffi::Error::InvalidArgument(
        "lattice_moe_swiglu_fwd: want x [T, D], src [N], w0/w1 [E, D, F], wo [E, F, D], "
        "inv/gate [T, K] with T K = N");
  const Problem p = Groups(xd[0], n, xd[1], wd[2], sizes);
  const int64_t d = p.d, f = p.f;
  const int32_t* s = src.typed_data();
  for (int64_t r = 0; r < p.start[p.e]; ++r)
    if (s[r] < 0 || s[r] >= p.t) return ffi::Error::InvalidArgument("lattice_moe_swiglu_fwd: src");
  const float *xp = x.typed_data(), *w0p = w0.typed_data(), *w1p = w1.typed_data(),
              *wop = wo.typed_data();
  float *ap = a->typed_data(), *bp = b->typed_data(), *yp = ys->typed_data();
  const int64_t total = p.start[p.e];
  std::memset(ap + total * f, 0, sizeof(float) * (n - total) * f);
  std::memset(bp + total * f, 0, sizeof(float) * (n - total) * f);
  std::memset(yp + total * d, 0, sizeof(float) * (n - total) * d);
  struct Block { int64_t e, lo, hi; };
  std::vector<Block> blocks;
  for (int64_t e = 0; e < p.e; ++e)
    for (int64_t lo = p.start[e], step = BlockRows(p.start[e + 1] - lo); lo < p.start[e + 1];
         lo += step)
      blocks.push_back({e, lo, std::min(p.start[e + 1], lo + step)});
  if (f == 0) std::memset(yp, 0, sizeof(float) * total * d);
  const UpFn up = SwigluUpKernel();
  if (d > 0 && f > 0) RunTasks(pool, static_cast<int64_t>(blocks.size()), [&](int64_t i) {
    const Block& blk = blocks[i];
    const int rows = static_cast<int>(blk.hi - blk.lo);
    float* xs = Scratch(kRows * (d + f));
    float* h = xs + kRows * d;
    GatherRows(xp, s, blk.lo, blk.hi, d, xs);
    float *ar = ap + blk.lo * f, *br = bp + blk.lo * f;
    gemm(kNoTrans, kNoTrans, rows, f, d, xs, d, w0p + blk.e * d * f, f, 0.0f,
          ar, f);
    gemm(kNoTrans, kNoTrans, rows, f, d, xs, d, w1p + blk.e * d * f, f, 0.0f,
          br, f);
    up(ar, br, h, rows * f);
    gemm(kNoTrans, kNoTrans, rows, d, f, h, f, wop + blk.e * f * d, d, 0.0f,
          yp + blk.lo * d, d);
  });
  if (!Combine(pool, yp, n, inv.typed_data(), gate.typed_data(), p.t, inv.dimensions()[1], d,
               y->typed_data()))
    return ffi::Error::InvalidArgument("lattice_moe_swiglu_fwd: inv");
  return ffi::Error::Success();
}

ffi::Error Bwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> x,
               ffi::Buffer<ffi::S32> src, ffi::Buffer<ffi::F32> gate, ffi::Buffer<ffi::F32> w0,
               ffi::Buffer<ffi::F32> w1, ffi::Buffer<ffi::F32> wo, ffi::Buffer<ffi::F32> a,
               ffi::Buffer<ffi::F32> b, ffi::Buffer<ffi::S32> sizes, ffi::Buffer<ffi::S32> inv,
               ffi::ResultBuffer<ffi::F32> dxs, ffi::ResultBuffer<ffi::F32> dx,
               ffi::ResultBuffer<ffi::F32> dgate,
               ffi::ResultBuffer<ffi::F32> dw0, ffi::ResultBuffer<ffi::F32> dw1,
               ffi::ResultBuffer<ffi::F32> dwo) {
  if (GetSgemm() == nullptr) return ffi::Error::Internal("lattice_moe_swiglu_bwd: no sgemm");
  const Products gemm(GetSgemm());
  const auto xd = x.dimensions(), wd = w0.dimensions();
  const int64_t n = src.element_count();
  if (xd.size() != 2 || wd.size() != 3 || wd[0] != sizes.element_count() || wd[1] != xd[1] ||
      w1.element_count() != w0.element_count() || wo.element_count() != w0.element_count() ||
      dy.element_count() != x.element_count() || gate.element_count() != n ||
      a.element_count() != n * wd[2] || b.element_count() != n * wd[2] ||
      dxs->element_count() != n * xd[1] || dgate->element_count() != n ||
      dw0->element_count() != w0.element_count() || dw1->element_count() != w0.element_count() ||
      dwo->element_count() != w0.element_count() || inv.element_count() != n ||
      inv.dimensions().size() != 2 || inv.dimensions()[0] != xd[0] ||
      dx->element_count() != x.element_count())
    return ffi::Error::InvalidArgument(
        "lattice_moe_swiglu_bwd: want dy/x [T, D], src/gate [N], w0/w1 [E, D, F], "
        "wo [E, F, D], a/b [N, F], inv [T, K] with T K = N");
  const Problem p = Groups(xd[0], n, xd[1], wd[2], sizes);
  const int64_t d = p.d, f = p.f, total = p.start[p.e];
  const int32_t* s = src.typed_data();
  for (int64_t r = 0; r < total; ++r)
    if (s[r] < 0 || s[r] >= p.t) return ffi::Error::InvalidArgument("lattice_moe_swiglu_bwd: src");
  const float *dyp = dy.typed_data(), *xp = x.typed_data(), *gt = gate.typed_data(),
              *w0p = w0.typed_data(), *w1p = w1.typed_data(), *wop = wo.typed_data(),
              *ap = a.typed_data(), *bp = b.typed_data();
  float *dxp = dxs->typed_data(), *dgp = dgate->typed_data(), *d0 = dw0->typed_data(),
        *d1 = dw1->typed_data(), *dop = dwo->typed_data();
  std::memset(dxp + total * d, 0, sizeof(float) * (n - total) * d);
  std::memset(dgp + total, 0, sizeof(float) * (n - total));
  // Tasks: one expert's blocks each; an expert holding more than a thread's share of
  // the rows (1 / threads: with K = 1 on 2 threads, or E = 8 on 16) is cut into runs
  // of its blocks whose weight gradients go to partial buffers, added in after the
  // tasks, so no thread is left with more than its share. Largest tasks first.
  struct Task {
    int64_t e, lo, hi;  // rows [lo, hi) of expert e
    int64_t part;       // -1: the gradient outputs; else this task's partial buffer
  };
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t quota = std::max<int64_t>(1, (total + threads - 1) / threads);
  std::vector<Task> tasks;
  int64_t n_parts = 0;
  for (int64_t e = 0; e < p.e; ++e) {
    const int64_t rows = p.start[e + 1] - p.start[e];
    const int64_t step = std::max<int64_t>(1, BlockRows(rows));
    const int64_t blocks = (rows + step - 1) / step;
    int64_t pieces = d == 0 || f == 0 ? 1 : std::min(blocks, (rows + quota - 1) / quota);
    pieces = std::max<int64_t>(1, pieces);
    const int64_t per = (blocks + pieces - 1) / pieces * step;  // rows per piece
    for (int64_t lo = p.start[e], q = 0; q == 0 || lo < p.start[e + 1]; lo += per, ++q)
      tasks.push_back({e, lo, std::min(p.start[e + 1], lo + per), q == 0 ? -1 : n_parts++});
  }
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const Task& u, const Task& v) { return u.hi - u.lo > v.hi - v.lo; });
  std::vector<float> parts(n_parts * 3 * d * f);
  const DownFn down = SwigluDownKernel();
  const UpFn up = SwigluUpKernel();
  RunTasks(pool, static_cast<int64_t>(tasks.size()), [&](int64_t i) {
    const Task& task = tasks[i];
    const int64_t e = task.e, lo0 = task.lo, hi0 = task.hi;
    float *g0 = d0 + e * d * f, *g1 = d1 + e * d * f, *go = dop + e * f * d;
    if (task.part >= 0) {
      g0 = parts.data() + task.part * 3 * d * f;
      g1 = g0 + d * f;
      go = g1 + d * f;
    }
    if (hi0 == lo0 || d == 0 || f == 0) {
      std::memset(g0, 0, sizeof(float) * d * f);
      std::memset(g1, 0, sizeof(float) * d * f);
      std::memset(go, 0, sizeof(float) * f * d);
      std::memset(dgp + lo0, 0, sizeof(float) * (hi0 - lo0));
      if (f == 0) std::memset(dxp + lo0 * d, 0, sizeof(float) * (hi0 - lo0) * d);
      return;
    }
    float* xs = Scratch(kRows * (2 * d + 3 * f));
    float *g = xs + kRows * d, *da = g + kRows * d, *db = da + kRows * f, *h = db + kRows * f;
    const float *w0e = w0p + e * d * f, *w1e = w1p + e * d * f, *woe = wop + e * f * d;
    const int64_t step = BlockRows(p.start[e + 1] - p.start[e]);
    for (int64_t lo = lo0; lo < hi0; lo += step) {
      const int rows = static_cast<int>(std::min(hi0, lo + step) - lo);
      const float beta = lo == lo0 ? 0.0f : 1.0f;  // weight gradients accumulate over blocks
      const float *ar = ap + lo * f, *br = bp + lo * f;
      GatherRows(xp, s, lo, lo + rows, d, xs);
      GatherRows(dyp, s, lo, lo + rows, d, g);  // dy of each row's token (gate not applied)
      // u = dy wo[e]^T into da; the gate's cotangent u . h; then dh = gate u and
      // dys = gate dy in place; then da, db in place.
      gemm(kNoTrans, kTrans, rows, f, d, g, d, woe, d, 0.0f, da, f);
      up(ar, br, h, rows * f);
      for (int r = 0; r < rows; ++r) {
        float* u = da + r * f;
        const float* hr = h + r * f;
        float dot = 0.0f;
        for (int64_t j = 0; j < f; ++j) dot += u[j] * hr[j];
        dgp[lo + r] = dot;
        const float c = gt[lo + r];
        for (int64_t j = 0; j < f; ++j) u[j] *= c;
        float* gr = g + r * d;
        for (int64_t j = 0; j < d; ++j) gr[j] *= c;
      }
      down(da, ar, br, da, db, rows * f);
      gemm(kTrans, kNoTrans, f, d, rows, h, f, g, d, beta, go, d);
      gemm(kTrans, kNoTrans, d, f, rows, xs, d, da, f, beta, g0, f);
      gemm(kTrans, kNoTrans, d, f, rows, xs, d, db, f, beta, g1, f);
      float* dxr = dxp + lo * d;
      gemm(kNoTrans, kTrans, rows, d, f, da, f, w0e, f, 0.0f, dxr, d);
      gemm(kNoTrans, kTrans, rows, d, f, db, f, w1e, f, 1.0f, dxr, d);
    }
  });
  for (const Task& task : tasks) {  // the partial gradients of cut experts, added in
    if (task.part < 0) continue;
    const float* part = parts.data() + task.part * 3 * d * f;
    float* outs[3] = {d0 + task.e * d * f, d1 + task.e * d * f, dop + task.e * f * d};
    for (int m = 0; m < 3; ++m)
      for (int64_t j = 0; j < d * f; ++j) outs[m][j] += part[m * d * f + j];
  }
  if (!Combine(pool, dxp, n, inv.typed_data(), nullptr, p.t, inv.dimensions()[1], d,
               dx->typed_data()))
    return ffi::Error::InvalidArgument("lattice_moe_swiglu_bwd: inv");
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeMoeSwigluFwd, Fwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeMoeSwigluBwd, Bwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// Plain C for Python (ctypes): the products' code of this library's grouped kernels
// (0 the default, GemmKind in grouped_cpu.cc; 1 OpenBLAS, 2 AVX2, 3 AVX-512, each capped
// at what the CPU runs; negative: leave it as it is); returns the one now in use (1-3).
extern "C" int32_t LatticeMoeSetGemm(int32_t kind) {
  if (kind >= 0) SetGemmKind(kind);
  return GemmKind();
}

// For tests (ctypes): one small_gemm.h product on instruction set `isa` (2 AVX2, 3
// AVX-512), form 0 nn, 1 nt, 2 tn (shapes as in small_gemm.h); returns 0 without running
// it where the CPU (or this build) lacks that instruction set.
extern "C" int32_t LatticeSmallGemm(int32_t isa, int32_t form, int64_t m, int64_t n,
                                    int64_t k, const float* a, int64_t lda, const float* b,
                                    int64_t ldb, float* c, int64_t ldc, int32_t accumulate) {
  const SmallGemm g = SmallGemmFor(isa);
  if (g.isa != isa || form < 0 || form > 2) return 0;
  (form == 0 ? g.nn : form == 1 ? g.nt : g.tn)(m, n, k, a, lda, b, ldb, c, ldc,
                                                accumulate != 0);
  return 1;
}
