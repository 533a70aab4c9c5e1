// Splitting a native CPU kernel's output columns across XLA's intra-op thread pool
// (kernels/ternary_cpu and kernels/skinny_cpu share this).
//
// The columns [0, n) are cut into chunks of whole `block`-column blocks, about
// `chunks_per_thread` per pool thread; the caller and up to threads - 1 helper tasks
// claim chunks from an atomic counter, and the caller returns once every chunk is
// finished. The caller spins (yielding) on the last chunks rather than sleeping: a
// decoding kernel runs for tens of microseconds, less than a sleep/wake round trip.
// A helper task that starts after every chunk is claimed does nothing, so `columns`
// may capture the caller's stack by reference.

#ifndef LATTICE_KERNELS_COLUMN_CHUNKS_H_
#define LATTICE_KERNELS_COLUMN_CHUNKS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace lattice {

// Runs columns(n0, n1) over [0, n): on the caller alone if !parallel or the pool has
// one thread, else in chunks shared with the pool.
inline void ParallelColumns(xla::ffi::ThreadPool& pool, int64_t n, int64_t block,
                            int64_t chunks_per_thread, bool parallel,
                            std::function<void(int64_t, int64_t)> columns) {
  struct Shared {
    std::function<void(int64_t, int64_t)> columns;
    int64_t n = 0, width = 0, chunks = 0;
    std::atomic<int64_t> next{0}, done{0};
    void Work() {
      for (int64_t i; (i = next.fetch_add(1)) < chunks;) {
        const int64_t n0 = i * width;
        columns(n0, std::min(n, n0 + width));
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  if (n <= 0) return;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  parallel = parallel && threads > 1;
  const int64_t blocks = (n + block - 1) / block;
  const int64_t per =
      parallel ? std::max<int64_t>(1, blocks / (chunks_per_thread * threads)) : blocks;
  auto shared = std::make_shared<Shared>();
  shared->columns = std::move(columns);
  shared->n = n;
  shared->width = per * block;
  shared->chunks = (n + shared->width - 1) / shared->width;
  const int64_t helpers = parallel ? std::min(threads, shared->chunks) - 1 : 0;
  for (int64_t h = 0; h < helpers; ++h) pool.Schedule([shared] { shared->Work(); });
  shared->Work();
  while (shared->done.load(std::memory_order_acquire) < shared->chunks)
    std::this_thread::yield();
}

}  // namespace lattice

#endif  // LATTICE_KERNELS_COLUMN_CHUNKS_H_
