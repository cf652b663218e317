// Evaluation runs: scoring predictions made elsewhere, generating and scoring
// GSM8K / MATH with the seed's prompt, and loss / perplexity on a dataset.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "io/records.h"
#include "data/dataset.h"
#include "eval/gsm8k.h"

namespace hra {

class Tokenizer;
class LlamaForCausalLMImpl;

namespace eval {

// The seed's evaluation prompt ("... ### Response: Let's think step by step.").
std::string seed_eval_prompt(const std::string& question);

struct ScoreOptions {
    std::string task;  // gsm8k or math
    Protocol protocol = Protocol::Strict;
    std::string completion_field = "completion";
    std::string answer_field = "answer";
    std::string output;  // scored predictions JSONL (optional)
    io::OnBadRecord on_bad_record = io::OnBadRecord::Fail;  // skip: counted in "skipped"
};

// Scores a predictions JSONL file: {"task", "protocol", "n", "correct", "accuracy"}.
nlohmann::json score_predictions(const std::string& path, const ScoreOptions& options);

struct GenerateEvalOptions {
    std::string task;  // gsm8k or math
    Protocol protocol = Protocol::Strict;
    std::string data;
    std::string question_field, answer_field;  // default per task and file
    std::optional<int64_t> limit;
    int64_t max_new_tokens = 512;
    int64_t batch_size = 16;  // questions generated together (left padding, one KV cache)
    std::string output;  // predictions JSONL: prompt, completion, extracted, reference, correct
    io::OnBadRecord on_bad_record = io::OnBadRecord::Fail;  // skip: counted in "skipped"
    // How a question becomes the prompt (data/dataset.h); the default is the seed's prompt.
    std::string template_name = "metamath", template_text;
    bool step_by_step = true;
};

nlohmann::json generate_and_score(LlamaForCausalLMImpl& model, const Tokenizer& tokenizer,
                                  const GenerateEvalOptions& options);

// Mean loss over the target tokens of a dataset, and exp(loss).
nlohmann::json perplexity(LlamaForCausalLMImpl& model, const Tokenizer& tokenizer, const std::string& data,
                          const DataOptions& options, int64_t batch_size);

}  // namespace eval
}  // namespace hra
