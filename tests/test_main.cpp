// GoogleTest entry point: the same start-up as every hra executable.
#include <cstdio>

#include <gtest/gtest.h>

#include "common/log.h"
#include "common/runtime.h"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    // Training runs inside the tests print warnings, not their step lines.
    hra::set_log_level(hra::LogLevel::Warning);
    const auto info = hra::init_runtime(0);
    std::fprintf(stderr, "hra_tests: %s\n", hra::describe(info).c_str());
    return RUN_ALL_TESTS();
}
