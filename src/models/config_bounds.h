// Limits every model config is checked against before anything is allocated: per-size bounds
// no published model comes near, and a parameter budget, since sizes that are each within their
// bound can still multiply into terabytes (vocab_size 2^24 x hidden_size 2^17 is 2^41 weights).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"

namespace hra::bounds {

// 2^40 parameters (4 TiB in float32): 2.7x Llama 3.1 405B, the largest dense open model.
constexpr double kMaxParameters = 1099511627776.0;
constexpr int64_t kMaxChannels = int64_t{1} << 16;  // diffusion channels (SD-XL: 1280)
constexpr int64_t kMaxBlockDepth = 64;               // layers or transformer layers per block (SD-XL: 10)

// `value` must lie in lo..hi; the error names the key.
inline void within(int64_t value, int64_t lo, int64_t hi, const std::string& source, const std::string& key) {
    if (value < lo || value > hi)
        throw Error(std::to_string(value) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi) + ", beyond any model",
                    {source, key});
}
inline void within(const std::vector<int64_t>& values, int64_t lo, int64_t hi, const std::string& source, const std::string& key) {
    for (auto v : values) within(v, lo, hi, source, key);
}

// `estimate` is a lower estimate of the parameter count (sums of products in double, which
// cannot overflow): a model over the budget is an error naming the config before any weight.
inline void parameter_budget(double estimate, const std::string& source) {
    if (estimate > kMaxParameters) {
        char text[160];
        std::snprintf(text, sizeof text, "these sizes make at least %.3g parameters, beyond any model (at most 2^40 = %.3g)", estimate,
                      kMaxParameters);
        throw Error(text, {source});
    }
}

}  // namespace hra::bounds
