// config.json of DeBERTa-v2/v3 encoders (model_type "deberta-v2"), with
// transformers' defaults for absent keys.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hra {

struct DebertaConfig {
    int64_t vocab_size = 128100;
    int64_t hidden_size = 1536;
    int64_t num_hidden_layers = 24;
    int64_t num_attention_heads = 24;
    int64_t attention_head_size = 64;  // hidden_size / heads unless given
    int64_t intermediate_size = 6144;
    std::string hidden_act = "gelu";
    double hidden_dropout_prob = 0.1;
    double attention_probs_dropout_prob = 0.1;
    int64_t max_position_embeddings = 512;
    int64_t type_vocab_size = 0;
    double initializer_range = 0.02;
    double layer_norm_eps = 1e-7;
    bool relative_attention = false;
    int64_t max_relative_positions = 512;  // resolved: -1 in the file means max_position_embeddings
    int64_t position_buckets = -1;
    int64_t pad_token_id = 0;
    bool position_biased_input = true;
    bool c2p = false, p2c = false;  // pos_att_type
    bool share_att_key = false;
    bool norm_rel_ebd_layer_norm = false;
    int64_t embedding_size = 1536;  // hidden_size unless given
    int64_t pooler_hidden_size = 1536;
    std::string pooler_hidden_act = "gelu";
    double pooler_dropout = 0;
    double cls_dropout = 0.1;  // cls_dropout, else hidden_dropout_prob
    int64_t num_labels = 2;
    std::string problem_type;  // "", regression, single_label_classification
    std::vector<std::string> id2label;
    std::string source_json;

    // Rows of rel_embeddings: 2 x (position_buckets, else max_relative_positions).
    int64_t att_span() const { return position_buckets > 0 ? position_buckets : max_relative_positions; }
};

// A lower estimate of the parameter count (its largest matrices), checked against a budget on parsing.
double parameters_at_least(const DebertaConfig& c);

DebertaConfig parse_deberta_config(const std::string& json_text, const std::string& source);
DebertaConfig read_deberta_config(const std::string& path);  // file or folder

}  // namespace hra
