#include "adapters/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"
#include "io/atomic_file.h"

namespace hra {

using json = nlohmann::json;

ModuleSelector ModuleSelector::of(std::vector<std::string> names) {
    ModuleSelector s;
    s.kind = Kind::Names;
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    s.names = std::move(names);
    return s;
}

ModuleSelector ModuleSelector::regex(std::string pattern) {
    ModuleSelector s;
    std::string lower = pattern;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    s.kind = lower == "all-linear" ? Kind::AllLinear : Kind::Regex;
    s.pattern = std::move(pattern);
    return s;
}

std::string ModuleSelector::describe() const {
    switch (kind) {
        case Kind::None: return "(unset)";
        case Kind::AllLinear: return "all-linear";
        case Kind::Regex: return "regex '" + pattern + "'";
        case Kind::Names: {
            std::string s = "[";
            for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
            return s + "]";
        }
    }
    return "";
}

LoraOptions AdapterConfig::lora_options() const {
    LoraOptions o;
    o.r = r;
    o.lora_alpha = lora_alpha;
    o.lora_dropout = lora_dropout;
    o.init_lora_weights = init_lora_weights;
    o.use_rslora = use_rslora;
    return o;
}

void AdapterConfig::validate() const {
    if (r <= 0) throw Error("`r` should be a positive integer value but the value passed is " + std::to_string(r), {"", "r"});
    const bool regex = target_modules.kind == ModuleSelector::Kind::Regex;
    if (regex && layers_to_transform)
        throw Error("`layers_to_transform` cannot be used when `target_modules` is a str.", {"", "layers_to_transform"});
    if (regex && !layers_pattern.empty())
        throw Error("`layers_pattern` cannot be used when `target_modules` is a str.", {"", "layers_pattern"});
    if (!layers_pattern.empty() && !layers_to_transform)
        throw Error("When `layers_pattern` is specified, `layers_to_transform` must also be specified.", {"", "layers_pattern"});
    const std::string own = method == Method::Hra ? "hra_only" : "lora_only";
    if (bias != "none" && bias != "all" && bias != own)
        throw Error("bias must be 'none', 'all' or '" + own + "', got '" + bias + "'", {"", "bias"});
    if (method == Method::Lora && (lora_dropout < 0 || lora_dropout >= 1))
        throw Error("lora_dropout must be in [0, 1)", {"", "lora_dropout"});
}

namespace {

template <class T>
T get_as(const json& j, const char* key, const std::string& source) {
    try {
        return j.at(key).get<T>();
    } catch (const json::exception& e) {
        throw Error(std::string("wrong type: ") + e.what(), {source, key});
    }
}

ModuleSelector selector_from(const json& j, const char* key, const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) return {};
    const auto& v = j[key];
    if (v.is_string()) return ModuleSelector::regex(v.get<std::string>());
    if (v.is_array()) {
        std::vector<std::string> names;
        for (const auto& e : v) {
            if (!e.is_string()) throw Error("expected a list of module names", {source, key});
            names.push_back(e.get<std::string>());
        }
        return ModuleSelector::of(std::move(names));
    }
    throw Error("expected a string (regex) or a list of module names", {source, key});
}

json selector_to(const ModuleSelector& s) {
    switch (s.kind) {
        case ModuleSelector::Kind::None: return nullptr;
        case ModuleSelector::Kind::Names: return s.names;
        case ModuleSelector::Kind::Regex:
        case ModuleSelector::Kind::AllLinear: return s.pattern.empty() ? std::string("all-linear") : s.pattern;
    }
    return nullptr;
}

std::optional<std::string> optional_string(const json& j, const char* key, const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    if (!j[key].is_string()) throw Error("expected a string or null", {source, key});
    return j[key].get<std::string>();
}

json optional_to(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

// LoRA options hra does not implement: loading a file that uses them must fail,
// not silently compute something else. Values equal to these defaults are fine.
const std::vector<std::pair<const char*, json>>& unsupported_lora_options() {
    static const std::vector<std::pair<const char*, json>> opts = {
        {"use_dora", false},           {"fan_in_fan_out", false},       {"rank_pattern", json::object()},
        {"alpha_pattern", json::object()}, {"lora_bias", false},        {"target_parameters", nullptr},
        {"layer_replication", nullptr}, {"trainable_token_indices", nullptr}, {"use_qalora", false},
    };
    return opts;
}

bool is_default(const json& v, const json& def) {
    if (v.is_null()) return true;
    if (def.is_object()) return v.is_object() && v.empty();
    return v == def;
}

}  // namespace

AdapterConfig parse_adapter_config(const std::string& text, const std::string& source) {
    json j;
    try {
        j = json::parse(text);
    } catch (const json::exception& e) {
        throw Error(std::string("invalid JSON: ") + e.what(), {source});
    }
    if (!j.is_object()) throw Error("adapter config is not a JSON object", {source});
    AdapterConfig c;
    const std::string type = j.contains("peft_type") && j["peft_type"].is_string() ? j["peft_type"].get<std::string>() : "";
    if (type == "HRA") {
        c.method = Method::Hra;
    } else if (type == "LORA") {
        c.method = Method::Lora;
    } else {
        throw Error("unsupported peft_type '" + type + "' (hra reads HRA and LORA adapters)", {source, "peft_type"});
    }
    std::set<std::string> known = {"peft_type", "r", "target_modules", "exclude_modules", "layers_to_transform",
                                   "layers_pattern", "bias", "modules_to_save", "task_type",
                                   "base_model_name_or_path", "revision", "inference_mode"};
    if (j.contains("r")) c.r = get_as<int64_t>(j, "r", source);
    if (c.method == Method::Hra) {
        known.insert({"apply_GS", "init_weights"});
        if (j.contains("apply_GS")) c.apply_GS = get_as<bool>(j, "apply_GS", source);
        if (j.contains("init_weights")) c.init_weights = get_as<bool>(j, "init_weights", source);
    } else {
        known.insert({"lora_alpha", "lora_dropout", "init_lora_weights", "use_rslora"});
        if (j.contains("lora_alpha")) c.lora_alpha = get_as<double>(j, "lora_alpha", source);
        if (j.contains("lora_dropout")) c.lora_dropout = get_as<double>(j, "lora_dropout", source);
        if (j.contains("use_rslora")) c.use_rslora = get_as<bool>(j, "use_rslora", source);
        if (j.contains("init_lora_weights")) {
            const auto& v = j["init_lora_weights"];
            if (v.is_boolean()) {
                c.init_lora_weights = v.get<bool>();
            } else {
                // A named initialisation (gaussian, pissa, ...) only matters for fresh adapters.
                known.erase("init_lora_weights");
            }
        }
        for (const auto& [key, def] : unsupported_lora_options()) {
            if (j.contains(key) && !is_default(j[key], def))
                throw Error("LoRA option not supported by hra: " + j[key].dump(), {source, key});
        }
    }
    c.target_modules = selector_from(j, "target_modules", source);
    c.exclude_modules = selector_from(j, "exclude_modules", source);
    if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
        const auto& v = j["layers_to_transform"];
        if (v.is_number_integer()) {
            c.layers_to_transform = std::vector<int64_t>{v.get<int64_t>()};
        } else {
            c.layers_to_transform = get_as<std::vector<int64_t>>(j, "layers_to_transform", source);
        }
    }
    if (j.contains("layers_pattern") && !j["layers_pattern"].is_null()) {
        const auto& v = j["layers_pattern"];
        if (v.is_string()) {
            c.layers_pattern = {v.get<std::string>()};
        } else {
            c.layers_pattern = get_as<std::vector<std::string>>(j, "layers_pattern", source);
        }
    }
    if (j.contains("bias") && !j["bias"].is_null()) c.bias = get_as<std::string>(j, "bias", source);
    if (j.contains("modules_to_save") && !j["modules_to_save"].is_null())
        c.modules_to_save = get_as<std::vector<std::string>>(j, "modules_to_save", source);
    c.task_type = optional_string(j, "task_type", source);
    c.base_model_name_or_path = optional_string(j, "base_model_name_or_path", source);
    c.revision = optional_string(j, "revision", source);
    if (j.contains("inference_mode") && !j["inference_mode"].is_null())
        c.inference_mode = get_as<bool>(j, "inference_mode", source);
    json extra = json::object();
    for (auto it = j.begin(); it != j.end(); ++it)
        if (!known.count(it.key())) extra[it.key()] = it.value();
    c.extra_json = extra.dump();
    try {
        c.validate();
    } catch (const Error& e) {
        throw Error(e.message(), {source, e.key()});
    }
    return c;
}

AdapterConfig read_adapter_config(const std::string& path) { return parse_adapter_config(io::read_file(path), path); }

std::string adapter_config_json(const AdapterConfig& c) {
    json j = json::parse(c.extra_json);
    j["peft_type"] = c.peft_type();
    j["r"] = c.r;
    j["target_modules"] = selector_to(c.target_modules);
    j["exclude_modules"] = selector_to(c.exclude_modules);
    j["layers_to_transform"] = c.layers_to_transform ? json(*c.layers_to_transform) : json(nullptr);
    if (c.layers_pattern.empty()) {
        j["layers_pattern"] = nullptr;
    } else if (c.layers_pattern.size() == 1) {
        j["layers_pattern"] = c.layers_pattern[0];
    } else {
        j["layers_pattern"] = c.layers_pattern;
    }
    j["bias"] = c.bias;
    j["modules_to_save"] = c.modules_to_save ? json(*c.modules_to_save) : json(nullptr);
    j["task_type"] = optional_to(c.task_type);
    j["base_model_name_or_path"] = optional_to(c.base_model_name_or_path);
    j["revision"] = optional_to(c.revision);
    j["inference_mode"] = c.inference_mode;
    if (!j.contains("auto_mapping")) j["auto_mapping"] = nullptr;
    if (!j.contains("peft_version")) j["peft_version"] = nullptr;
    if (c.method == Method::Hra) {
        j["apply_GS"] = c.apply_GS;
        j["init_weights"] = c.init_weights;
    } else {
        // PEFT writes lora_alpha as an integer when it is one.
        if (std::floor(c.lora_alpha) == c.lora_alpha && std::abs(c.lora_alpha) < 1e15) {
            j["lora_alpha"] = static_cast<int64_t>(c.lora_alpha);
        } else {
            j["lora_alpha"] = c.lora_alpha;
        }
        j["lora_dropout"] = c.lora_dropout;
        j["use_rslora"] = c.use_rslora;
        if (!j.contains("init_lora_weights")) j["init_lora_weights"] = c.init_lora_weights;
        for (const auto& [key, def] : unsupported_lora_options())
            if (!j.contains(key)) j[key] = def;
    }
    return j.dump(2) + "\n";
}

}  // namespace hra
