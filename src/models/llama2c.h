// llama2.c checkpoints (legacy v0 and export.py version 1, float32) read into
// Hugging Face names and layout, and converted to a complete HF model folder.
#pragma once

#include <string>

#include "io/safetensors.h"
#include "models/llama_config.h"

namespace hra {

struct Llama2cCheckpoint {
    int version = 0;  // 0 (run.c legacy) or 1
    bool shared_classifier = true;
    int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
    std::string config_json;  // config.json of the equivalent LlamaForCausalLM
    // HF names; wq/wk permuted from llama2.c's interleaved RoPE pairs to rotate-half.
    io::NamedTensors tensors;
};

// hra::Error naming the file on a bad magic, unsupported version, impossible
// config or a size that does not match the header.
Llama2cCheckpoint read_llama2c(const std::string& path);

// Writes config.json, generation_config.json, model.safetensors, tokenizer.json
// and tokenizer_config.json into `out_dir` (through a temporary folder).
void convert_llama2c(const std::string& model_path, const std::string& tokenizer_path, const std::string& out_dir,
                     bool overwrite);

}  // namespace hra
