#include "models/pipeline.h"

#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/output_folder.h"
#include "io/weights.h"

namespace hra {

namespace fs = std::filesystem;

AdaptedModel load_with_adapters(const std::string& model_dir, const std::vector<std::string>& adapter_dirs,
                                const LoadOptions& options) {
    AdaptedModel m;
    m.base = load_llama(model_dir, options);
    if (adapter_dirs.empty()) return m;
    m.peft = std::make_unique<PeftModel>(m.base.model.ptr(), llama_inject_options(m.base.config.model_type));
    std::vector<std::string> names;
    for (size_t i = 0; i < adapter_dirs.size(); ++i) {
        names.push_back("adapter" + std::to_string(i));
        m.peft->load_adapter(adapter_dirs[i], names.back());
    }
    m.peft->set_active_adapters(names);
    return m;
}

std::vector<int64_t> eos_ids_of(const std::string& model_dir, const LlamaConfig& config) {
    std::vector<int64_t> ids = config.eos_token_ids;
    const fs::path gen = fs::path(model_dir) / "generation_config.json";
    if (fs::is_regular_file(gen)) {
        const nlohmann::json j = io::read_json_file(gen.string());
        auto add = [&](const nlohmann::json& v) {
            if (v.is_number_integer() && std::find(ids.begin(), ids.end(), v.get<int64_t>()) == ids.end())
                ids.push_back(v.get<int64_t>());
        };
        if (j.contains("eos_token_id")) {
            if (j["eos_token_id"].is_array()) {
                for (const auto& v : j["eos_token_id"]) add(v);
            } else {
                add(j["eos_token_id"]);
            }
        }
    }
    return ids;
}

void save_model_weights(const std::string& dir, const io::NamedTensors& tensors, uint64_t max_shard_bytes) {
    uint64_t total = 0;
    for (const auto& [name, t] : tensors) total += static_cast<uint64_t>(t.numel() * t.element_size());
    if (total <= max_shard_bytes) {
        io::save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, {{"format", "pt"}});
        return;
    }
    std::vector<io::NamedTensors> shards(1);
    uint64_t size = 0;
    for (const auto& nt : tensors) {
        const uint64_t n = static_cast<uint64_t>(nt.second.numel() * nt.second.element_size());
        if (size > 0 && size + n > max_shard_bytes) {
            shards.emplace_back();
            size = 0;
        }
        shards.back().push_back(nt);
        size += n;
    }
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total}};
    nlohmann::ordered_json map = nlohmann::ordered_json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
        char name[64];
        std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
        io::save_safetensors((fs::path(dir) / name).string(), shards[i], {{"format", "pt"}});
        for (const auto& [key, t] : shards[i]) map[key] = name;
    }
    index["weight_map"] = map;
    io::write_file_atomically((fs::path(dir) / "model.safetensors.index.json").string(), index.dump(2) + "\n");
}

namespace {

bool is_weight_file(const std::string& name) {
    auto ends = [&](const std::string& s) { return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0; };
    return ends(".safetensors") || name == "model.safetensors.index.json" || ends(".bin.index.json") ||
           (name.rfind("pytorch_model", 0) == 0 && ends(".bin")) || ends(".pt") || ends(".pth");
}

}  // namespace

void merge_model(const std::string& model_dir, const std::vector<std::string>& adapter_dirs, const std::string& out_dir,
                 bool overwrite, uint64_t max_shard_bytes) {
    if (adapter_dirs.empty()) throw Error("merge needs at least one --adapter");
    // The stored dtype of the weights, kept in the output.
    auto store = io::WeightStore::open(model_dir);
    if (store.keys().empty()) throw Error("the model folder holds no weights", {model_dir});
    const auto stored = store.get(store.keys().front()).scalar_type();
    LoadOptions opt;
    opt.dtype = stored == torch::kDouble ? torch::kDouble : torch::kFloat;
    io::OutputFolder out(out_dir, overwrite);  // refuse early, before the work
    auto m = load_with_adapters(model_dir, adapter_dirs, opt);
    m.peft->merge_and_unload(/*safe=*/true);
    save_model_weights(out.temp_path(), llama_state_dict(*m.base.model, stored), max_shard_bytes);
    for (const auto& e : fs::directory_iterator(model_dir)) {
        if (!e.is_regular_file()) continue;
        const std::string name = e.path().filename().string();
        if (is_weight_file(name)) continue;
        fs::copy_file(e.path(), out.file(name), fs::copy_options::overwrite_existing);
    }
    out.commit();
}

}  // namespace hra
