// Process start-up shared by every executable: intra-op thread count and a
// check that libtorch's BLAS is a fast one.
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>

namespace hra {

struct RuntimeInfo {
    int threads = 1;
    std::string threads_from;   // "--threads", "OMP_NUM_THREADS" or "online CPUs"
    std::string blas;           // e.g. "OpenBLAS 0.3.21 ..." or "unknown"
    bool blas_is_fast = true;   // false when a 512^3 product was slow
    double gemm_gflops = 0;     // measured (matmul_rate, 512) only when OpenBLAS was not found
    std::string torch_version;
    std::string allocator;      // allocator_description()
};

// Sets libtorch's intra-op threads: `requested` when > 0, else OMP_NUM_THREADS
// when set, else the number of online CPUs (Debian's libtorch defaults to 1).
// Detects OpenBLAS; when absent, times a 512^3 float product and warns on
// stderr if it is slow. Logs a one-line summary (info level).
RuntimeInfo init_runtime(int requested = 0);

// "threads=2 (online CPUs), BLAS=OpenBLAS ..., jemalloc 5.3.0 (freed pages kept), libtorch 1.13.1"
std::string describe(const RuntimeInfo& info);

// Measured matmul rate (FLOP/s) of this machine in `dtype` on `device`: an
// n×n by n×n product, the median of at least 7 timed products after a
// warm-up, and of as many as fit in `min_seconds` (a longer probe rides out
// a slow spell of the machine). What GEMM efficiency is reported against
// (n = 1024, 0.3 s in training) and the slow-BLAS check (n = 512). Draws no
// random numbers.
double matmul_rate(c10::ScalarType dtype, const std::string& device = "cpu", int64_t n = 1024, double min_seconds = 0);

// Number of online CPUs (at least 1).
int online_cpus();

}  // namespace hra
