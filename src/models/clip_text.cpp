#include "models/clip_text.h"

#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/strings.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/json_value.h"
#include "io/weights.h"
#include "models/model_weights.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

void check_clip_encoder_shape(int64_t hidden_size, int64_t heads, const std::string& hidden_act, const std::string& source) {
    if (hidden_size % heads != 0)
        throw Error("hidden_size " + std::to_string(hidden_size) + " is not a multiple of num_attention_heads " + std::to_string(heads),
                    {source, "num_attention_heads"});
    if (hidden_act != "quick_gelu" && hidden_act != "gelu")
        throw Error("hidden_act '" + hidden_act + "' is not supported (quick_gelu or gelu)", {source, "hidden_act"});
}

json clip_tower_config(const json& j, const std::string& tower, const std::string& source, int64_t* projection_dim) {
    const std::string type = io::json_value_or<std::string>(j, "model_type", "", source);
    if (type == "clip") {  // a whole CLIPModel
        const std::string key = tower + "_config";
        if (!j.contains(key) || !j[key].is_object()) throw Error("a CLIPModel config without " + key, {source, key});
        const auto& t = j[key];
        *projection_dim = io::json_value_or<int64_t>(j, "projection_dim", io::json_value_or<int64_t>(t, "projection_dim", *projection_dim, source), source);
        return t;
    }
    if (type != "clip_" + tower + "_model")
        throw Error("model_type '" + type + "' is not a CLIP " + tower + " model (expected clip_" + tower + "_model or clip)",
                    {source, "model_type"});
    *projection_dim = io::json_value_or<int64_t>(j, "projection_dim", *projection_dim, source);
    return j;
}

ClipTextConfig parse_clip_text_config(const std::string& text, const std::string& source) {
    json j = io::parse_json(text, source);
    if (!j.is_object()) throw Error("config is not a JSON object", {source});
    ClipTextConfig c;
    j = clip_tower_config(j, "text", source, &c.projection_dim);
    c.vocab_size = io::json_value_or<int64_t>(j, "vocab_size", c.vocab_size, source);
    c.hidden_size = io::json_value_or<int64_t>(j, "hidden_size", c.hidden_size, source);
    c.intermediate_size = io::json_value_or<int64_t>(j, "intermediate_size", c.intermediate_size, source);
    c.num_hidden_layers = io::json_value_or<int64_t>(j, "num_hidden_layers", c.num_hidden_layers, source);
    c.num_attention_heads = io::json_value_or<int64_t>(j, "num_attention_heads", c.num_attention_heads, source);
    c.max_position_embeddings = io::json_value_or<int64_t>(j, "max_position_embeddings", c.max_position_embeddings, source);
    c.hidden_act = io::json_value_or<std::string>(j, "hidden_act", c.hidden_act, source);
    c.layer_norm_eps = io::json_value_or<double>(j, "layer_norm_eps", c.layer_norm_eps, source);
    c.eos_token_id = io::json_value_or<int64_t>(j, "eos_token_id", c.eos_token_id, source);
    for (auto [key, v] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
                          {"intermediate_size", c.intermediate_size}, {"num_attention_heads", c.num_attention_heads},
                          {"max_position_embeddings", c.max_position_embeddings}, {"projection_dim", c.projection_dim}})
        if (v <= 0) throw Error("must be positive, got " + std::to_string(v), {source, key});
    // transformers builds a CLIPEncoder with no layers (embeddings and the final layer norm alone).
    if (c.num_hidden_layers < 0) throw Error("must not be negative, got " + std::to_string(c.num_hidden_layers), {source, "num_hidden_layers"});
    check_clip_encoder_shape(c.hidden_size, c.num_attention_heads, c.hidden_act, source);
    return c;
}

ClipAttentionImpl::ClipAttentionImpl(const ClipTextConfig& c)
    : heads_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads) {
    q_proj = register_module("q_proj", Linear(c.hidden_size, c.hidden_size));
    k_proj = register_module("k_proj", Linear(c.hidden_size, c.hidden_size));
    v_proj = register_module("v_proj", Linear(c.hidden_size, c.hidden_size));
    out_proj = register_module("out_proj", Linear(c.hidden_size, c.hidden_size));
}

torch::Tensor ClipAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
    const int64_t b = x.size(0), t = x.size(1);
    auto split = [&](const torch::Tensor& y) { return y.view({b, t, heads_, head_dim_}).transpose(1, 2); };
    // transformers: q_proj(x) * head_dim^-0.5, then softmax(q·kᵀ + mask)·v.
    auto q = split(q_proj(x) * std::pow(static_cast<double>(head_dim_), -0.5));
    auto k = split(k_proj(x)), v = split(v_proj(x));
    auto probs = torch::softmax(torch::matmul(q, k.transpose(-1, -2)) + mask, -1);
    auto ctx = torch::matmul(probs, v).transpose(1, 2).reshape({b, t, heads_ * head_dim_});
    return out_proj(ctx);
}

ClipMlpImpl::ClipMlpImpl(const ClipTextConfig& c) : quick_(c.hidden_act == "quick_gelu") {
    fc1 = register_module("fc1", Linear(c.hidden_size, c.intermediate_size));
    fc2 = register_module("fc2", Linear(c.intermediate_size, c.hidden_size));
}

torch::Tensor ClipMlpImpl::forward(const torch::Tensor& x) {
    auto h = fc1(x);
    h = quick_ ? h * torch::sigmoid(1.702 * h) : torch::gelu(h);
    return fc2(h);
}

ClipEncoderLayerImpl::ClipEncoderLayerImpl(const ClipTextConfig& c) {
    const auto ln = torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps);
    self_attn = register_module("self_attn", ClipAttention(c));
    layer_norm1 = register_module("layer_norm1", torch::nn::LayerNorm(ln));
    mlp = register_module("mlp", ClipMlp(c));
    layer_norm2 = register_module("layer_norm2", torch::nn::LayerNorm(ln));
}

torch::Tensor ClipEncoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& mask) {
    auto h = x + self_attn(layer_norm1(x), mask);
    return h + mlp(layer_norm2(h));
}

ClipTextTransformerImpl::ClipTextTransformerImpl(const ClipTextConfig& c) : c_(c) {
    auto embeddings = register_module("embeddings", std::make_shared<torch::nn::Module>());
    token_embedding = embeddings->register_module("token_embedding", torch::nn::Embedding(c.vocab_size, c.hidden_size));
    position_embedding =
        embeddings->register_module("position_embedding", torch::nn::Embedding(c.max_position_embeddings, c.hidden_size));
    auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    layers = encoder->register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(ClipEncoderLayer(c));
    final_layer_norm = register_module(
        "final_layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps)));
}

ClipTextOutputs ClipTextTransformerImpl::forward(const torch::Tensor& input_ids) {
    if (input_ids.dim() != 2) throw Error("CLIP text input_ids must be [batch, tokens], got " + c10::str(input_ids.sizes()));
    const int64_t t = input_ids.size(1);
    if (t < 1 || t > c_.max_position_embeddings)
        throw Error("CLIP text takes 1.." + std::to_string(c_.max_position_embeddings) + " tokens, got " + std::to_string(t));
    auto ids = input_ids.to(token_embedding->weight.device(), torch::kLong);
    if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= c_.vocab_size)
        throw Error("a token id is outside the vocabulary of " + std::to_string(c_.vocab_size));
    ClipTextOutputs out;
    auto positions = torch::arange(t, ids.options());
    auto h = token_embedding(ids) + position_embedding(positions).unsqueeze(0);
    out.hidden_states.push_back(h);
    // Causal: query i sees keys 0..i (additive lowest value above the diagonal, as transformers).
    const auto upper = torch::ones({t, t}, h.options().dtype(torch::kBool)).triu(1);
    const double lowest = h.scalar_type() == torch::kDouble  ? std::numeric_limits<double>::lowest()
                          : h.scalar_type() == torch::kFloat ? static_cast<double>(std::numeric_limits<float>::lowest())
                                                             : -std::numeric_limits<double>::infinity();
    const auto additive = torch::zeros({t, t}, h.options()).masked_fill(upper, lowest);
    for (const auto& layer : *layers) {
        h = layer->as<ClipEncoderLayer>()->forward(h, additive);
        out.hidden_states.push_back(h);
    }
    out.last_hidden_state = final_layer_norm(h);
    // The end token: argmax(ids) for the legacy eos_token_id 2, else the first eos_token_id.
    auto where = c_.eos_token_id == 2 ? ids.argmax(-1) : (ids == c_.eos_token_id).to(torch::kInt).argmax(-1);
    out.pooler_output = out.last_hidden_state.index({torch::arange(ids.size(0), ids.options()), where});
    return out;
}

ClipTextModelImpl::ClipTextModelImpl(const ClipTextConfig& c) : c_(c) {
    text_model = register_module("text_model", ClipTextTransformer(c));
    if (c.with_projection) text_projection = register_module("text_projection", Linear(c.hidden_size, c.projection_dim, false));
}

ClipTextOutputs ClipTextModelImpl::forward(const torch::Tensor& input_ids) {
    auto out = text_model(input_ids);
    if (text_projection) out.text_embeds = text_projection(out.pooler_output);
    return out;
}

LoadedClipText load_clip_text(const std::string& dir, c10::ScalarType dtype, const std::string& variant) {
    const fs::path d(component_folder(dir, "text_encoder"));
    LoadedClipText out;
    out.dir = d.string();
    const std::string cfg = io::file_in_folder(d.string(), "config.json");
    out.config = parse_clip_text_config(io::read_file(cfg), cfg);
    const auto store = io::WeightStore::open(d.string(), variant);
    out.config.with_projection = store.contains("text_projection.weight");
    {
        SkipInitGuard skip;  // every parameter is overwritten from the file
        out.model = frozen(ClipTextModel(out.config), dtype);
    }
    // A whole CLIPModel checkpoint also holds the image tower: not this model's.
    const bool whole = io::json_value_or<std::string>(io::parse_json(io::read_file(cfg), cfg), "model_type", "", cfg) == "clip";
    load_named_weights(base_parameters(*out.model), store, [whole](const std::string& key) {
        return ends_with(key, "embeddings.position_ids") ||
               (whole && (starts_with(key, "vision_model.") || key == "visual_projection.weight" || key == "logit_scale"));
    });
    return out;
}


std::string clip_text_config_json(const ClipTextConfig& c) {
    nlohmann::ordered_json j = {{"architectures", {"CLIPTextModel"}},
                                {"eos_token_id", c.eos_token_id},
                                {"hidden_act", c.hidden_act},
                                {"hidden_size", c.hidden_size},
                                {"intermediate_size", c.intermediate_size},
                                {"layer_norm_eps", c.layer_norm_eps},
                                {"max_position_embeddings", c.max_position_embeddings},
                                {"model_type", "clip_text_model"},
                                {"num_attention_heads", c.num_attention_heads},
                                {"num_hidden_layers", c.num_hidden_layers},
                                {"projection_dim", c.projection_dim},
                                {"vocab_size", c.vocab_size}};
    return j.dump(2) + "\n";
}

}  // namespace hra
