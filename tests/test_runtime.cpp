// Start-up: thread count selection and the BLAS check; the demos' forked runs and learning-rate protocol.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include "common/allocator.h"
#include "common/error.h"
#include "common/log.h"
#include "common/runtime.h"
#include "demo/demo_util.h"
#include "test_util.h"

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
}

namespace {
double resident_mib() {
    long pages = 0, resident = 0;
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f || std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    if (f) std::fclose(f);
    return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}
}  // namespace

// A freed 256 MiB block stays resident (the next step reuses it without page
// faults) until release_free_memory() hands it back.
TEST(Runtime, FreedPagesAreKeptUntilReleased) {
    if (!built_with_jemalloc() || std::getenv("MALLOC_CONF")) GTEST_SKIP() << "not the build's jemalloc setting";
    release_free_memory();
    const double before = resident_mib();
    constexpr size_t kBytes = size_t{256} << 20;
    char* p = static_cast<char*>(std::malloc(kBytes));
    ASSERT_NE(p, nullptr);
    std::memset(p, 1, kBytes);
    asm volatile("" : : "r"(p) : "memory");  // the block is really written
    std::free(p);
    const double kept = resident_mib() - before;
    release_free_memory();
    const double after = resident_mib() - before;
    EXPECT_GT(kept, 200.0);
    EXPECT_LT(after, 32.0);
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

// The demos' side-by-side fine-tuning runs (demo_util::run_forked): results come back in the jobs' order from
// children with one thread each; a job that throws or dies fails the call, naming the job, after the others ended.
TEST(Runtime, ForkedRunsKeepOrderOneThreadAndNameFailures) {
    test::TempDir dir;
    at::set_num_threads(2);
    const int parent = static_cast<int>(::getpid());
    std::vector<demo_util::ForkedJob> jobs;
    for (int i = 0; i < 3; ++i)
        jobs.push_back({"job" + std::to_string(i), dir / ("job" + std::to_string(i) + ".json"), [i]() {
                            // A different duration each, so that the children end out of order.
                            ::usleep(static_cast<useconds_t>((3 - i) * 100000));
                            torch::manual_seed(static_cast<uint64_t>(i));
                            return nlohmann::json{{"i", i}, {"pid", static_cast<int>(::getpid())}, {"threads", at::get_num_threads()},
                                                  {"draw", torch::rand({1}).item<double>()}};
                        }});
    const auto got = demo_util::run_forked(jobs, 2);
    ASSERT_EQ(got.size(), 3u);
    for (int i = 0; i < 3; ++i) {
        EXPECT_EQ(got[static_cast<size_t>(i)]["i"], i);
        EXPECT_NE(got[static_cast<size_t>(i)]["pid"], parent);
        EXPECT_EQ(got[static_cast<size_t>(i)]["threads"], 1);
        torch::manual_seed(static_cast<uint64_t>(i));
        EXPECT_EQ(got[static_cast<size_t>(i)]["draw"].get<double>(), torch::rand({1}).item<double>());  // the same stream as here
    }
    EXPECT_EQ(at::get_num_threads(), 2);  // the parent's count is untouched

    jobs[0].run = []() -> nlohmann::json { throw Error("no such base model"); };
    jobs[1].run = []() -> nlohmann::json { ::raise(SIGKILL); return {}; };
    try {
        demo_util::run_forked(jobs, 2);
        ADD_FAILURE() << "failed jobs were not reported";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("job0: no such base model"), std::string::npos) << what;
        EXPECT_NE(what.find("job1: killed by signal 9"), std::string::npos) << what;
        EXPECT_EQ(what.find("job2"), std::string::npos) << what;
    }
    EXPECT_TRUE(std::filesystem::exists(dir / "job2.json"));  // the third still ran to its end
    at::set_num_threads(1);
}

// The adapter demos' learning-rate protocol (demo_util::choose_learning_rates): the first seed trains every rate, the
// best validation score wins (ties: the grid's first, with a note), the other seeds train at the chosen rate only.
TEST(Runtime, LearningRateProtocolTrainsTheGridThenTheOtherSeeds) {
    using demo_util::RunSpec;
    std::vector<std::vector<std::string>> calls;
    auto train_all = [&](const std::vector<RunSpec>& specs) {
        calls.emplace_back();
        std::vector<std::string> runs;
        for (const auto& s : specs) calls.back().push_back(s.name()), runs.push_back("trained " + s.name());
        return runs;
    };
    const std::map<double, double> score = {{1e-3, 0.2}, {3e-3, 0.5}, {1e-2, 0.5}, {1e-4, 0.0}, {1e-1, 0.3}};
    auto validate = [&](const RunSpec& s, const std::string& run) {
        EXPECT_EQ(run, "trained " + s.name());
        return score.at(s.lr);
    };
    const auto got = demo_util::choose_learning_rates<std::string>({{"hra", {1e-3, 3e-3, 1e-2}}, {"lora", {1e-4, 1e-1}}}, {5, 6, 7}, train_all,
                                                                   validate, "scored");
    ASSERT_EQ(calls.size(), 2u);
    EXPECT_EQ(calls[0], (std::vector<std::string>{"hra-lr0.001-seed5", "hra-lr0.003-seed5", "hra-lr0.01-seed5", "lora-lr0.0001-seed5",
                                                   "lora-lr0.1-seed5"}));
    EXPECT_EQ(calls[1], (std::vector<std::string>{"hra-lr0.003-seed6", "hra-lr0.003-seed7", "lora-lr0.1-seed6", "lora-lr0.1-seed7"}));
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].lr, 3e-3);  // tied with 1e-2: the grid's first
    EXPECT_EQ(got[0].note, "2 learning rates tie at 0.500; the first in the grid, 0.003, is kept");
    EXPECT_EQ(got[0].runs, (std::vector<std::string>{"trained hra-lr0.003-seed5", "trained hra-lr0.003-seed6", "trained hra-lr0.003-seed7"}));
    EXPECT_EQ(got[0].grid.size(), 3u);
    EXPECT_EQ(got[0].grid[2], (std::pair<std::string, double>{"0.01", 0.5}));
    EXPECT_EQ(got[1].lr, 1e-1);
    EXPECT_EQ(got[1].note, "the chosen learning rate 0.1 is the grid's highest: the best may lie above it");
    EXPECT_EQ(got[1].runs.back(), "trained lora-lr0.1-seed7");
}
