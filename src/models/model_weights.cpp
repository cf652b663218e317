#include "models/model_weights.h"

#include <filesystem>

#include <set>
#include <unordered_set>

#include <torch/torch.h>

#include "common/error.h"
#include "common/strings.h"

namespace hra {

c10::ScalarType parse_dtype(const std::string& name, c10::ScalarType fallback) {
    if (name.empty() || name == "auto") return fallback;
    if (name == "float32" || name == "fp32" || name == "f32" || name == "float") return torch::kFloat;
    if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
    if (name == "float16" || name == "fp16" || name == "f16" || name == "half") return torch::kHalf;
    if (name == "float64" || name == "fp64" || name == "f64" || name == "double") return torch::kDouble;
    throw Error("unknown dtype '" + name + "' (expected float32, bfloat16, float16 or float64)");
}

std::vector<std::pair<std::string, torch::Tensor>> unique_named_parameters(const torch::nn::Module& m) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    std::unordered_set<const c10::TensorImpl*> seen;
    for (const auto& p : m.named_parameters())
        if (seen.insert(p.value().unsafeGetTensorImpl()).second) out.emplace_back(p.key(), p.value());
    return out;
}

StrictLoadReport load_named_weights(const std::map<std::string, torch::Tensor>& params, const io::WeightStore& store,
                                    const std::function<bool(const std::string&)>& ignore,
                                    const std::function<bool(const std::string&)>& may_be_missing) {
    StrictLoadReport report;
    std::vector<std::string> unexpected, mismatched, missing, nonfinite;
    std::set<std::string> loaded, present;  // present: in the file, loaded or mis-shaped
    torch::NoGradGuard no_grad;
    for (const auto& key : store.keys()) {
        auto it = params.find(key);
        if (it == params.end()) {
            if (ignore && ignore(key)) report.ignored.push_back(key);
            else unexpected.push_back(key);
            continue;
        }
        present.insert(key);
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
        // NaN or inf in a weight makes every output NaN: an error here, not a silent load.
        if (!torch::isfinite(it->second).all().item<bool>()) nonfinite.push_back(key);
        loaded.insert(key);
    }
    for (const auto& [name, p] : params) {
        if (present.count(name)) continue;  // a mis-shaped tensor is reported once, as such
        if (may_be_missing && may_be_missing(name)) report.not_in_file.push_back(name);
        else missing.push_back(name);
    }
    if (unexpected.empty() && mismatched.empty() && missing.empty()) {
        if (!nonfinite.empty())
            throw Error("non-finite values (NaN or inf) in " + join_names(nonfinite, 6), {store.path(), nonfinite[0]});
        return report;
    }
    std::string msg = "weights do not fit the model config:";
    std::string first;
    if (!missing.empty()) msg += " missing keys: " + join_names(missing, 6) + ";", first = missing[0];
    if (!unexpected.empty()) msg += " unexpected keys: " + join_names(unexpected, 6) + ";", first = first.empty() ? unexpected[0] : first;
    if (!mismatched.empty()) msg += " wrong shapes: " + join_names(mismatched, 6) + ";";
    msg.pop_back();
    throw Error(msg, {store.path(), first});
}

std::map<std::string, torch::Tensor> base_parameters(const torch::nn::Module& model) {
    std::map<std::string, torch::Tensor> out;
    for (auto& [name, p] : unique_named_parameters(model))
        if (name.find(".adapters.") == std::string::npos) out.emplace(name, p);
    return out;
}

std::string component_folder(const std::string& dir, const std::string& sub) {
    const std::filesystem::path d(dir);
    if (!std::filesystem::is_regular_file(d / "config.json") && std::filesystem::is_regular_file(d / sub / "config.json"))
        return (d / sub).string();
    return dir;
}

}  // namespace hra
