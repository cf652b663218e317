#include "io/weights.h"

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/torch_bin.h"

namespace hra::io {

namespace fs = std::filesystem;

WeightStore WeightStore::open(const std::string& path, const std::string& variant) {
    WeightStore w;
    w.path_ = path;
    auto add_file = [&](const std::string& file) -> size_t {
        w.files_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(file)));
        return w.files_.size() - 1;
    };
    auto add_bin = [&](const std::string& file) {
        for (auto& [k, t] : read_torch_state_dict(file)) {
            w.loaded_[k] = t;
            w.index_[k] = kInMemory;
        }
    };
    auto is_zip = [](const std::string& file) {
        std::ifstream f(file, std::ios::binary);
        char magic[2] = {};
        f.read(magic, 2);
        return magic[0] == 'P' && magic[1] == 'K';
    };
    if (fs::is_regular_file(path)) {
        if (is_zip(path)) {
            add_bin(path);
            return w;
        }
        size_t i = add_file(path);
        for (const auto& k : w.files_[i]->names()) w.index_[k] = i;
        return w;
    }
    if (!fs::is_directory(path)) throw Error("no such file or folder", {path});
    const fs::path dir(path);
    // transformers names its files model.safetensors / pytorch_model.bin; diffusers
    // diffusion_pytorch_model.{safetensors,bin} (with the same index files). A
    // variant ("fp16") goes before the extension: model.fp16.safetensors,
    // model.safetensors.index.fp16.json, as both libraries name them.
    auto named = [&](const std::string& stem, const std::string& ext, const std::string& v) {
        if (v.empty()) return stem + ext;
        const auto dot = ext.rfind('.');
        return stem + ext.substr(0, dot) + "." + v + ext.substr(dot);
    };
    auto any = [&](const std::string& stem, const std::string& v) {
        const std::string bin = stem == "model" ? "pytorch_model" : stem;
        for (const auto& f : {named(stem, ".safetensors", v), named(stem, ".safetensors.index.json", v), named(bin, ".bin", v),
                              named(bin, ".bin.index.json", v)})
            if (fs::is_regular_file(dir / f)) return true;
        return false;
    };
    std::string v = variant;
    if (v.empty() && !any("model", "") && !any("diffusion_pytorch_model", "")) {
        // Only variant files: take the one variant there is (a folder with fp16 weights only).
        std::set<std::string> found;
        static const std::regex variant_file(
            R"(^(?:diffusion_pytorch_model|pytorch_model|model)\.(?:([^.]+)\.(?:safetensors|bin)|(?:safetensors|bin)\.index\.([^.]+)\.json)$)");
        for (const auto& e : fs::directory_iterator(dir)) {
            std::smatch m;
            const std::string f = e.path().filename().string();
            if (std::regex_match(f, m, variant_file)) found.insert(m[1].matched ? m[1].str() : m[2].str());
        }
        found.erase("safetensors"), found.erase("bin");
        if (found.size() == 1) v = *found.begin();
    }
    const bool diffusers = !any("model", v) && any("diffusion_pytorch_model", v);
    const std::string st_stem = diffusers ? "diffusion_pytorch_model" : "model";
    const std::string bin_stem = diffusers ? "diffusion_pytorch_model" : "pytorch_model";
    if (fs::is_regular_file(dir / named(st_stem, ".safetensors", v))) {
        size_t i = add_file((dir / named(st_stem, ".safetensors", v)).string());
        for (const auto& k : w.files_[i]->names()) w.index_[k] = i;
        return w;
    }
    std::string index_path = (dir / named(st_stem, ".safetensors.index.json", v)).string();
    const bool torch_files = !fs::is_regular_file(index_path);
    if (torch_files) {
        if (fs::is_regular_file(dir / named(bin_stem, ".bin", v))) {
            add_bin((dir / named(bin_stem, ".bin", v)).string());
            return w;
        }
        index_path = (dir / named(bin_stem, ".bin.index.json", v)).string();
        if (!fs::is_regular_file(index_path))
            throw Error(std::string("no model.safetensors, pytorch_model.bin, diffusion_pytorch_model.{safetensors,bin} or an "
                                    "index of shards in the folder") +
                            (v.empty() ? "" : " (variant '" + v + "')"),
                        {path});
    }
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
        if (torch_files) {
            if (found == shard_of.end()) {
                shard_of[shard] = kInMemory;
                add_bin((dir / shard).string());
            }
            if (!w.loaded_.count(it.key()))
                throw Error("index maps this tensor to " + shard + ", which does not hold it", {index_path, it.key()});
            continue;
        }
        size_t i = found != shard_of.end() ? found->second : (shard_of[shard] = add_file((dir / shard).string()));
        if (!w.files_[i]->contains(it.key()))
            throw Error("index maps this tensor to " + shard + ", which does not hold it", {index_path, it.key()});
        w.index_[it.key()] = i;
    }
    if (torch_files)  // keep only what the index names
        for (auto it = w.index_.begin(); it != w.index_.end();)
            it = index["weight_map"].contains(it->first) ? std::next(it) : w.index_.erase(it);
    return w;
}

bool WeightStore::contains(const std::string& key) const { return index_.count(key) != 0; }

at::Tensor WeightStore::get(const std::string& key) const {
    auto it = index_.find(key);
    if (it == index_.end()) throw Error("no such tensor in the model weights", {path_, key});
    if (it->second == kInMemory) return loaded_.at(key);
    return files_[it->second]->tensor(key);
}

std::vector<std::string> WeightStore::keys() const {
    std::vector<std::string> out;
    for (const auto& kv : index_) out.push_back(kv.first);
    return out;
}

}  // namespace hra::io
