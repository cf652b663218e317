// Read access to the weights of a model: one safetensors file, or a Hugging
// Face folder with model.safetensors or a sharded model.safetensors.index.json.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace hra::io {

class WeightStore {
public:
    // `path`: a .safetensors file or a folder holding model.safetensors or
    // model.safetensors.index.json. hra::Error when none is there or a file is bad.
    static WeightStore open(const std::string& path);

    bool contains(const std::string& key) const;
    at::Tensor get(const std::string& key) const;  // hra::Error naming the key when absent
    std::vector<std::string> keys() const;         // sorted
    const std::string& path() const { return path_; }

private:
    std::string path_;
    std::vector<std::shared_ptr<SafetensorsFile>> files_;
    std::map<std::string, size_t> index_;  // key -> file
};

}  // namespace hra::io
