#include "core/skinny_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace hra::core {

namespace {

// From this many multiply-adds on, with at least kMinBlockRows rows per block, a product is
// split into one single-threaded block per thread; below, it is one call on one thread.
// Measured on the 2-core machine (OpenBLAS 0.3.21, µs; OpenBLAS's 2 threads / 1 thread / split):
//   [16, 4096]ᵀ·[16, 8]     0.5 M   119 /  18 / -
//   [32, 1024]·[1024, 32]   1.0 M    40 /  24 / -
//   [256, 512]·[512, 8]     1.0 M    77 /  29 / 76
//   [256, 1024]·[1024, 8]   2.1 M   147 /  59 / 45
//   [256, 4096]·[4096, 8]   8.4 M   550 / 246 / 158
// and under 0.3 M all three within 0.1 µs: OpenBLAS's own threads never won on these shapes.
constexpr double kSplitMacs = 2e6;
constexpr int64_t kMinBlockRows = 16;

// Whether autograd would record the product: then it stays one call, which it records.
bool recorded(const at::Tensor& t) { return t.requires_grad() && at::GradMode::is_enabled(); }

// How many row blocks for a·b (+ c): 0 for one call on the default threads, 1 for one call
// on one thread, else one block per thread.
int64_t blocks_for(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c = at::Tensor()) {
    if (!a.is_cpu() || at::in_parallel_region()) return 0;
    const int64_t threads = at::get_num_threads(), n = a.size(0);
    if (threads < 2) return 0;
    const double macs = static_cast<double>(n) * static_cast<double>(a.size(1)) * static_cast<double>(b.size(1));
    if (recorded(a) || recorded(b) || recorded(c) || macs < kSplitMacs || n < kMinBlockRows * threads) return 1;
    return threads;
}

// One BLAS thread for the calls in its scope: OpenBLAS built with OpenMP (Debian's) sizes its
// team by the calling thread's omp_get_max_threads() at each call. The setting is the calling
// thread's own, and is put back on leaving. Without OpenMP (the fuzz build) it does nothing.
class OneBlasThread {
public:
    OneBlasThread() {
#ifdef _OPENMP
        before_ = omp_get_max_threads();
        if (before_ > 1) omp_set_num_threads(1);
#endif
    }
    ~OneBlasThread() {
#ifdef _OPENMP
        if (before_ > 1) omp_set_num_threads(before_);
#endif
    }
    OneBlasThread(const OneBlasThread&) = delete;
    OneBlasThread& operator=(const OneBlasThread&) = delete;

#ifdef _OPENMP
private:
    int before_ = 1;
#endif
};

// The workers are OpenMP threads with their own thread-local state: without the caller's,
// they would run with grad mode on (the default) while the caller, an autograd node's forward
// or backward, runs with it off, and at::mm_out refuses operands that require grad there;
// under InferenceMode they could not write into the output.
template <class F>
void for_row_blocks(int64_t n, int64_t blocks, const F& f) {
    const at::ThreadLocalState caller;
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
        at::ThreadLocalStateGuard guard(caller);
        for (int64_t i = begin; i < end; ++i) {
            const int64_t lo = i * n / blocks, hi = (i + 1) * n / blocks;
            if (hi > lo) f(lo, hi - lo);
        }
    });
}

}  // namespace

at::Tensor mm_by_rows(const at::Tensor& a, const at::Tensor& b) {
    const int64_t blocks = blocks_for(a, b);
    if (blocks == 0) return at::mm(a, b);
    if (blocks == 1) {
        OneBlasThread one;
        return at::mm(a, b);
    }
    auto out = at::empty({a.size(0), b.size(1)}, b.options());
    for_row_blocks(a.size(0), blocks, [&](int64_t lo, int64_t len) {
        auto part = out.narrow(0, lo, len);
        at::mm_out(part, a.narrow(0, lo, len), b);
    });
    return out;
}

at::Tensor addmm_by_rows(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double beta, double alpha) {
    const int64_t blocks = blocks_for(a, b, c);
    if (blocks == 0) return at::addmm(c, a, b, beta, alpha);
    if (blocks == 1) {
        OneBlasThread one;
        return at::addmm(c, a, b, beta, alpha);
    }
    auto out = at::empty({a.size(0), b.size(1)}, b.options());
    for_row_blocks(a.size(0), blocks, [&](int64_t lo, int64_t len) {
        auto part = out.narrow(0, lo, len);
        at::addmm_out(part, c.narrow(0, lo, len), a.narrow(0, lo, len), b, beta, alpha);
    });
    return out;
}

}  // namespace hra::core
