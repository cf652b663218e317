#include "models/deberta_config.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/json_value.h"
#include "models/config_bounds.h"

namespace hra {

using json = nlohmann::json;

DebertaConfig parse_deberta_config(const std::string& text, const std::string& source) {
    const json j = io::parse_json(text, source);
    if (!j.is_object()) throw Error("config is not a JSON object", {source});
    DebertaConfig c;
    c.source_json = text;
    const std::string type = io::json_value_or<std::string>(j, "model_type", "", source);
    if (type != "deberta-v2")
        throw Error("unsupported model_type '" + type + "' (expected deberta-v2, as microsoft/deberta-v3-* use)",
                    {source, "model_type"});
    c.vocab_size = io::json_value_or<int64_t>(j, "vocab_size", c.vocab_size, source);
    c.hidden_size = io::json_value_or<int64_t>(j, "hidden_size", c.hidden_size, source);
    c.num_hidden_layers = io::json_value_or<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, source);
    c.num_attention_heads = io::json_value_or<int64_t>(j, "num_attention_heads", c.num_attention_heads, source);
    // Sizes no model has are errors before anything is allocated (a config with
    // hidden_size 10^12 or 10^9 layers allocated first).
    auto within = [&](int64_t v, int64_t lo, int64_t hi, const char* key) {
        if (v < lo || v > hi)
            throw Error(std::to_string(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi) + ", beyond any model",
                        {source, key});
    };
    within(c.vocab_size, 1, int64_t{1} << 24, "vocab_size");
    within(c.hidden_size, 1, int64_t{1} << 17, "hidden_size");
    within(c.num_hidden_layers, 1, 4096, "num_hidden_layers");
    within(c.num_attention_heads, 1, 4096, "num_attention_heads");
    if (c.hidden_size % c.num_attention_heads != 0 && !j.contains("attention_head_size"))
        throw Error("hidden_size is not a multiple of num_attention_heads", {source, "num_attention_heads"});
    c.attention_head_size = io::json_value_or<int64_t>(j, "attention_head_size", c.hidden_size / c.num_attention_heads, source);
    c.intermediate_size = io::json_value_or<int64_t>(j, "intermediate_size", c.intermediate_size, source);
    c.hidden_act = io::json_value_or<std::string>(j, "hidden_act", c.hidden_act, source);
    if (c.hidden_act != "gelu") throw Error("unsupported hidden_act '" + c.hidden_act + "' (expected gelu)", {source, "hidden_act"});
    c.hidden_dropout_prob = io::json_value_or<double>(j, "hidden_dropout_prob", c.hidden_dropout_prob, source);
    c.attention_probs_dropout_prob = io::json_value_or<double>(j, "attention_probs_dropout_prob", c.attention_probs_dropout_prob, source);
    c.max_position_embeddings = io::json_value_or<int64_t>(j, "max_position_embeddings", c.max_position_embeddings, source);
    c.type_vocab_size = io::json_value_or<int64_t>(j, "type_vocab_size", c.type_vocab_size, source);
    c.initializer_range = io::json_value_or<double>(j, "initializer_range", c.initializer_range, source);
    c.layer_norm_eps = io::json_value_or<double>(j, "layer_norm_eps", c.layer_norm_eps, source);
    c.relative_attention = io::json_value_or<bool>(j, "relative_attention", false, source);
    c.max_relative_positions = io::json_value_or<int64_t>(j, "max_relative_positions", -1, source);
    if (c.max_relative_positions < 1) c.max_relative_positions = c.max_position_embeddings;
    c.position_buckets = io::json_value_or<int64_t>(j, "position_buckets", -1, source);
    c.pad_token_id = io::json_value_or<int64_t>(j, "pad_token_id", 0, source);
    c.position_biased_input = io::json_value_or<bool>(j, "position_biased_input", true, source);
    if (j.contains("pos_att_type") && !j["pos_att_type"].is_null()) {
        std::vector<std::string> types;
        const auto& v = j["pos_att_type"];
        if (v.is_string()) {
            std::string s = v.get<std::string>();
            size_t pos = 0;
            while (pos <= s.size()) {
                size_t bar = s.find('|', pos);
                if (bar == std::string::npos) bar = s.size();
                std::string t = s.substr(pos, bar - pos);
                t.erase(0, t.find_first_not_of(' '));
                t.erase(t.find_last_not_of(' ') + 1);
                for (auto& ch : t) ch = static_cast<char>(std::tolower(ch));
                if (!t.empty()) types.push_back(t);
                pos = bar + 1;
            }
        } else {
            types = io::json_value_or<std::vector<std::string>>(j, "pos_att_type", {}, source);
        }
        for (const auto& t : types) {
            if (t == "c2p") c.c2p = true;
            else if (t == "p2c") c.p2c = true;
            else throw Error("unsupported pos_att_type '" + t + "' (expected c2p and/or p2c)", {source, "pos_att_type"});
        }
    }
    c.share_att_key = io::json_value_or<bool>(j, "share_att_key", false, source);
    {
        std::string n = io::json_value_or<std::string>(j, "norm_rel_ebd", "none", source);
        for (auto& ch : n) ch = static_cast<char>(std::tolower(ch));
        c.norm_rel_ebd_layer_norm = n.find("layer_norm") != std::string::npos;
    }
    if (io::json_value_or<int64_t>(j, "conv_kernel_size", 0, source) > 0)
        throw Error("convolution layers (conv_kernel_size, DeBERTa-v2 xlarge) are not supported", {source, "conv_kernel_size"});
    c.embedding_size = io::json_value_or<int64_t>(j, "embedding_size", c.hidden_size, source);
    c.pooler_hidden_size = io::json_value_or<int64_t>(j, "pooler_hidden_size", c.hidden_size, source);
    c.pooler_hidden_act = io::json_value_or<std::string>(j, "pooler_hidden_act", "gelu", source);
    if (c.pooler_hidden_act != "gelu")
        throw Error("unsupported pooler_hidden_act '" + c.pooler_hidden_act + "'", {source, "pooler_hidden_act"});
    c.pooler_dropout = io::json_value_or<double>(j, "pooler_dropout", 0.0, source);
    c.cls_dropout = io::json_value_or<double>(j, "cls_dropout", c.hidden_dropout_prob, source);
    if (j.contains("id2label") && j["id2label"].is_object()) {
        c.id2label.assign(j["id2label"].size(), "");
        for (auto it = j["id2label"].begin(); it != j["id2label"].end(); ++it) {
            const std::string& key = it.key();
            if (key.empty() || key.size() > 9 || key.find_first_not_of("0123456789") != std::string::npos ||
                std::to_string(std::stoul(key)) != key || std::stoul(key) >= c.id2label.size())  // "0" and "00" would both be 0
                throw Error("id2label keys must be 0..n-1, got '" + key + "'", {source, "id2label"});
            if (!it.value().is_string()) throw Error("id2label values must be strings", {source, "id2label"});
            c.id2label[std::stoul(key)] = it.value().get<std::string>();
        }
        c.num_labels = static_cast<int64_t>(c.id2label.size());
    }
    c.num_labels = io::json_value_or<int64_t>(j, "num_labels", c.num_labels, source);
    c.problem_type = io::json_value_or<std::string>(j, "problem_type", "", source);
    within(c.attention_head_size, 1, 4096, "attention_head_size");
    within(c.intermediate_size, 1, int64_t{1} << 20, "intermediate_size");
    within(c.max_position_embeddings, 1, int64_t{1} << 24, "max_position_embeddings");
    within(c.max_relative_positions, 1, int64_t{1} << 24, "max_relative_positions");
    within(c.position_buckets, -1, int64_t{1} << 16, "position_buckets");
    within(c.type_vocab_size, 0, 1024, "type_vocab_size");
    within(c.embedding_size, 1, int64_t{1} << 17, "embedding_size");
    within(c.pooler_hidden_size, 1, int64_t{1} << 17, "pooler_hidden_size");
    within(c.num_labels, 1, int64_t{1} << 20, "num_labels");
    bounds::parameter_budget(parameters_at_least(c), source);
    return c;
}

double parameters_at_least(const DebertaConfig& c) {
    // Word embeddings, q/k/v and attention output, the two FFN matrices, the classifier.
    const double h = static_cast<double>(c.hidden_size), attn = static_cast<double>(c.num_attention_heads * c.attention_head_size);
    return static_cast<double>(c.vocab_size) * static_cast<double>(c.embedding_size) +
           static_cast<double>(c.num_hidden_layers) * (4 * h * attn + 2 * h * static_cast<double>(c.intermediate_size)) +
           static_cast<double>(c.pooler_hidden_size) * static_cast<double>(c.num_labels);
}

DebertaConfig read_deberta_config(const std::string& path) {
    const std::string file = io::file_in_folder(path, "config.json");
    return parse_deberta_config(io::read_file(file), file);
}

}  // namespace hra
