#include "common/runtime.h"

#include <dlfcn.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include "common/error.h"

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

// Float GFLOP/s of a 512^3 product (best of three, after one warm-up).
double time_gemm_512() {
    auto a = at::rand({512, 512});
    auto b = at::rand({512, 512});
    auto c = at::mm(a, b);
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        c = at::mm(a, b);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::min(best, s);
    }
    return 2.0 * 512 * 512 * 512 / best / 1e9;
}

}  // namespace

RuntimeInfo init_runtime(int requested, bool quiet) {
    RuntimeInfo info;
    info.torch_version = TORCH_VERSION;
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
    at::set_num_threads(info.threads);

    using ConfigFn = char* (*)();
    if (auto fn = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
        const std::string config = fn() ? fn() : "";
        info.blas = config.rfind("OpenBLAS", 0) == 0 ? config : "OpenBLAS " + config;
        while (!info.blas.empty() && info.blas.back() == ' ') info.blas.pop_back();
    } else {
        info.gemm_gflops = time_gemm_512();
        // OpenBLAS or MKL on one modern core exceed 30 GFLOP/s; the reference BLAS gives ~1-3.
        info.blas_is_fast = info.gemm_gflops > 10.0;
        info.blas = info.blas_is_fast ? "unknown (fast)" : "unknown (slow)";
    }
    if (!info.blas_is_fast) {
        std::fprintf(stderr,
                     "hra: WARNING: libtorch's BLAS is slow (512^3 float product at %.1f GFLOP/s): "
                     "libblas.so.3 is probably the reference BLAS, which makes matrix products ~20x slower. "
                     "Install OpenBLAS: apt-get install libopenblas0-openmp\n",
                     info.gemm_gflops);
    }
    if (!quiet) std::fprintf(stderr, "hra: %s\n", describe(info).c_str());
    return info;
}

std::string describe(const RuntimeInfo& info) {
    std::string s = "threads=" + std::to_string(info.threads) + " (" + info.threads_from + "), BLAS=" +
                    info.blas;
    if (info.gemm_gflops > 0) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " [%.1f GFLOP/s]", info.gemm_gflops);
        s += buf;
    }
    return s + ", libtorch " + info.torch_version;
}

}  // namespace hra
