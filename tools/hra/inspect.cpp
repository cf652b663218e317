// hra inspect DIR: what a PEFT adapter folder holds.
#include <cstdio>
#include <map>
#include <set>
#include <variant>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/config.h"
#include "adapters/method.h"
#include "commands.h"
#include "io/gguf.h"
#include "io/peft_folder.h"
#include "io/safetensors.h"
#include "common/error.h"

namespace hra::cli {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Tensors that cannot make one adapter of config `c` are errors naming the
// tensor (without a model, inspect checks what the folder says of itself):
// floating-point values; HRA's hra_u [in, r] with the config's r, at most in;
// LoRA's lora_A [r, in] or [r, in, kh, kw] and lora_B [out, r] or
// [out, r, 1, 1], the config's r, both present for each module.
void check_adapter_tensors(const io::PeftFolder& folder, const AdapterConfig& c) {
    const std::string& file = folder.weights_path;
    std::map<std::string, int> lora_parts;  // module -> 1 (A) | 2 (B)
    for (const auto& name : folder.weights->names()) {
        const auto& info = folder.weights->info(name);
        const auto& s = info.shape;
        // The adapter's own tensors (saved modules_to_save may hold integer buffers).
        const bool own = ends_with(name, ".hra_u") || ends_with(name, ".lora_A.weight") || ends_with(name, ".lora_B.weight");
        if (own && !at::isFloatingType(io::dtype_from_name(info.dtype)))
            throw Error("dtype " + info.dtype + " where an adapter needs floating-point values", {file, name});
        auto shape_error = [&](const std::string& want) {
            std::string got;
            for (size_t i = 0; i < s.size(); ++i) got += (i ? ", " : "") + std::to_string(s[i]);
            return Error("shape [" + got + "] cannot be " + want + " of an r=" + std::to_string(c.r) + " adapter", {file, name});
        };
        if (c.peft_type == "HRA" && ends_with(name, ".hra_u")) {
            if (s.size() != 2 || s[1] != c.r) throw shape_error("the [in, r] reflection vectors");
            if (s[0] < c.r) throw Error("r=" + std::to_string(c.r) + " reflections in " + std::to_string(s[0]) + " inputs: at most one per input", {file, name});
        } else if (c.peft_type == "LORA" && ends_with(name, ".lora_A.weight")) {
            if (!(s.size() == 2 || s.size() == 4) || s[0] != c.r) throw shape_error("the [r, in] lora_A");
            lora_parts[name.substr(0, name.size() - 14)] |= 1;
        } else if (c.peft_type == "LORA" && ends_with(name, ".lora_B.weight")) {
            if (!(s.size() == 2 || (s.size() == 4 && s[2] == 1 && s[3] == 1)) || s[1] != c.r) throw shape_error("the [out, r] lora_B");
            lora_parts[name.substr(0, name.size() - 14)] |= 2;
        }
    }
    for (const auto& [module, parts] : lora_parts)
        if (parts != 3) throw Error(std::string("has ") + (parts == 1 ? "lora_A without lora_B" : "lora_B without lora_A"), {file, module});
}

// The modules an adapter's tensors adapt, by their last name ("q_proj x 5"), and the layer indices.
std::string adapted_modules(const io::PeftFolder& folder) {
    std::map<std::string, int> kinds;
    std::set<std::string> modules, layers;
    for (const auto& name : folder.weights->names())
        for (const std::string suffix : {".hra_u", ".lora_A.weight", ".lora_B.weight"})
            if (ends_with(name, suffix)) modules.insert(name.substr(0, name.size() - suffix.size()));
    for (const auto& m : modules) {
        kinds[m.substr(m.rfind('.') + 1)]++;
        const auto at = m.find(".layers.");
        if (at != std::string::npos) layers.insert(m.substr(at + 8, m.find('.', at + 8) - at - 8));
    }
    std::string out = std::to_string(modules.size()) + " modules:";
    for (const auto& [k, n] : kinds) out += " " + k + " x " + std::to_string(n);
    if (!layers.empty()) out += " in " + std::to_string(layers.size()) + " layers";
    return out;
}

std::string value_text(const io::GgufValue& v) {
    if (auto* s = std::get_if<std::string>(&v)) return nlohmann::json(*s).dump();
    if (auto* u = std::get_if<uint32_t>(&v)) return std::to_string(*u);
    if (auto* i = std::get_if<int32_t>(&v)) return std::to_string(*i);
    if (auto* f = std::get_if<float>(&v)) return nlohmann::json(*f).dump();
    if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
    if (auto* l = std::get_if<uint64_t>(&v)) return std::to_string(*l);
    const auto& a = std::get<io::GgufArray>(v);
    const size_t n = std::visit([](const auto& x) { return x.size(); }, a);
    return "[" + std::to_string(n) + " values]";
}

int inspect_gguf(const std::string& path) {
    const auto f = io::read_gguf(path);
    std::printf("gguf:      %s (version %u)\n", path.c_str(), f.version);
    for (const auto& [k, v] : f.metadata) std::printf("  %-44s %s\n", k.c_str(), value_text(v).c_str());
    std::map<std::string, int> types;
    int64_t total = 0;
    for (const auto& t : f.tensors) {
        int64_t n = 1;
        for (auto d : t.shape) n *= d;
        total += n;
        types[io::ggml_type_name(t.type)]++;
    }
    std::printf("tensors:   %zu (%lld values):", f.tensors.size(), static_cast<long long>(total));
    for (const auto& [t, n] : types) std::printf(" %d %s", n, t.c_str());
    std::printf("\n");
    return 0;
}

}  // namespace

Command add_inspect(CLI::App& app) {
    auto* cmd = app.add_subcommand("inspect", "describe a PEFT adapter folder (HRA or LoRA) or a GGUF file");
    auto dir = std::make_shared<std::string>();
    cmd->add_option("dir", *dir, "adapter folder (adapter_config.json + adapter_model.safetensors), or a .gguf file")->required();
    return {cmd, [dir]() {
        if (ends_with(*dir, ".gguf")) return inspect_gguf(*dir);
        io::PeftFolder folder = io::read_peft_folder(*dir);
        AdapterConfig c = parse_adapter_config(folder.config_text, folder.config_path);
        check_adapter_tensors(folder, c);
        std::printf("adapter:   %s\n", dir->c_str());
        std::printf("peft_type: %s   r: %lld", c.peft_type.c_str(), static_cast<long long>(c.r));
        // The method's own keys, as its registry entry lists them, with the values the file holds.
        const auto& defaults = adapter_method(c.peft_type).defaults;
        const auto written = nlohmann::json::parse(adapter_config_json(c));
        for (auto it = defaults.begin(); it != defaults.end(); ++it)
            std::printf("   %s: %s", it.key().c_str(), written.at(it.key()).dump().c_str());
        std::printf("\n");
        std::printf("targets:   %s\n", c.target_modules.describe().c_str());
        std::printf("adapted:   %s\n", adapted_modules(folder).c_str());
        std::printf("base:      %s   task: %s\n", c.base_model_name_or_path.value_or("(not recorded)").c_str(),
                    c.task_type.value_or("(not recorded)").c_str());
        std::printf("bias:      %s\n", c.bias.c_str());
        int64_t total = 0;
        std::map<std::string, int> shapes;
        for (const auto& name : folder.weights->names()) {
            const auto& info = folder.weights->info(name);
            int64_t n = 1;
            std::string shape = info.dtype + "[";
            for (size_t i = 0; i < info.shape.size(); ++i) {
                n *= info.shape[i];
                shape += (i ? ", " : "") + std::to_string(info.shape[i]);
            }
            total += n;
            const auto dot = name.rfind('.');
            shapes[(dot == std::string::npos ? name : name.substr(dot + 1)) + " " + shape + "]"]++;
        }
        std::printf("tensors:   %zu (%lld parameters)\n", folder.weights->names().size(), static_cast<long long>(total));
        for (const auto& [shape, count] : shapes) std::printf("  %4d x %s\n", count, shape.c_str());
        return 0;
    }};
}

}  // namespace hra::cli
