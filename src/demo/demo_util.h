// Small helpers the demos share: progress lines on stderr, wall-clock seconds, loss summaries.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/log.h"

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

// What a reader of a learning-rate sweep should know about the choice of `best_lr`
// (the first of the best `scores`, in `grid` order): "" when nothing, else that
// nothing scored (`none`: what scoring means), that several tie, or that the
// choice sits at an edge of the grid, where the best may lie beyond it.
inline std::string lr_note(const std::vector<double>& grid, const std::vector<double>& scores, double best_lr, const char* none) {
    const double best = scores.empty() ? 0 : *std::max_element(scores.begin(), scores.end());
    const auto ties = std::count(scores.begin(), scores.end(), best);
    if (best == 0) return strprintf("no learning rate %s on the validation split; the grid's first, %g, is kept", none, best_lr);
    if (ties > 1) return strprintf("%lld learning rates tie at %.3f; the first in the grid, %g, is kept", static_cast<long long>(ties), best, best_lr);
    if (grid.size() > 1 && best_lr == *std::min_element(grid.begin(), grid.end()))
        return strprintf("the chosen learning rate %g is the grid's lowest: the best may lie below it", best_lr);
    if (grid.size() > 1 && best_lr == *std::max_element(grid.begin(), grid.end()))
        return strprintf("the chosen learning rate %g is the grid's highest: the best may lie above it", best_lr);
    return "";
}

}  // namespace hra::demo_util
