// Start-up: thread count selection and the BLAS check.
#include <cstdlib>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/log.h"
#include "common/runtime.h"

using namespace hra;

TEST(Runtime, ThreadsFromFlagEnvironmentOrCpus) {
    auto info = init_runtime(1);
    EXPECT_EQ(info.threads, 1);
    EXPECT_EQ(at::get_num_threads(), 1);
    EXPECT_EQ(info.threads_from, "--threads");
    setenv("OMP_NUM_THREADS", "2", 1);
    info = init_runtime(0);
    EXPECT_EQ(info.threads, 2);
    EXPECT_EQ(info.threads_from, "OMP_NUM_THREADS");
    setenv("OMP_NUM_THREADS", "lots", 1);
    EXPECT_THROW(init_runtime(0), Error);
    unsetenv("OMP_NUM_THREADS");
    info = init_runtime(0);
    EXPECT_EQ(info.threads, online_cpus());
    EXPECT_EQ(at::get_num_threads(), online_cpus());
    EXPECT_NE(describe(info).find("threads="), std::string::npos);
}

TEST(Runtime, BlasIsFastHere) {
    // The build machine installs OpenBLAS; a slow BLAS here is a set-up bug.
    auto info = init_runtime(0);
    EXPECT_TRUE(info.blas_is_fast) << describe(info);
}

TEST(Log, LevelsFilterAndWarningsPrintOnce) {
    const LogLevel before = log_level();
    set_log_level(LogLevel::Info);
    testing::internal::CaptureStderr();
    log_debug("hidden detail");
    log_info("shown summary");
    log_warning("a warning");
    warn_once("only once");
    warn_once("only once");
    {
        ScopedLogLevel quiet(LogLevel::Warning);
        log_info("inner run step line");
        log_warning("inner warning");
    }
    log_info("after the scope");
    log_error("an error");
    const std::string out = testing::internal::GetCapturedStderr();
    set_log_level(before);
    EXPECT_EQ(out,
              "shown summary\n"
              "hra: warning: a warning\n"
              "hra: warning: only once\n"
              "hra: warning: inner warning\n"
              "after the scope\n"
              "hra: error: an error\n");
    EXPECT_EQ(strprintf("%05.1f|%s|%lld", 3.14159, "x", 12LL), "003.1|x|12");
}
