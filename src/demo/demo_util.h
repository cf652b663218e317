// Small helpers the demos share: progress lines on stderr and wall-clock seconds.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>

namespace hra::demo_util {

// One progress line on stderr, flushed (stdout holds the table and its JSON line).
inline void say(const std::string& s) {
    std::fprintf(stderr, "%s\n", s.c_str());
    std::fflush(stderr);
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace hra::demo_util
