// PEFT adapter folders on disk: adapter_config.json + adapter_model.safetensors.
// (The config's meaning lives in adapters/config.h; this is only the files.)
#pragma once

#include <memory>
#include <string>

#include "io/safetensors.h"

namespace hra::io {

inline constexpr const char* kAdapterConfigName = "adapter_config.json";
inline constexpr const char* kAdapterWeightsName = "adapter_model.safetensors";

struct PeftFolder {
    std::string config_path, weights_path;
    std::string config_text;
    std::shared_ptr<SafetensorsFile> weights;
};

// hra::Error when the folder, either file, or a valid safetensors is missing
// (a pickle-only adapter_model.bin is refused with a clear message).
PeftFolder read_peft_folder(const std::string& dir);

// Creates the folder, then writes the weights and the config, each atomically.
void write_peft_folder(const std::string& dir, const std::string& config_text, const NamedTensors& tensors);

}  // namespace hra::io
