// A model with adapters: injection by target names, activation, merge, the
// PEFT file format, and PEFT's trainable-parameter bookkeeping.
//
// The base model is any torch::nn::Module whose adaptable layers are
// hra::Linear / hra::Conv2d (see layers.h). Module names are the base
// model's own qualified names (e.g. "model.layers.0.self_attn.q_proj"), which
// PEFT files prefix with "base_model.model.".
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "adapters/config.h"
#include "adapters/layers.h"
#include "core/householder.h"
#include "io/safetensors.h"

namespace hra {

struct InjectOptions {
    // For an unset target_modules: the model family's default targets (PEFT's
    // per model type, e.g. llama_default_targets()), and the type for messages.
    std::vector<std::string> default_targets;
    std::string model_type;
    // Output layers that "all-linear" leaves out.
    std::vector<std::string> output_layers = {"lm_head"};
};

class PeftModel {
public:
    explicit PeftModel(std::shared_ptr<torch::nn::Module> base, InjectOptions options = {});

    torch::nn::Module& base() const { return *base_; }

    // Creates adapter `name` on every matching layer with fresh (PEFT) init,
    // freezes the base model, and makes the new adapter (plus biases and
    // modules_to_save as configured) trainable unless config.inference_mode.
    // The first adapter becomes active. Returns the adapted module names.
    std::vector<std::string> add_adapter(const std::string& name, const AdapterConfig& config);
    // Reads a PEFT folder into adapter `name`. Any mismatch (unknown or missing
    // key, wrong shape, targets absent from the model) is an hra::Error naming
    // the file and key, and leaves the model as it was.
    void load_adapter(const std::string& dir, const std::string& name = "default", bool trainable = false);
    // Writes adapter `name` as a PEFT folder (atomic per file).
    void save_adapter(const std::string& dir, const std::string& name = "default") const;
    void delete_adapter(const std::string& name);

    std::vector<std::string> adapter_names() const;
    const AdapterConfig& config(const std::string& name) const;
    const std::vector<std::string>& adapted_modules(const std::string& name) const;

    void set_active_adapters(const std::vector<std::string>& names);
    const std::vector<std::string>& active_adapters() const { return active_; }
    // Disabling gives the base model's output (unmerging first when merged, and
    // restoring the original values of modules_to_save).
    void enable_adapters(bool on);
    bool adapters_enabled() const { return enabled_; }

    void merge(bool safe = false, const std::vector<std::string>& names = {});
    void unmerge();
    // Merges the active adapters and removes every adapter: a plain model again.
    void merge_and_unload(bool safe = false);

    void set_strategy(MultiplyPath s);

    std::vector<torch::Tensor> trainable_parameters() const;
    int64_t trainable_parameter_count() const;
    int64_t parameter_count() const;
    // "trainable params: 1,234 || all params: 5,678 || trainable%: 21.7322" (PEFT's text).
    std::string trainable_summary() const;

    // Σ over the active adapters of their orthogonality penalties (HRA: ‖I − ÛᵀÛ‖²_F or the unsquared norm).
    torch::Tensor orthogonality_penalty(core::PenaltyForm form = core::PenaltyForm::Squared) const;

    // Adapter `name` under PEFT's file keys ("base_model.model.<module>.hra_u", ...).
    io::NamedTensors adapter_state_dict(const std::string& name) const;

    // Every adaptable layer of the base model with its qualified name.
    std::vector<std::pair<std::string, AdaptableLayer*>> adaptable_layers() const;

private:
    struct SavedModule;  // a modules_to_save entry
    struct Entry {
        AdapterConfig config;  // as given, with all-linear resolved
        std::vector<std::string> modules;
        std::vector<std::string> bias_keys;  // qualified names of trainable biases' modules
    };
    // (file key, tensor) pairs; alternatives hold older spellings accepted on load.
    struct KeyedTensor {
        std::string key;
        std::vector<std::string> alternatives;
        torch::Tensor tensor;
    };
    std::vector<KeyedTensor> keyed_tensors(const std::string& name) const;
    const Entry& entry(const std::string& name) const;
    void apply_trainability();
    std::vector<std::string> resolve_targets(const AdapterConfig& config) const;

    std::shared_ptr<torch::nn::Module> base_;
    InjectOptions options_;
    std::vector<std::pair<std::string, Entry>> entries_;
    std::vector<std::shared_ptr<SavedModule>> saved_modules_;
    std::vector<std::string> active_;
    bool enabled_ = true;
};

// PEFT's prefix of every key in an adapter file.
inline constexpr const char* kPeftKeyPrefix = "base_model.model.";

}  // namespace hra
