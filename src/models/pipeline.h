// Whole-folder operations shared by the CLI: a model with its adapters, merged
// model folders.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "adapters/peft_model.h"
#include "models/llama_loader.h"

namespace hra {

struct AdaptedModel {
    LoadedModel base;
    std::unique_ptr<PeftModel> peft;  // null without adapters
};

// Loads a model folder and the PEFT adapter folders (named adapter0, adapter1,
// ... and all active, composing in order).
AdaptedModel load_with_adapters(const std::string& model_dir, const std::vector<std::string>& adapter_dirs,
                                const LoadOptions& options = {});

// End-of-sequence ids: config.json's, then generation_config.json's.
std::vector<int64_t> eos_ids_of(const std::string& model_dir, const LlamaConfig& config);

// Merges the adapters into the model and writes a complete HF folder: every
// non-weight file copied (config, tokenizer, generation config), weights in
// the dtype the model folder stores, sharded above `max_shard_bytes`.
// Merging runs in float32 (float64 for float64 models).
void merge_model(const std::string& model_dir, const std::vector<std::string>& adapter_dirs,
                 const std::string& out_dir, bool overwrite, uint64_t max_shard_bytes = 5'000'000'000ull);

// Writes the model's weights into `dir` as model.safetensors, or as shards
// with model.safetensors.index.json when larger than `max_shard_bytes`.
void save_model_weights(const std::string& dir, const io::NamedTensors& tensors, uint64_t max_shard_bytes);

}  // namespace hra
