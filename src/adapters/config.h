// Adapter configurations with PEFT's names, defaults and validation, and
// their adapter_config.json form. The keys every method shares are fields; a
// method's own keys (HRA's apply_GS, LoRA's lora_alpha, ...) are JSON values
// described by its registry entry (adapters/method.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace hra {

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
    std::string peft_type = "HRA";  // a registered method (adapters/method.h)
    int64_t r = 8;
    // The method's own keys that differ from its defaults (see option()).
    nlohmann::json options = nlohmann::json::object();
    // Which modules (every method)
    ModuleSelector target_modules;
    ModuleSelector exclude_modules;
    std::optional<std::vector<int64_t>> layers_to_transform;
    std::vector<std::string> layers_pattern;
    std::string bias = "none";  // none, all, <method>_only (hra_only, lora_only)
    std::optional<std::vector<std::string>> modules_to_save;
    // Bookkeeping keys PEFT writes
    std::optional<std::string> task_type, base_model_name_or_path, revision;
    bool inference_mode = false;
    // Keys of a loaded file that hra does not interpret, written back unchanged (JSON object).
    std::string extra_json = "{}";

    // A fresh configuration of a method, by peft_type or name ("HRA", "lora").
    static AdapterConfig of(const std::string& method);
    // Switches the method (its own options back to the defaults).
    void set_method(const std::string& method);
    // The method's option `key`: the set value, else the method's default;
    // hra::Error when the method has no such key.
    const nlohmann::json& option(const std::string& key) const;
    template <class T>
    T get(const std::string& key) const { return option(key).get<T>(); }
    // Sets a method option; hra::Error for a key the method does not have or a
    // value of another JSON type than its default.
    void set(const std::string& key, const nlohmann::json& value);

    // PEFT's checks (r > 0, regex targets without layers_*, the method's own); hra::Error.
    void validate() const;
};

// Parses adapter_config.json text; errors name `source` and the key.
AdapterConfig parse_adapter_config(const std::string& json_text, const std::string& source);
AdapterConfig read_adapter_config(const std::string& path);
// PEFT's layout: indent 2, sorted keys, every key of the config class.
std::string adapter_config_json(const AdapterConfig& config);

}  // namespace hra
