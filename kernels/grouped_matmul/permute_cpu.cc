// Dropless MoE's row moves on CPU, called from JAX through the XLA FFI: the token
// gather into expert-sorted order and the weighted combine back, and their backward.
//
// Shape legend: T tokens, K chosen experts per token, N = T*K assignments (rows sorted
// by expert), D row width. order [N] lists, for each sorted row n, its assignment
// t*K + k; inv [T, K] is the inverse permutation (the sorted row of assignment (t, k)).
//   LatticeGatherRows:      y [N, D] = scale[n] * x[src[n]], x [T, D], src [N];
//                           scale [N] or empty (then 1)
//   LatticeCombineRows:     y [T, D] = sum_k gate[t, k] * ys[inv[t, k]], ys [N, D];
//                           gate [T, K] or empty (then 1)
//   LatticeCombineRowsBwd:  dys [N, D], dgate [T, K] from dy [T, D]: for each (t, k),
//                           n = inv[t, k], dys[n] = gate[t, k] * dy[t] and
//                           dgate[t, k] = dy[t] . ys[n]
//   LatticeSortAssignments: order [N], inv [N], counts [E] from idx [T, K] (a stable
//                           counting sort of the assignments by expert)
//   LatticeTopK:            idx [T, K], each row's K largest of x [T, E] (the router's
//                           choice; jax.lax.top_k's order)
//
// Why native: XLA:CPU ran these gathers as loop fusions at ~1.2-3 ms each for 2-4 MB
// (the MoE benchmark's E = 8 profile, jax.profiler, loaded 2-core machine) and
// materialised the [T, K, D] gathered copy before the combine's batched dot; here each
// is one pass that reads and writes each row once, and the combine writes [T, D]
// directly, so the step holds one [N, D] buffer fewer (XLA:CPU allocates the step's
// temporaries as one block; past glibc's 32 MiB mmap bound every call maps and
// faults in fresh pages).
//
// Threads: the caller and helper tasks on XLA's intra-op pool claim blocks of kBlock
// rows from an atomic counter (grouped_cpu.h's RunTasks).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "grouped_cpu.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 64;  // rows (N) or tokens (T) per claimed block

// body(lo, hi) over blocks of kBlock of [0, n), on the caller and XLA's pool.
void ParallelFor(ffi::ThreadPool pool, int64_t n, std::function<void(int64_t, int64_t)> body) {
  lattice_grouped::RunTasks(pool, (n + kBlock - 1) / kBlock, [&](int64_t b) {
    body(b * kBlock, std::min(n, (b + 1) * kBlock));
  });
}

ffi::Error GatherRows(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::S32> src,
                      ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const int64_t n = src.element_count();
  if (xd.size() != 2 || y->element_count() != n * xd[1] ||
      (scale.element_count() != 0 && scale.element_count() != n))
    return ffi::Error::InvalidArgument(
        "lattice_gather_rows: want x [T, D], src [N], scale [N] or [0], y [N, D]");
  const int64_t t = xd[0], d = xd[1];
  const float* xs = x.typed_data();
  const int32_t* s = src.typed_data();
  const float* g = scale.element_count() ? scale.typed_data() : nullptr;
  float* out = y->typed_data();
  for (int64_t r = 0; r < n; ++r)
    if (s[r] < 0 || s[r] >= t) return ffi::Error::InvalidArgument("lattice_gather_rows: src");
  ParallelFor(pool, n, [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* in = xs + s[r] * d;
      float* o = out + r * d;
      if (g == nullptr) {
        std::memcpy(o, in, sizeof(float) * d);
      } else {
        const float c = g[r];
        for (int64_t j = 0; j < d; ++j) o[j] = c * in[j];
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error CombineRows(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> ys, ffi::Buffer<ffi::S32> inv,
                       ffi::Buffer<ffi::F32> gate, ffi::ResultBuffer<ffi::F32> y) {
  const auto sd = ys.dimensions(), id = inv.dimensions();
  if (sd.size() != 2 || id.size() != 2 || y->element_count() != id[0] * sd[1] ||
      (gate.element_count() != 0 && gate.element_count() != inv.element_count()))
    return ffi::Error::InvalidArgument(
        "lattice_combine_rows: want ys [N, D], inv [T, K], gate [T, K] or [0], y [T, D]");
  const int64_t n = sd[0], d = sd[1], t = id[0], k = id[1];
  const float* in = ys.typed_data();
  const int32_t* iv = inv.typed_data();
  const float* g = gate.element_count() ? gate.typed_data() : nullptr;
  float* out = y->typed_data();
  for (int64_t a = 0; a < t * k; ++a)
    if (iv[a] < 0 || iv[a] >= n) return ffi::Error::InvalidArgument("lattice_combine_rows: inv");
  ParallelFor(pool, t, [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      float* o = out + r * d;
      if (k == 0) {
        std::memset(o, 0, sizeof(float) * d);
        continue;
      }
      // The k terms summed in order k = 0, 1, ... (as the einsum over k of the XLA path).
      const float c0 = g ? g[r * k] : 1.0f;
      const float* y0 = in + iv[r * k] * d;
      for (int64_t j = 0; j < d; ++j) o[j] = c0 * y0[j];
      for (int64_t q = 1; q < k; ++q) {
        const float c = g ? g[r * k + q] : 1.0f;
        const float* yq = in + iv[r * k + q] * d;
        for (int64_t j = 0; j < d; ++j) o[j] += c * yq[j];
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error CombineRowsBwd(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> ys,
                          ffi::Buffer<ffi::S32> inv, ffi::Buffer<ffi::F32> gate,
                          ffi::ResultBuffer<ffi::F32> dys, ffi::ResultBuffer<ffi::F32> dgate) {
  const auto yd = dy.dimensions(), sd = ys.dimensions(), id = inv.dimensions();
  if (yd.size() != 2 || sd.size() != 2 || id.size() != 2 || yd[0] != id[0] || yd[1] != sd[1] ||
      id[0] * id[1] != sd[0] || gate.element_count() != inv.element_count() ||
      dys->element_count() != ys.element_count() || dgate->element_count() != inv.element_count())
    return ffi::Error::InvalidArgument(
        "lattice_combine_rows_bwd: want dy [T, D], ys [N = T K, D], inv/gate [T, K]");
  const int64_t n = sd[0], d = sd[1], t = id[0], k = id[1];
  const float *g_in = dy.typed_data(), *y_in = ys.typed_data(), *g8 = gate.typed_data();
  const int32_t* iv = inv.typed_data();
  float *o_ys = dys->typed_data(), *o_g = dgate->typed_data();
  for (int64_t a = 0; a < t * k; ++a)
    if (iv[a] < 0 || iv[a] >= n)
      return ffi::Error::InvalidArgument("lattice_combine_rows_bwd: inv");
  ParallelFor(pool, t, [=](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const float* gr = g_in + r * d;
      for (int64_t q = 0; q < k; ++q) {
        const int64_t row = iv[r * k + q];
        const float c = g8[r * k + q];
        const float* yr = y_in + row * d;
        float* o = o_ys + row * d;
        float dot = 0.0f;
        for (int64_t j = 0; j < d; ++j) {
          o[j] = c * gr[j];
          dot += gr[j] * yr[j];
        }
        o_g[r * k + q] = dot;
      }
    }
  });
  return ffi::Error::Success();
}

// Stable counting sort of the N = T*K assignments by expert: order [N] (assignment
// t*K + k of each sorted row), inv [N] (its inverse), counts [E]. One pass to count,
// one to place; O(N + E) where XLA:CPU ran a general sort and a scatter.
ffi::Error SortAssignments(ffi::Buffer<ffi::S32> idx, ffi::ResultBuffer<ffi::S32> order,
                           ffi::ResultBuffer<ffi::S32> inv, ffi::ResultBuffer<ffi::S32> counts) {
  const int64_t n = idx.element_count(), e_count = counts->element_count();
  if (order->element_count() != n || inv->element_count() != n)
    return ffi::Error::InvalidArgument("lattice_sort_assignments: want order, inv [N]");
  const int32_t* e_of = idx.typed_data();
  int32_t *o = order->typed_data(), *iv = inv->typed_data(), *c = counts->typed_data();
  std::vector<int64_t> next(e_count + 1, 0);
  for (int64_t a = 0; a < n; ++a) {
    if (e_of[a] < 0 || e_of[a] >= e_count)
      return ffi::Error::InvalidArgument("lattice_sort_assignments: expert index out of range");
    ++next[e_of[a] + 1];
  }
  for (int64_t e = 0; e < e_count; ++e) {
    c[e] = static_cast<int32_t>(next[e + 1]);
    next[e + 1] += next[e];
  }
  for (int64_t a = 0; a < n; ++a) {
    const int64_t pos = next[e_of[a]]++;
    o[pos] = static_cast<int32_t>(a);
    iv[a] = static_cast<int32_t>(pos);
  }
  return ffi::Error::Success();
}

// The indices of each row's k largest values, largest first, in IEEE total order
// (-NaN < -inf < ... < -0 < +0 < ... < inf < +NaN) with ties to the lower index:
// the order of jax.lax.top_k on CPU. One pass over the row's E values keeping a
// sorted list of k.
ffi::Error TopK(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::S32> idx) {
  const auto xd = x.dimensions(), id = idx->dimensions();
  if (xd.size() != 2 || id.size() != 2 || id[0] != xd[0] || id[1] > xd[1])
    return ffi::Error::InvalidArgument("lattice_top_k: want x [T, E], idx [T, K], K <= E");
  const int64_t t = xd[0], e = xd[1], k = id[1];
  const float* xp = x.typed_data();
  int32_t* out = idx->typed_data();
  ParallelFor(pool, t, [=](int64_t lo, int64_t hi) {
    std::vector<int32_t> keys(k);
    for (int64_t r = lo; r < hi; ++r) {
      int32_t* best = out + r * k;
      int64_t filled = 0;
      for (int64_t j = 0; j < e; ++j) {
        int32_t key;
        std::memcpy(&key, xp + r * e + j, sizeof(key));
        if (key < 0) key ^= 0x7fffffff;  // total order as signed integers
        if (filled == k && key <= keys[k - 1]) continue;
        int64_t p = filled < k ? filled++ : k - 1;
        for (; p > 0 && keys[p - 1] < key; --p) {  // ties stay behind the lower index
          keys[p] = keys[p - 1];
          best[p] = best[p - 1];
        }
        keys[p] = key;
        best[p] = static_cast<int32_t>(j);
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeTopK, TopK,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeSortAssignments, SortAssignments,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeGatherRows, GatherRows,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeCombineRows, CombineRows,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(LatticeCombineRowsBwd, CombineRowsBwd,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
