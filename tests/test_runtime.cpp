// Start-up: thread count selection and the BLAS check.
#include <cstdlib>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/runtime.h"

using namespace hra;

TEST(Runtime, ThreadsFromFlagEnvironmentOrCpus) {
    auto info = init_runtime(1, true);
    EXPECT_EQ(info.threads, 1);
    EXPECT_EQ(at::get_num_threads(), 1);
    EXPECT_EQ(info.threads_from, "--threads");
    setenv("OMP_NUM_THREADS", "2", 1);
    info = init_runtime(0, true);
    EXPECT_EQ(info.threads, 2);
    EXPECT_EQ(info.threads_from, "OMP_NUM_THREADS");
    setenv("OMP_NUM_THREADS", "lots", 1);
    EXPECT_THROW(init_runtime(0, true), Error);
    unsetenv("OMP_NUM_THREADS");
    info = init_runtime(0, true);
    EXPECT_EQ(info.threads, online_cpus());
    EXPECT_EQ(at::get_num_threads(), online_cpus());
    EXPECT_NE(describe(info).find("threads="), std::string::npos);
}

TEST(Runtime, BlasIsFastHere) {
    // The build machine installs OpenBLAS; a slow BLAS here is a set-up bug.
    auto info = init_runtime(0, true);
    EXPECT_TRUE(info.blas_is_fast) << describe(info);
}
