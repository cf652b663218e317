// Text generation with the KV cache: greedy or sampled (temperature, top-k,
// top-p), stop strings and end-of-sequence ids, streaming the text.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/llama.h"
#include "text/tokenizer.h"

namespace hra {

struct SamplingOptions {
    double temperature = 0;  // 0: greedy
    int64_t top_k = 0;       // 0: off
    double top_p = 1.0;      // 1: off
    uint64_t seed = 0;
    int64_t max_new_tokens = 256;
    std::vector<std::string> stop;  // generation ends before the first of these
    std::vector<int64_t> eos_ids;   // generation ends after one of these (not printed)
};

struct GenerationResult {
    std::vector<int64_t> tokens;  // generated ids (an EOS that ended it included)
    std::string text;             // generated text, cut before a stop string
    std::string finish_reason;    // "eos", "stop", "length"
    int64_t prompt_tokens = 0;
    double prompt_seconds = 0, decode_seconds = 0;  // prefill, then the remaining steps
};

// The next token from last-position logits [V] (greedy when temperature is 0).
class Sampler {
public:
    explicit Sampler(const SamplingOptions& options);
    int64_t next(const torch::Tensor& logits);

private:
    SamplingOptions options_;
    uint64_t state_;
    double uniform();
};

// Generates after `prompt_ids` (which already hold any BOS). `on_text` gets the
// new text as it becomes final (never part of a stop string).
GenerationResult generate(LlamaForCausalLMImpl& model, const Tokenizer& tokenizer,
                          const std::vector<int64_t>& prompt_ids, const SamplingOptions& options,
                          const std::function<void(const std::string&)>& on_text = nullptr);

// Generates after each prompt in one batch: prompts left-padded, one KV
// cache, positions counted from each prompt's first token. Each result is
// what generate() gives for that prompt alone (same sampler seed per row).
std::vector<GenerationResult> generate_batch(LlamaForCausalLMImpl& model, const Tokenizer& tokenizer,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             const SamplingOptions& options);

}  // namespace hra
