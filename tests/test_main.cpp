// GoogleTest entry point: the same start-up as every hra executable.
#include <cstdio>

#include <gtest/gtest.h>

#include "common/runtime.h"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    const auto info = hra::init_runtime(0, /*quiet=*/true);
    std::fprintf(stderr, "hra_tests: %s\n", hra::describe(info).c_str());
    return RUN_ALL_TESTS();
}
