#include "adapters/config.h"

#include <algorithm>
#include <cctype>
#include <set>

#include <nlohmann/json.hpp>

#include "adapters/method.h"
#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/json_value.h"

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

namespace {

const char* json_type_name(const json& v) {
    if (v.is_boolean()) return "a boolean";
    if (v.is_number()) return "a number";
    if (v.is_string()) return "a string";
    if (v.is_array()) return "a list";
    if (v.is_object()) return "an object";
    return "null";
}

bool same_json_type(const json& v, const json& def) {
    if (def.is_number()) return v.is_number();
    if (def.is_null()) return true;
    return v.type() == def.type();
}

}  // namespace

AdapterConfig AdapterConfig::of(const std::string& method) {
    AdapterConfig c;
    c.set_method(method);
    return c;
}

void AdapterConfig::set_method(const std::string& method) {
    peft_type = adapter_method(method).peft_type;
    options = json::object();
}

const json& AdapterConfig::option(const std::string& key) const {
    const auto& m = adapter_method(peft_type);
    if (!m.defaults.contains(key)) throw Error(peft_type + " adapters have no option '" + key + "'", {"", key});
    auto it = options.find(key);
    return it != options.end() ? *it : m.defaults.at(key);
}

void AdapterConfig::set(const std::string& key, const json& value) {
    const json& def = option(key);  // checks the key
    if (!same_json_type(value, adapter_method(peft_type).defaults.at(key)))
        throw Error(std::string("expected ") + json_type_name(def) + ", got " + value.dump(), {"", key});
    options[key] = value;
}

void AdapterConfig::validate() const {
    const AdapterMethod& m = adapter_method(peft_type);
    if (r <= 0) throw Error("`r` should be a positive integer value but the value passed is " + std::to_string(r), {"", "r"});
    const bool regex = target_modules.kind == ModuleSelector::Kind::Regex;
    if (regex && layers_to_transform)
        throw Error("`layers_to_transform` cannot be used when `target_modules` is a str.", {"", "layers_to_transform"});
    if (regex && !layers_pattern.empty())
        throw Error("`layers_pattern` cannot be used when `target_modules` is a str.", {"", "layers_pattern"});
    if (!layers_pattern.empty() && !layers_to_transform)
        throw Error("When `layers_pattern` is specified, `layers_to_transform` must also be specified.", {"", "layers_pattern"});
    const std::string own = m.name + "_only";
    if (bias != "none" && bias != "all" && bias != own)
        throw Error("bias must be 'none', 'all' or '" + own + "', got '" + bias + "'", {"", "bias"});
    for (auto it = options.begin(); it != options.end(); ++it) {
        if (!m.defaults.contains(it.key())) throw Error(peft_type + " adapters have no option '" + it.key() + "'", {"", it.key()});
        if (!same_json_type(it.value(), m.defaults.at(it.key())))
            throw Error(std::string("expected ") + json_type_name(m.defaults.at(it.key())) + ", got " + it.value().dump(),
                        {"", it.key()});
    }
    if (m.validate) m.validate(*this);
}

namespace {

template <class T>
T get_as(const json& j, const char* key, const std::string& source) {
    if (!j.contains(key)) throw Error("missing key", {source, key});
    return io::json_get<T>(j.at(key), key, source);
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

}  // namespace

AdapterConfig parse_adapter_config(const std::string& text, const std::string& source) {
    const json j = io::parse_json(text, source);
    if (!j.is_object()) throw Error("adapter config is not a JSON object", {source});
    const std::string type = j.contains("peft_type") && j["peft_type"].is_string() ? j["peft_type"].get<std::string>() : "";
    if (!find_peft_type(type)) {  // exactly as PEFT spells it: "lora" is not a peft_type
        std::string known;
        for (const auto& m : adapter_methods()) known += (known.empty() ? "" : " and ") + m.peft_type;
        throw Error("unsupported peft_type '" + type + "' (hra reads " + known + " adapters)", {source, "peft_type"});
    }
    const AdapterMethod& method = adapter_method(type);
    AdapterConfig c;
    c.peft_type = method.peft_type;
    std::set<std::string> known = {"peft_type", "r", "target_modules", "exclude_modules", "layers_to_transform",
                                   "layers_pattern", "bias", "modules_to_save", "task_type",
                                   "base_model_name_or_path", "revision", "inference_mode"};
    if (j.contains("r")) c.r = get_as<int64_t>(j, "r", source);
    // The method's quirks first: keys it sets aside stay in extra_json untouched.
    std::set<std::string> set_aside;
    if (method.parse) method.parse(j, c, set_aside, source);
    for (auto it = method.defaults.begin(); it != method.defaults.end(); ++it) {
        if (set_aside.count(it.key())) continue;
        known.insert(it.key());
        if (!j.contains(it.key()) || j[it.key()].is_null()) continue;
        const json& v = j[it.key()];
        if (!same_json_type(v, it.value()))
            throw Error(std::string("wrong type: expected ") + json_type_name(it.value()) + ", got " + v.dump(),
                        {source, it.key()});
        c.options[it.key()] = v;
    }
    c.target_modules = selector_from(j, "target_modules", source);
    c.exclude_modules = selector_from(j, "exclude_modules", source);
    if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) {
        const auto& v = j["layers_to_transform"];
        if (v.is_number()) {
            c.layers_to_transform = std::vector<int64_t>{io::json_get<int64_t>(v, "layers_to_transform", source)};
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
    j["peft_type"] = c.peft_type;
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
    const AdapterMethod& method = adapter_method(c.peft_type);
    for (auto it = method.defaults.begin(); it != method.defaults.end(); ++it) {
        // A value set aside on load (e.g. LoRA's named init) stays as the file had it.
        if (j.contains(it.key()) && !c.options.contains(it.key())) continue;
        j[it.key()] = c.option(it.key());
    }
    if (method.write) method.write(c, j);
    return j.dump(2) + "\n";
}

}  // namespace hra
