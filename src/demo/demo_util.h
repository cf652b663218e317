// Small helpers the demos share: progress lines on stderr, wall-clock seconds, loss summaries.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "train/engine.h"

namespace hra::demo_util {

// One progress line on stderr, flushed (stdout holds the table and its JSON line).
inline void say(const std::string& s) {
    std::fprintf(stderr, "%s\n", s.c_str());
    std::fflush(stderr);
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A run's first loss, its last loss smoothed (an exponential moving average with `decay`) and its summed step time.
struct LossSummary {
    double first = 0, last = 0, seconds = 0;
};
inline LossSummary summarize(const std::vector<StepRecord>& history, double decay) {
    LossSummary s;
    for (size_t i = 0; i < history.size(); ++i) {
        s.seconds += history[i].ms / 1000.0;
        s.last = i == 0 ? history[i].loss : decay * s.last + (1 - decay) * history[i].loss;
    }
    if (!history.empty()) s.first = history.front().loss;
    return s;
}

}  // namespace hra::demo_util
