#include "models/llama_config.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/json_value.h"
#include "models/config_bounds.h"

namespace hra {

using json = nlohmann::json;

namespace {

std::optional<int64_t> optional_id(const json& j, const char* key, const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) return std::nullopt;
    return io::json_get<int64_t>(j[key], key, source);  // a fraction or a value beyond int64 is an error
}

// Sizes and constants that no model has: errors before anything is allocated
// (a config with 10^9 layers or 10^12 positions used to allocate first).
void check_llama_config(const LlamaConfig& c, const std::string& source, bool head_dim_derived) {
    auto require = [&](bool ok, const char* key, const std::string& what) {
        if (!ok) throw Error(what, {source, key});
    };
    auto at_most = [&](int64_t v, int64_t limit, const char* key) {
        require(v <= limit, key, std::to_string(v) + " is beyond any model (at most " + std::to_string(limit) + ")");
    };
    at_most(c.vocab_size, int64_t{1} << 24, "vocab_size");
    at_most(c.hidden_size, int64_t{1} << 17, "hidden_size");
    at_most(c.intermediate_size, int64_t{1} << 20, "intermediate_size");
    at_most(c.num_hidden_layers, 4096, "num_hidden_layers");
    at_most(c.num_attention_heads, 4096, "num_attention_heads");
    at_most(c.head_dim, 4096, "head_dim");
    // transformers' LlamaAttention raises the same when head_dim comes from hidden_size / heads.
    require(!head_dim_derived || c.hidden_size % c.num_attention_heads == 0, "num_attention_heads",
            "hidden_size (" + std::to_string(c.hidden_size) + ") is not a multiple of num_attention_heads (" +
                std::to_string(c.num_attention_heads) + ")");
    require(c.max_position_embeddings > 0 && c.max_position_embeddings <= (int64_t{1} << 24), "max_position_embeddings",
            "must be 1 to 2^24, not " + std::to_string(c.max_position_embeddings));
    require(std::isfinite(c.rope_theta) && c.rope_theta > 0, "rope_theta", "must be a positive number");
    require(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0, "rms_norm_eps", "must be a positive number");
    const auto& rs = c.rope_scaling;
    require(std::isfinite(rs.factor) && rs.factor > 0, "rope_scaling", "factor must be a positive number");
    if (rs.type == "llama3") {
        require(std::isfinite(rs.low_freq_factor) && std::isfinite(rs.high_freq_factor) && rs.low_freq_factor > 0 &&
                    rs.high_freq_factor > rs.low_freq_factor,
                "rope_scaling", "llama3 needs 0 < low_freq_factor < high_freq_factor");
        require(rs.original_max_position_embeddings > 0, "rope_scaling", "original_max_position_embeddings must be positive");
    }
    if (c.sliding_window) require(*c.sliding_window > 0, "sliding_window", "must be positive or null");
    for (const auto id : c.eos_token_ids) require(id >= 0, "eos_token_id", "token ids are not negative");
    if (c.bos_token_id) require(*c.bos_token_id >= 0, "bos_token_id", "token ids are not negative");
    if (c.pad_token_id) require(*c.pad_token_id >= 0, "pad_token_id", "token ids are not negative");
    bounds::parameter_budget(parameters_at_least(c), source);
}

}  // namespace

double parameters_at_least(const LlamaConfig& c) {
    // Embeddings (and the LM head unless tied), q/k/v/o and the gated MLP; norms and biases left out.
    const double h = static_cast<double>(c.hidden_size), q = static_cast<double>(c.num_attention_heads * c.head_dim);
    const double per_layer = 2 * h * q + 2 * h * static_cast<double>(c.kv_dim()) + 3 * h * static_cast<double>(c.intermediate_size);
    return static_cast<double>(c.vocab_size) * h * (c.tie_word_embeddings ? 1 : 2) + static_cast<double>(c.num_hidden_layers) * per_layer;
}

LlamaConfig parse_llama_config(const std::string& text, const std::string& source) {
    const json j = io::parse_json(text, source);
    if (!j.is_object()) throw Error("config is not a JSON object", {source});
    LlamaConfig c;
    c.source_json = text;
    c.model_type = io::json_value_or<std::string>(j, "model_type", "", source);
    // transformers v4.44 defaults per class.
    if (c.model_type == "llama") {
        c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_hidden_layers = 32;
        c.num_attention_heads = 32, c.max_position_embeddings = 2048, c.rms_norm_eps = 1e-6;
        c.bos_token_id = 1, c.eos_token_ids = {2};
    } else if (c.model_type == "mistral") {
        c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 14336, c.num_hidden_layers = 32;
        c.num_attention_heads = 32, c.max_position_embeddings = 131072, c.rms_norm_eps = 1e-6;
        c.sliding_window = 4096, c.bos_token_id = 1, c.eos_token_ids = {2};
    } else if (c.model_type == "qwen2") {
        c.vocab_size = 151936, c.hidden_size = 4096, c.intermediate_size = 22016, c.num_hidden_layers = 32;
        c.num_attention_heads = 32, c.max_position_embeddings = 32768, c.rms_norm_eps = 1e-6;
        c.qkv_bias = true;
    } else {
        throw Error("unsupported model_type '" + c.model_type + "' (hra loads llama, mistral and qwen2)",
                    {source, "model_type"});
    }
    c.vocab_size = io::json_value_or<int64_t>(j, "vocab_size", c.vocab_size, source);
    c.hidden_size = io::json_value_or<int64_t>(j, "hidden_size", c.hidden_size, source);
    c.intermediate_size = io::json_value_or<int64_t>(j, "intermediate_size", c.intermediate_size, source);
    c.num_hidden_layers = io::json_value_or<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, source);
    c.num_attention_heads = io::json_value_or<int64_t>(j, "num_attention_heads", c.num_attention_heads, source);
    const int64_t kv_default = c.model_type == "mistral" ? 8 : c.num_attention_heads;
    c.num_key_value_heads = io::json_value_or<int64_t>(j, "num_key_value_heads", kv_default, source);
    c.max_position_embeddings = io::json_value_or<int64_t>(j, "max_position_embeddings", c.max_position_embeddings, source);
    c.rms_norm_eps = io::json_value_or<double>(j, "rms_norm_eps", c.rms_norm_eps, source);
    c.rope_theta = io::json_value_or<double>(j, "rope_theta", c.rope_theta, source);
    c.tie_word_embeddings = io::json_value_or<bool>(j, "tie_word_embeddings", c.tie_word_embeddings, source);
    if (c.model_type == "llama") {
        const bool bias = io::json_value_or<bool>(j, "attention_bias", false, source);
        c.qkv_bias = c.o_bias = bias;
        c.mlp_bias = io::json_value_or<bool>(j, "mlp_bias", false, source);
    }
    if (c.hidden_size <= 0 || c.num_attention_heads <= 0 || c.num_key_value_heads <= 0 || c.vocab_size <= 0 ||
        c.num_hidden_layers <= 0 || c.intermediate_size <= 0)
        throw Error("sizes must be positive", {source});
    if (c.num_attention_heads % c.num_key_value_heads != 0)
        throw Error("num_attention_heads (" + std::to_string(c.num_attention_heads) +
                        ") is not a multiple of num_key_value_heads (" + std::to_string(c.num_key_value_heads) + ")",
                    {source, "num_key_value_heads"});
    c.head_dim = io::json_value_or<int64_t>(j, "head_dim", c.hidden_size / c.num_attention_heads, source);
    if (c.head_dim <= 0 || c.head_dim % 2 != 0) throw Error("head_dim must be positive and even", {source, "head_dim"});
    const std::string act = io::json_value_or<std::string>(j, "hidden_act", "silu", source);
    if (act != "silu") throw Error("unsupported hidden_act '" + act + "' (expected silu)", {source, "hidden_act"});

    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
        const auto& rs = j["rope_scaling"];
        if (!rs.is_object()) throw Error("rope_scaling must be an object or null", {source, "rope_scaling"});
        std::string type = rs.contains("rope_type") ? io::json_value_or<std::string>(rs, "rope_type", "", source)
                                                    : io::json_value_or<std::string>(rs, "type", "default", source);
        if (type != "default" && type != "linear" && type != "llama3")
            throw Error("unsupported rope_scaling type '" + type + "' (hra implements default, linear and llama3)",
                        {source, "rope_scaling"});
        // transformers v4.44 ignores rope_scaling in Mistral.
        if (c.model_type != "mistral") {
            c.rope_scaling.type = type;
            c.rope_scaling.factor = io::json_value_or<double>(rs, "factor", 1.0, source);
            c.rope_scaling.low_freq_factor = io::json_value_or<double>(rs, "low_freq_factor", 1.0, source);
            c.rope_scaling.high_freq_factor = io::json_value_or<double>(rs, "high_freq_factor", 4.0, source);
            c.rope_scaling.original_max_position_embeddings =
                io::json_value_or<int64_t>(rs, "original_max_position_embeddings", 8192, source);
        }
    }
    if (c.model_type == "mistral") {
        if (j.contains("sliding_window")) {
            c.sliding_window = j["sliding_window"].is_null()
                                   ? std::nullopt
                                   : std::optional<int64_t>(io::json_value_or<int64_t>(j, "sliding_window", 0, source));
        }
    } else if (c.model_type == "qwen2") {
        // transformers v4.44's eager Qwen2 attention ignores the window; so does hra.
        c.sliding_window = std::nullopt;
    }
    if (j.contains("bos_token_id")) c.bos_token_id = optional_id(j, "bos_token_id", source);
    if (j.contains("eos_token_id")) {
        const auto& e = j["eos_token_id"];
        c.eos_token_ids.clear();
        if (e.is_number()) {
            c.eos_token_ids.push_back(io::json_get<int64_t>(e, "eos_token_id", source));
        } else if (e.is_array()) {
            c.eos_token_ids = io::json_get<std::vector<int64_t>>(e, "eos_token_id", source);
        } else if (!e.is_null()) {
            throw Error("eos_token_id must be an integer, a list or null", {source, "eos_token_id"});
        }
    }
    c.pad_token_id = optional_id(j, "pad_token_id", source);
    c.torch_dtype = io::json_value_or<std::string>(j, "torch_dtype", "", source);
    check_llama_config(c, source, !j.contains("head_dim"));
    return c;
}

LlamaConfig read_llama_config(const std::string& path) {
    const std::string file = io::file_in_folder(path, "config.json");
    return parse_llama_config(io::read_file(file), file);
}

}  // namespace hra
