// Read access to the weights of a model: one safetensors or pytorch_model.bin
// file, or a Hugging Face folder with model.safetensors, a sharded
// model.safetensors.index.json, pytorch_model.bin or a sharded
// pytorch_model.bin.index.json (in that order of preference, as transformers).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace hra::io {

class WeightStore {
public:
    // `path`: a .safetensors or .bin file, or a folder holding one of the files
    // above. hra::Error when none is there or a file is bad. `variant` picks
    // model.<variant>.safetensors and the like (diffusers' and transformers'
    // variant files); without one, a folder holding only the files of one
    // variant uses those.
    static WeightStore open(const std::string& path, const std::string& variant = "");

    bool contains(const std::string& key) const;
    at::Tensor get(const std::string& key) const;  // hra::Error naming the key when absent
    std::vector<std::string> keys() const;         // sorted
    const std::string& path() const { return path_; }

private:
    std::string path_;
    std::vector<std::shared_ptr<SafetensorsFile>> files_;
    std::map<std::string, size_t> index_;  // key -> file (kInMemory: in loaded_)
    std::map<std::string, at::Tensor> loaded_;  // tensors read from torch.save files
    static constexpr size_t kInMemory = static_cast<size_t>(-1);
};

}  // namespace hra::io
