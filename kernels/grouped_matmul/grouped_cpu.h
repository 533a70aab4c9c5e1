// Shared by the grouped CPU kernels (grouped_cpu.cc, moe_cpu.cc, permute_cpu.cc): the
// sgemm that Python installs, SwiGLU's elementwise code for this CPU, and a task loop
// on XLA's intra-op pool.
#ifndef LATTICE_KERNELS_GROUPED_MATMUL_GROUPED_CPU_H_
#define LATTICE_KERNELS_GROUPED_MATMUL_GROUPED_CPU_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace lattice_grouped {

// cblas_sgemm with 32-bit integers (scipy-openblas32's ABI; enums are ints).
using Sgemm = void (*)(int order, int trans_a, int trans_b, int m, int n, int k,
                       float alpha, const float* a, int lda, const float* b, int ldb,
                       float beta, float* c, int ldc);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// h = silu(a) * b over n floats; (da, db) of silu(a) * b for dh (da may alias dh).
using UpFn = void (*)(const float* a, const float* b, float* h, int64_t n);
using DownFn = void (*)(const float* dh, const float* a, const float* b, float* da, float* db,
                        int64_t n);

Sgemm GetSgemm();         // nullptr until LatticeGroupedSetSgemm
UpFn SwigluUpKernel();    // the AVX-512 / AVX2 / portable copy in use
DownFn SwigluDownKernel();

// Runs task(i) for i in [0, count) on the caller and up to pool.num_threads() - 1
// helper tasks of XLA's pool, each claiming the next index from an atomic counter (the
// caller takes tasks too, so nothing waits on a busy pool); returns when all are done.
inline void RunTasks(xla::ffi::ThreadPool pool, int64_t count,
                     std::function<void(int64_t)> task) {
  struct State {
    std::function<void(int64_t)> task;
    int64_t count;
    std::atomic<int64_t> next{0}, done{0};
    void Work() {
      for (int64_t i; (i = next.fetch_add(1)) < count;) {
        task(i);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  if (count <= 0) return;
  auto state = std::make_shared<State>();
  state->task = std::move(task);
  state->count = count;
  const int64_t helpers = std::min<int64_t>(std::max<int64_t>(1, pool.num_threads()), count) - 1;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([state] { state->Work(); });
  state->Work();
  while (state->done.load(std::memory_order_acquire) < count) std::this_thread::yield();
}

}  // namespace lattice_grouped

#endif  // LATTICE_KERNELS_GROUPED_MATMUL_GROUPED_CPU_H_
