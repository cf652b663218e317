#include "core/skinny_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace hra::core {

namespace {

// Below this many multiply-adds a product stays one plain call: the parallel region
// costs more than it saves (measured with the 2-core machine's OpenBLAS: [2048, 16]ᵀ·[16, 8]
// split 41 µs against 10 µs plain; [256, 1024]·[1024, 8], 2.1 M, split 48 µs against 166 µs
// on OpenBLAS's two threads). Each block keeps at least kMinBlockRows rows.
constexpr double kSplitMacs = 2e6;
constexpr int64_t kMinBlockRows = 16;

// How many row blocks: 0 for a plain call, else one per thread.
int64_t blocks_for(const at::Tensor& a, const at::Tensor& b) {
    if (!a.is_cpu() || at::in_parallel_region()) return 0;
    const int64_t threads = at::get_num_threads(), n = a.size(0);
    const double macs = static_cast<double>(n) * static_cast<double>(a.size(1)) * static_cast<double>(b.size(1));
    if (threads < 2 || macs < kSplitMacs || n < kMinBlockRows * threads) return 0;
    return threads;
}

template <class F>
void for_row_blocks(int64_t n, int64_t blocks, const F& f) {
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
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
