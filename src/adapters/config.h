// Adapter configurations with PEFT's names, defaults and validation, and
// their adapter_config.json form.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/lora.h"

namespace hra {

enum class Method { Hra, Lora };

// target_modules / exclude_modules: a list (exact name or dotted suffix), a
// regex (full match), "all-linear", or unset.
struct ModuleSelector {
    enum class Kind { None, Names, Regex, AllLinear };
    Kind kind = Kind::None;
    std::vector<std::string> names;
    std::string pattern;

    static ModuleSelector of(std::vector<std::string> names);
    static ModuleSelector regex(std::string pattern);  // "all-linear" (any case) gives AllLinear
    bool is_set() const { return kind != Kind::None; }
    std::string describe() const;
};

struct AdapterConfig {
    Method method = Method::Hra;
    int64_t r = 8;
    // HRA (PEFT HRAConfig)
    bool apply_GS = false;
    bool init_weights = true;
    // LoRA (PEFT LoraConfig)
    double lora_alpha = 8;
    double lora_dropout = 0;
    bool init_lora_weights = true;
    bool use_rslora = false;
    // Which modules (both methods)
    ModuleSelector target_modules;
    ModuleSelector exclude_modules;
    std::optional<std::vector<int64_t>> layers_to_transform;
    std::vector<std::string> layers_pattern;
    std::string bias = "none";  // none, all, hra_only / lora_only
    std::optional<std::vector<std::string>> modules_to_save;
    // Bookkeeping keys PEFT writes
    std::optional<std::string> task_type, base_model_name_or_path, revision;
    bool inference_mode = false;
    // Keys of a loaded file that hra does not interpret, written back unchanged (JSON object).
    std::string extra_json = "{}";

    const char* peft_type() const { return method == Method::Hra ? "HRA" : "LORA"; }
    LoraOptions lora_options() const;
    // PEFT's checks (r > 0, regex targets without layers_*, ...); hra::Error.
    void validate() const;
};

// Parses adapter_config.json text; errors name `source` and the key.
AdapterConfig parse_adapter_config(const std::string& json_text, const std::string& source);
AdapterConfig read_adapter_config(const std::string& path);
// PEFT's layout: indent 2, sorted keys, every key of the config class.
std::string adapter_config_json(const AdapterConfig& config);

}  // namespace hra
