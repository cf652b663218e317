// Start-up: thread count selection and the BLAS check.
#include <cstdlib>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "common/allocator.h"
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

TEST(Runtime, AllocatorIsTheConfiguredJemalloc) {
    const std::string a = init_runtime(0).allocator;
    if (!built_with_jemalloc()) GTEST_SKIP() << "built without jemalloc: " << a;
    // The linked jemalloc is the process's malloc, with the build's setting unless MALLOC_CONF overrides it.
    EXPECT_EQ(a.rfind("jemalloc 5.", 0), 0u) << a;
    if (!std::getenv("MALLOC_CONF")) {
        EXPECT_NE(a.find("(freed pages kept)"), std::string::npos) << a;
    }
    void* p = std::malloc(64 << 20);  // a block glibc would map afresh
    ASSERT_NE(p, nullptr);
    std::free(p);
}

TEST(Log, LevelsFilterAndWarningsPrintOnce) {
    const LogLevel before = log_level();
    set_log_level(LogLevel::Info);
    testing::internal::CaptureStderr();
    log_debug("hidden detail");
    log_info("shown summary");
    log_warning("a warning");
    static int run = 0;  // warn_once remembers for the whole process (--gtest_repeat)
    const std::string once = "only once " + std::to_string(run++);
    warn_once(once);
    warn_once(once);
    {
        ScopedLogLevel quiet(LogLevel::Warning);
        log_info("inner run step line");
        log_warning("inner warning");
    }
    log_info("after the scope");
    {
        ScopedLogLevel louder(LogLevel::Debug);  // a scope never makes output louder
        log_debug("still hidden");
    }
    set_log_level(LogLevel::Debug);  // -v
    log_debug("a debug detail");
    set_log_level(LogLevel::Info);
    log_error("an error");
    const std::string out = testing::internal::GetCapturedStderr();
    set_log_level(before);
    EXPECT_EQ(out,
              "shown summary\n"
              "hra: warning: a warning\n"
              "hra: warning: " + once + "\n"
              "hra: warning: inner warning\n"
              "after the scope\n"
              "a debug detail\n"
              "hra: error: an error\n");
    EXPECT_EQ(strprintf("%05.1f|%s|%lld", 3.14159, "x", 12LL), "003.1|x|12");
}
