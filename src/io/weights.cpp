#include "io/weights.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace hra::io {

namespace fs = std::filesystem;

WeightStore WeightStore::open(const std::string& path) {
    WeightStore w;
    w.path_ = path;
    auto add_file = [&](const std::string& file) -> size_t {
        w.files_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(file)));
        return w.files_.size() - 1;
    };
    if (fs::is_regular_file(path)) {
        size_t i = add_file(path);
        for (const auto& k : w.files_[i]->names()) w.index_[k] = i;
        return w;
    }
    if (!fs::is_directory(path)) throw Error("no such file or folder", {path});
    const fs::path dir(path);
    if (fs::is_regular_file(dir / "model.safetensors")) {
        size_t i = add_file((dir / "model.safetensors").string());
        for (const auto& k : w.files_[i]->names()) w.index_[k] = i;
        return w;
    }
    const std::string index_path = (dir / "model.safetensors.index.json").string();
    if (!fs::is_regular_file(index_path))
        throw Error("no model.safetensors or model.safetensors.index.json in the folder", {path});
    const nlohmann::json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
        throw Error("missing 'weight_map' object", {index_path, "weight_map"});
    std::map<std::string, size_t> shard_of;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
        if (!it.value().is_string()) throw Error("shard name must be a string", {index_path, it.key()});
        const std::string shard = it.value().get<std::string>();
        if (shard.find('/') != std::string::npos || shard == ".." || shard.empty())
            throw Error("shard name must be a file in the same folder: '" + shard + "'", {index_path, it.key()});
        auto found = shard_of.find(shard);
        size_t i = found != shard_of.end() ? found->second : (shard_of[shard] = add_file((dir / shard).string()));
        if (!w.files_[i]->contains(it.key()))
            throw Error("index maps this tensor to " + shard + ", which does not hold it", {index_path, it.key()});
        w.index_[it.key()] = i;
    }
    return w;
}

bool WeightStore::contains(const std::string& key) const { return index_.count(key) != 0; }

at::Tensor WeightStore::get(const std::string& key) const {
    auto it = index_.find(key);
    if (it == index_.end()) throw Error("no such tensor in the model weights", {path_, key});
    return files_[it->second]->tensor(key);
}

std::vector<std::string> WeightStore::keys() const {
    std::vector<std::string> out;
    for (const auto& kv : index_) out.push_back(kv.first);
    return out;
}

}  // namespace hra::io
