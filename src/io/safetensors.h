// safetensors reading (mmap) and writing (temporary file + rename).
//
// Hand-written: the format is a little-endian u64 header length, a JSON
// header and one data buffer, and Debian packages no C++ reader for it.
// Reading validates everything before any tensor is touched: header length
// within the file and below 100 MB, valid JSON, known dtypes, shapes that
// match the byte ranges, and byte ranges that tile the data buffer exactly
// (no overlap, no gap). Every failure is an hra::Error naming the file.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

namespace hra::io {

struct TensorInfo {
    std::string dtype;            // "F32", "BF16", ...
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte range inside the data buffer
};

class SafetensorsFile {
public:
    // Maps and validates a file.
    static SafetensorsFile open(const std::string& path);
    // Validates an in-memory image (`label` names it in errors).
    static SafetensorsFile from_bytes(std::string bytes, const std::string& label);

    const std::string& path() const { return path_; }
    std::vector<std::string> names() const;  // sorted
    bool contains(const std::string& name) const { return infos_.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const;
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    // The tensor, sharing memory with the mapping when aligned (writes to it
    // stay private to the process). Throws hra::Error for an unknown name.
    at::Tensor tensor(const std::string& name) const;

    // All tensors as owned copies.
    std::map<std::string, at::Tensor> load_all() const;

    struct Buffer;

private:
    std::string path_;
    std::shared_ptr<Buffer> buffer_;
    const uint8_t* data_ = nullptr;  // start of the data section
    std::map<std::string, TensorInfo> infos_;
    std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes tensors (any device, any layout; copied to contiguous CPU) atomically.
// Names must be unique.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Serialises to bytes (what save_safetensors writes).
std::string serialize_safetensors(const NamedTensors& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

// Dtype names <-> torch scalar types; hra::Error for unknown names.
c10::ScalarType dtype_from_name(const std::string& name);
std::string dtype_name(c10::ScalarType type);

}  // namespace hra::io
