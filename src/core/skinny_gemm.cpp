#include "core/skinny_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace hra::core {

namespace {

// OpenBLAS runs a product of fewer multiply-adds than this on one thread already
// (interface/gemm.c: SMP_THRESHOLD_MIN 65536 × GEMM_MULTITHREAD_THRESHOLD 4).
constexpr double kOpenBlasOneThread = 65536.0 * 4;
// Below this, one single-threaded call beats two half-size ones (measured on the
// 2-core machine: at 0.5 M multiply-adds 16 µs against 21 µs, at 1 M equal, at
// 2 M 64 µs against 52 µs), and each block keeps at least this many rows.
constexpr double kSplitMacs = 1.5e6;
constexpr int64_t kMinBlockRows = 16;

// How many row blocks: 0 for a plain call (OpenBLAS's own choice), 1 for one
// single-threaded call, else one per thread.
int64_t blocks_for(const at::Tensor& a, const at::Tensor& b) {
    if (!a.is_cpu() || at::in_parallel_region()) return 0;
    const int64_t threads = at::get_num_threads(), n = a.size(0);
    const double macs = static_cast<double>(n) * static_cast<double>(a.size(1)) * static_cast<double>(b.size(1));
    if (threads < 2 || macs < kOpenBlasOneThread) return 0;
    if (macs < kSplitMacs || n < kMinBlockRows * threads) return 1;
    return threads;
}

// One block still goes through a parallel region (about 3 µs; at::parallel_for
// runs a range of one inline), since inside one BLAS runs on one thread.
template <class F>
void for_row_blocks(int64_t n, int64_t blocks, const F& f) {
    at::parallel_for(0, std::max<int64_t>(blocks, 2), 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < std::min(end, blocks); ++i) {
            const int64_t lo = i * n / blocks, hi = (i + 1) * n / blocks;
            if (hi > lo) f(lo, hi - lo);
        }
    });
}

}  // namespace

at::Tensor mm_by_rows(const at::Tensor& a, const at::Tensor& b) {
    const int64_t blocks = blocks_for(a, b);
    if (blocks == 0) return at::mm(a, b);
    auto out = at::empty({a.size(0), b.size(1)}, b.options());
    for_row_blocks(a.size(0), blocks, [&](int64_t lo, int64_t len) {
        auto part = out.narrow(0, lo, len);
        at::mm_out(part, a.narrow(0, lo, len), b);
    });
    return out;
}

at::Tensor addmm_by_rows(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b, double beta, double alpha) {
    const int64_t blocks = blocks_for(a, b);
    if (blocks == 0) return at::addmm(c, a, b, beta, alpha);
    auto out = at::empty({a.size(0), b.size(1)}, b.options());
    for_row_blocks(a.size(0), blocks, [&](int64_t lo, int64_t len) {
        auto part = out.narrow(0, lo, len);
        at::addmm_out(part, c.narrow(0, lo, len), a.narrow(0, lo, len), b, beta, alpha);
    });
    return out;
}

}  // namespace hra::core
