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

#include "small_gemm.h"
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

// The grouped kernels' products (grouped_cpu.cc, moe_cpu.cc): 1 OpenBLAS's sgemm; 2 / 3
// small_gemm.h's AVX2 / AVX-512 products (capped at what the CPU runs); 0 (the default):
// AVX-512 where the CPU has it, else sgemm. Informal, one core of the 2-core Xeon (3 Dec
// 2026), an expert's [128, 256] x [256, 256] products with the weights streamed from 32
// experts: AVX-512 nn / nt / tn 150-159 / 156-161 / 150-152 GFLOP/s against OpenBLAS's
// SkylakeX kernels' 115-125 / 115-120 / 133-145; AVX2 89-90 / 95-99 / 92-97 against
// OpenBLAS's Haswell kernels' 92-95 / 90-94 / 100-102; the whole MoE layer
// (benchmarks/moe_layer.py, OpenBLAS on its Haswell kernels) 32.3 / 36.5 ms on the AVX2
// products against 32.8 / 37.4 on sgemm at E = 8 / 32, one run: equal within the
// noise, so the default leaves AVX2-only CPUs on sgemm (the benchmark times the AVX2
// products beside it, `grouped_avx2`, so an AVX2-only machine measures its own case).
int32_t GemmKind();            // the code in use: 1 (sgemm), 2 or 3
void SetGemmKind(int32_t kind);  // 0 default, 1, 2, 3 (anything else: 0)

// C (+)= op(A) op(B) as sgemm's row-major call, on the code GemmKind() names when the
// object is made (small_gemm.h for beta 0 or 1 and at most one operand transposed; sgemm
// otherwise).
class Products {
 public:
  explicit Products(Sgemm sgemm) : sgemm_(sgemm) {
    const int32_t kind = GemmKind();
    if (kind != 1) own_ = SmallGemmFor(kind);
  }
  void operator()(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                  int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                  int64_t ldc) const {
    const bool ta = trans_a == kTrans, tb = trans_b == kTrans;
    if (own_.isa != 0 && !(ta && tb) && (beta == 0.0f || beta == 1.0f)) {
      const GemmFn f = ta ? own_.tn : tb ? own_.nt : own_.nn;
      f(m, n, k, a, lda, b, ldb, c, ldc, beta != 0.0f);
      return;
    }
    sgemm_(kRowMajor, trans_a, trans_b, static_cast<int>(m), static_cast<int>(n),
           static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b, static_cast<int>(ldb),
           beta, c, static_cast<int>(ldc));
  }

 private:
  Sgemm sgemm_;
  SmallGemm own_;
};
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
