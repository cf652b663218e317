// Hugging Face DeBERTa-v2/v3 folders -> models: config.json and weights
// (safetensors or pytorch_model.bin, sharded or not), loaded strictly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "adapters/peft_model.h"
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

// Keys that are tolerated and skipped, listed in one warning: position_ids
// buffers, the original checkpoints' MLM/RTD heads (lm_predictions.*,
// mask_predictions.*) and the masked-LM head (cls.*). Missing pooler and
// classifier weights get normal(0, initializer_range) with zero
// biases from `init_seed`, as transformers' _init_weights; anything else
// missing, unexpected or mis-shaped is an error naming the keys. Checkpoints
// saved from the bare encoder (keys without "deberta.") are accepted.
LoadedDeberta load_deberta(const std::string& dir, const DebertaLoadOptions& options = {});

// Injection options for DeBERTa-v2/v3: PEFT's default targets (query_proj, value_proj).
InjectOptions deberta_inject_options();

}  // namespace hra
