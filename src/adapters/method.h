// The adapter-method registry: everything hra knows about one method (HRA,
// LoRA) in one entry, so that a new method (OFT, BOFT, ...) is one new file
// plus one line in builtin_methods() (method.cpp).
//
// An entry gives PEFT's peft_type, the method's own adapter_config.json keys
// with PEFT's defaults (AdapterConfig keeps their values as JSON), their checks
// and quirks, the construction of one adapter for a host layer, and the `hra
// train` flags that belong to it. Costs and penalties are virtual functions of
// the adapter itself (AdapterImpl::row_cost, AdapterImpl::orthogonality_penalty).
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "adapters/adapter.h"

namespace hra {

struct AdapterConfig;

// An `hra train` flag that sets one of the method's config keys; the CLI
// creates it from this description (value type from the key's default).
struct MethodFlag {
    std::string flag;                  // "lora-alpha" for --lora-alpha
    std::string key;                   // the config key it sets: "lora_alpha"
    std::string help;
    bool switch_only = false;          // given alone means true (--apply-GS)
    std::vector<std::string> aliases;  // other spellings ("apply-gs")
};

struct AdapterMethod {
    std::string name;       // lower case, as `--method` and PEFT's bias "<name>_only" spell it: "hra"
    std::string peft_type;  // adapter_config.json's peft_type: "HRA"
    // The method's own config keys with PEFT's defaults; a file's value must
    // have the default's JSON type (any number where the default is a number).
    nlohmann::json defaults = nlohmann::json::object();
    // `hra train` flags for its config keys, and other flags that only this
    // method takes (HRA's --strategy); both are refused with another method.
    std::vector<MethodFlag> config_flags;
    std::vector<std::string> cli_flags;

    // Optional quirks. parse: reads keys of `file` beyond the generic rule (may
    // mark keys as known or refuse values). write: adds to or adjusts the file's
    // JSON after the generic write. validate: PEFT's checks of the values.
    std::function<void(const nlohmann::json& file, AdapterConfig& config, std::set<std::string>& known,
                       const std::string& source)>
        parse;
    std::function<void(const AdapterConfig& config, nlohmann::json& out)> write;
    std::function<void(const AdapterConfig& config)> validate;
    // One adapter for a host layer, its tensors created with `options`.
    std::function<std::shared_ptr<AdapterImpl>(const LayerShape& shape, const AdapterConfig& config,
                                               const torch::TensorOptions& options)>
        make;
};

// Every registered method, in registration order (HRA first).
const std::vector<AdapterMethod>& adapter_methods();
// By peft_type ("HRA") or name ("hra"), case-insensitive; hra::Error listing the known ones.
const AdapterMethod& adapter_method(const std::string& peft_type_or_name);
bool is_adapter_method(const std::string& peft_type_or_name);
// By the exact peft_type a file holds ("HRA", not "hra"); nullptr when none.
const AdapterMethod* find_peft_type(const std::string& peft_type);
std::vector<std::string> adapter_method_names();  // {"hra", "lora"}

}  // namespace hra
