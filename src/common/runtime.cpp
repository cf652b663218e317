#include "common/runtime.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include "common/allocator.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "common/torch_compat.h"

namespace hra {

int online_cpus() {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<int>(n) : 1;
}

namespace {

int parse_threads(const char* text, const char* source) {
    char* end = nullptr;
    long n = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || n <= 0 || n > 4096)
        throw Error(std::string("invalid thread count '") + text + "' (expected a positive integer)",
                    {"", source, 0});
    return static_cast<int>(n);
}

}  // namespace

RuntimeInfo init_runtime(int requested) {
    RuntimeInfo info;
    info.torch_version = TORCH_VERSION;
    info.allocator = allocator_description();
    const char* omp = std::getenv("OMP_NUM_THREADS");
    if (requested > 0) {
        info.threads = requested;
        info.threads_from = "--threads";
    } else if (omp && *omp) {
        info.threads = parse_threads(omp, "OMP_NUM_THREADS");
        info.threads_from = "OMP_NUM_THREADS";
    } else {
        info.threads = online_cpus();
        info.threads_from = "online CPUs";
    }
    // More OpenMP threads than cores stall every parallel region (1,000 on 2 cores did not finish a step).
    if (info.threads > 4 * online_cpus())
        throw Error(strprintf("%d threads (from %s) on %d online CPUs: at most 4 per CPU", info.threads, info.threads_from.c_str(),
                              online_cpus()));
    at::set_num_threads(info.threads);

    using ConfigFn = char* (*)();
    if (auto fn = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
        const std::string config = fn() ? fn() : "";
        info.blas = config.rfind("OpenBLAS", 0) == 0 ? config : "OpenBLAS " + config;
        while (!info.blas.empty() && info.blas.back() == ' ') info.blas.pop_back();
    } else {
        info.gemm_gflops = matmul_rate(at::kFloat, "cpu", 512) / 1e9;
        // OpenBLAS or MKL on one modern core exceed 30 GFLOP/s; the reference BLAS gives ~1-3.
        info.blas_is_fast = info.gemm_gflops > 10.0;
        info.blas = info.blas_is_fast ? "unknown (fast)" : "unknown (slow)";
    }
    if (!info.blas_is_fast) {
        log_warning(strprintf("libtorch's BLAS is slow (512^3 float product at %.1f GFLOP/s): "
                              "libblas.so.3 is probably the reference BLAS, which makes matrix products ~20x slower. "
                              "Install OpenBLAS: apt-get install libopenblas0-openmp",
                              info.gemm_gflops));
    }
    log_info("hra: " + describe(info));
    return info;
}

double matmul_rate(c10::ScalarType dtype, const std::string& device, int64_t n, double min_seconds) {
    at::NoGradGuard no_grad;
    const c10::Device d(device);
    // No random numbers here: the global generator drives dropout and must not move.
    auto a = at::linspace(-1, 1, n * n).view({n, n}).to(d, dtype), b = a.t().contiguous();
    auto c = at::mm(a, b);  // warm-up
    compat::cuda_synchronize(d);
    std::vector<double> t;
    const auto start = std::chrono::steady_clock::now();
    while (t.size() < 7 || (t.size() < 10000 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() < min_seconds)) {
        auto t0 = std::chrono::steady_clock::now();
        c = at::mm(a, b);
        compat::cuda_synchronize(d);
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    const auto mid = t.begin() + static_cast<std::ptrdiff_t>(t.size() / 2);
    std::nth_element(t.begin(), mid, t.end());
    return 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n) / *mid;
}

std::string describe(const RuntimeInfo& info) {
    std::string s = "threads=" + std::to_string(info.threads) + " (" + info.threads_from + "), BLAS=" +
                    info.blas;
    if (info.gemm_gflops > 0) {
        s += strprintf(" [%.1f GFLOP/s]", info.gemm_gflops);
    }
    return s + ", " + info.allocator + ", libtorch " + info.torch_version;
}

}  // namespace hra
