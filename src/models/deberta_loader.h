// Hugging Face DeBERTa-v2/v3 folders -> models: config.json and weights
// (safetensors or pytorch_model.bin, sharded or not), loaded strictly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "io/safetensors.h"
#include "models/deberta.h"

namespace hra {

struct DebertaLoadOptions {
    c10::ScalarType dtype = c10::ScalarType::Float;
    std::string device = "cpu";
    std::optional<int64_t> num_labels;  // overrides config.json (a GLUE task's label count)
    std::string problem_type;           // overrides config.json when set
    uint64_t init_seed = 0;             // for head weights the checkpoint lacks
};

struct LoadedDeberta {
    std::string dir;
    DebertaConfig config;
    DebertaForSequenceClassification model{nullptr};
    std::vector<std::string> initialized;  // parameters not in the checkpoint (seeded init)
};

struct LoadedDebertaMLM {
    std::string dir;
    DebertaConfig config;
    DebertaForMaskedLM model{nullptr};
    std::vector<std::string> initialized;
};

// Keys that are tolerated and skipped, listed in one warning: position_ids
// buffers, the original checkpoints' MLM/RTD heads (lm_predictions.*,
// mask_predictions.*) and the other model's head. Missing pooler/classifier
// (or cls.predictions.*) weights get normal(0, initializer_range) with zero
// biases from `init_seed`, as transformers' _init_weights; anything else
// missing, unexpected or mis-shaped is an error naming the keys. Checkpoints
// saved from the bare encoder (keys without "deberta.") are accepted.
LoadedDeberta load_deberta(const std::string& dir, const DebertaLoadOptions& options = {});
LoadedDebertaMLM load_deberta_mlm(const std::string& dir, const DebertaLoadOptions& options = {});

// Base (non-adapter) parameters under HF names, cast to `dtype`.
io::NamedTensors deberta_state_dict(const torch::nn::Module& model, c10::ScalarType dtype);

}  // namespace hra
