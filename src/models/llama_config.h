// config.json of LLaMA-family causal LMs (model_type llama, mistral, qwen2),
// with Hugging Face transformers' defaults for absent keys.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hra {

struct RopeScaling {
    std::string type = "default";  // default | linear | llama3
    double factor = 1.0;
    double low_freq_factor = 1.0;
    double high_freq_factor = 4.0;
    int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
    std::string model_type = "llama";
    int64_t vocab_size = 32000;
    int64_t hidden_size = 4096;
    int64_t intermediate_size = 11008;
    int64_t num_hidden_layers = 32;
    int64_t num_attention_heads = 32;
    int64_t num_key_value_heads = 32;
    int64_t head_dim = 128;  // config's head_dim when present, else hidden_size / num_attention_heads
    double rms_norm_eps = 1e-6;
    double rope_theta = 10000.0;
    RopeScaling rope_scaling;
    int64_t max_position_embeddings = 2048;
    bool tie_word_embeddings = false;
    bool qkv_bias = false;  // attention_bias (llama), always true for qwen2
    bool o_bias = false;    // attention_bias (llama)
    bool mlp_bias = false;
    std::optional<int64_t> sliding_window;  // mistral; qwen2 with use_sliding_window
    std::optional<int64_t> bos_token_id;
    std::vector<int64_t> eos_token_ids;
    std::optional<int64_t> pad_token_id;
    std::string torch_dtype;  // as stored ("bfloat16", ...), may be empty
    std::string source_json;  // the file as read, for writing merged models

    int64_t q_dim() const { return num_attention_heads * head_dim; }
    int64_t kv_dim() const { return num_key_value_heads * head_dim; }
};

// A lower estimate of the parameter count (its largest matrices), checked against a budget on parsing.
double parameters_at_least(const LlamaConfig& c);

// Parses config.json text; hra::Error names `source` and the key at fault
// (unsupported model_type, hidden_act other than silu, bad sizes, ...).
LlamaConfig parse_llama_config(const std::string& json_text, const std::string& source);
// `path`: a config.json file or the folder holding it.
LlamaConfig read_llama_config(const std::string& path);

}  // namespace hra
