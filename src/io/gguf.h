// GGUF, the file format of llama.cpp (and Ollama): a header, typed key/value
// metadata, tensor descriptions and aligned tensor data, little-endian.
// Written by hand: no Debian package reads or writes GGUF, and the format is
// small (ggml's docs/gguf.md). Only what hra writes is supported: GGUF version
// 3, tensors in F32, F16, BF16 and Q8_0.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include <ATen/ATen.h>

namespace hra::io {

// ggml_type numbers of the tensor types hra writes.
enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q8_0 = 8, BF16 = 30 };

GgmlType parse_ggml_type(const std::string& name);  // f32, f16, bf16, q8_0
std::string ggml_type_name(GgmlType type);
// Q8_0 stores blocks of 32 values along a row: rows whose length is not a
// multiple of 32 cannot use it.
bool ggml_type_fits(GgmlType type, int64_t row_length);
// Bytes of `n` values (n a multiple of the block size).
uint64_t ggml_type_bytes(GgmlType type, int64_t n);

// Conversions of float32 values as ggml's reference code does them.
// Q8_0: per block of 32, d = max|x| / 127 stored as f16, q = round(x / d) (halves away from zero).
std::vector<uint8_t> quantize_q8_0(const float* x, int64_t n);
std::vector<float> dequantize_q8_0(const uint8_t* data, int64_t n);
// Any supported type to raw bytes (F16 and BF16 round to nearest even), and back.
std::vector<uint8_t> encode_ggml(const at::Tensor& values, GgmlType type);
at::Tensor decode_ggml(const uint8_t* data, GgmlType type, const std::vector<int64_t>& torch_shape);

using GgufArray = std::variant<std::vector<std::string>, std::vector<float>, std::vector<int32_t>>;
using GgufValue = std::variant<std::string, uint32_t, int32_t, float, bool, uint64_t, GgufArray>;

struct GgufTensorInfo {
    std::string name;
    std::vector<int64_t> shape;  // torch order ([rows, cols]); GGUF stores it reversed
    GgmlType type = GgmlType::F32;
    uint64_t offset = 0;  // from the start of the data section
};

// Collects metadata and tensors, then writes the file through a temporary name.
// Tensors are converted one at a time while writing, so a model never exists
// twice in memory in another type.
class GgufWriter {
public:
    void set(const std::string& key, GgufValue value);
    // `values`: any floating tensor (converted from float32); shape in torch order.
    void add_tensor(const std::string& name, const at::Tensor& values, GgmlType type);
    // Writes `path` atomically. Returns its size in bytes.
    uint64_t write(const std::string& path) const;

private:
    std::vector<std::pair<std::string, GgufValue>> kv_;
    std::vector<std::pair<GgufTensorInfo, at::Tensor>> tensors_;
};

// A GGUF file read back (for tests and `hra inspect`): hra::Error naming the file
// on a bad magic, version, truncated header, unknown value or tensor type, or
// data that runs past the end of the file.
struct GgufFile {
    uint32_t version = 0;
    std::map<std::string, GgufValue> metadata;
    std::vector<GgufTensorInfo> tensors;
    uint64_t data_offset = 0;  // of the data section in the file
    std::string path;

    const GgufValue& at(const std::string& key) const;
    // The tensor's values as float32 in torch shape.
    at::Tensor tensor(const std::string& name) const;
};
GgufFile read_gguf(const std::string& path);

}  // namespace hra::io
