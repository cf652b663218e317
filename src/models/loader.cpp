#include "models/loader.h"

#include <filesystem>
#include <map>
#include <functional>
#include <set>

#include <torch/torch.h>

#include "common/error.h"

namespace hra {

c10::ScalarType parse_dtype(const std::string& name, c10::ScalarType fallback) {
    if (name.empty() || name == "auto") return fallback;
    if (name == "float32" || name == "fp32" || name == "f32" || name == "float") return torch::kFloat;
    if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
    if (name == "float16" || name == "fp16" || name == "f16" || name == "half") return torch::kHalf;
    if (name == "float64" || name == "fp64" || name == "f64" || name == "double") return torch::kDouble;
    throw Error("unknown dtype '" + name + "' (expected float32, bfloat16, float16 or float64)");
}

std::string dtype_label(c10::ScalarType t) {
    switch (t) {
        case torch::kFloat: return "float32";
        case torch::kBFloat16: return "bfloat16";
        case torch::kHalf: return "float16";
        case torch::kDouble: return "float64";
        default: return c10::toString(t);
    }
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string list(const std::vector<std::string>& names, size_t most = 6) {
    std::string s;
    for (size_t i = 0; i < names.size() && i < most; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > most) s += ", ... (" + std::to_string(names.size()) + " in all)";
    return s;
}

}  // namespace

StrictLoadReport load_named_weights(const std::map<std::string, torch::Tensor>& params, const io::WeightStore& store,
                                    const std::function<bool(const std::string&)>& ignore,
                                    const std::function<bool(const std::string&)>& may_be_missing) {
    StrictLoadReport report;
    std::vector<std::string> unexpected, mismatched, missing;
    std::set<std::string> loaded;
    torch::NoGradGuard no_grad;
    for (const auto& key : store.keys()) {
        auto it = params.find(key);
        if (it == params.end()) {
            if (ignore && ignore(key)) report.ignored.push_back(key);
            else unexpected.push_back(key);
            continue;
        }
        auto t = store.get(key);
        if (t.sizes() != it->second.sizes()) {
            mismatched.push_back(key + " " + c10::str(t.sizes()) + " (model: " + c10::str(it->second.sizes()) + ")");
            continue;
        }
        if (!t.is_floating_point()) {
            mismatched.push_back(key + " has dtype " + std::string(c10::toString(t.scalar_type())));
            continue;
        }
        it->second.copy_(t.to(it->second.scalar_type()));
        loaded.insert(key);
    }
    for (const auto& [name, p] : params) {
        if (loaded.count(name)) continue;
        if (may_be_missing && may_be_missing(name)) report.not_in_file.push_back(name);
        else missing.push_back(name);
    }
    if (unexpected.empty() && mismatched.empty() && missing.empty()) return report;
    std::string msg = "weights do not fit the model config:";
    std::string first;
    if (!missing.empty()) msg += " missing keys: " + list(missing) + ";", first = missing[0];
    if (!unexpected.empty()) msg += " unexpected keys: " + list(unexpected) + ";", first = first.empty() ? unexpected[0] : first;
    if (!mismatched.empty()) msg += " wrong shapes: " + list(mismatched) + ";";
    msg.pop_back();
    throw Error(msg, {store.path(), first});
}

std::map<std::string, torch::Tensor> base_parameters(const torch::nn::Module& model) {
    std::map<std::string, torch::Tensor> out;
    for (auto& [name, p] : unique_named_parameters(model))
        if (name.find(".adapters.") == std::string::npos) out.emplace(name, p);
    return out;
}

void load_llama_weights(LlamaForCausalLMImpl& model, const io::WeightStore& store) {
    const bool tied = model.config().tie_word_embeddings;
    load_named_weights(base_parameters(model), store, [&](const std::string& key) {
        return ends_with(key, "rotary_emb.inv_freq") || (tied && key == "lm_head.weight");
    });
}

LoadedModel load_llama(const std::string& dir, const LoadOptions& options) {
    LoadedModel out;
    out.dir = dir;
    out.config = read_llama_config(dir);
    {
        SkipInitGuard skip;  // every parameter is overwritten from the files
        out.model = LlamaForCausalLM(out.config);
    }
    out.model->to(torch::Device(options.device), options.dtype);
    out.model->eval();
    for (auto& p : out.model->parameters()) p.set_requires_grad(false);
    load_llama_weights(*out.model, io::WeightStore::open(dir));
    return out;
}

io::NamedTensors llama_state_dict(const LlamaForCausalLMImpl& model, c10::ScalarType dtype) {
    io::NamedTensors out;
    for (auto& [name, p] : base_parameters(model)) {
        if (model.config().tie_word_embeddings && name == "lm_head.weight") continue;
        out.emplace_back(name, p.detach().to(torch::kCPU, dtype));
    }
    return out;
}

}  // namespace hra
