#include "models/vision.h"

#include <cmath>
#include <functional>

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

using json = nlohmann::json;

namespace {

// The keys both towers share, over `c`'s defaults, checked.
VisionConfig read_common(const json& j, VisionConfig c, const std::string& source) {
    for (auto [key, field] : {std::pair<const char*, int64_t*>{"image_size", &c.image_size}, {"patch_size", &c.patch_size},
                              {"num_channels", &c.num_channels}, {"hidden_size", &c.hidden_size},
                              {"intermediate_size", &c.intermediate_size}, {"num_hidden_layers", &c.num_hidden_layers},
                              {"num_attention_heads", &c.num_attention_heads}}) {
        *field = io::json_value_or<int64_t>(j, key, *field, source);
        if (*field < (std::string(key) == "num_hidden_layers" ? 0 : 1))
            throw Error("must be positive, got " + std::to_string(*field), {source, key});
    }
    c.hidden_act = io::json_value_or<std::string>(j, "hidden_act", c.hidden_act, source);
    c.layer_norm_eps = io::json_value_or<double>(j, "layer_norm_eps", c.layer_norm_eps, source);
    if (c.image_size % c.patch_size != 0)
        throw Error("image_size " + std::to_string(c.image_size) + " is not a multiple of patch_size " + std::to_string(c.patch_size),
                    {source, "patch_size"});
    check_clip_encoder_shape(c.hidden_size, c.num_attention_heads, c.hidden_act, source);
    return c;
}

// The CLIP text model's layer does the vision tower's work (no mask).
ClipTextConfig clip_layer_config(const VisionConfig& c) {
    ClipTextConfig t;
    t.hidden_size = c.hidden_size;
    t.intermediate_size = c.intermediate_size;
    t.num_attention_heads = c.num_attention_heads;
    t.hidden_act = c.hidden_act;
    t.layer_norm_eps = c.layer_norm_eps;
    return t;
}

torch::nn::LayerNorm layer_norm(const VisionConfig& c) {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({c.hidden_size}).eps(c.layer_norm_eps));
}

torch::nn::Conv2d patch_conv(const VisionConfig& c, bool bias) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(c.num_channels, c.hidden_size, c.patch_size).stride(c.patch_size).bias(bias));
}

// [B, C, H, W] at the config's size → patch tokens [B, N, D], row-major over the grid.
torch::Tensor patch_tokens(torch::nn::Conv2d conv, const torch::Tensor& pixels, const VisionConfig& c, const char* what) {
    if (pixels.dim() != 4 || pixels.size(1) != c.num_channels || pixels.size(2) != c.image_size || pixels.size(3) != c.image_size)
        throw Error(std::string(what) + " takes pixel values [batch, " + std::to_string(c.num_channels) + ", " +
                    std::to_string(c.image_size) + ", " + std::to_string(c.image_size) + "], got " + c10::str(pixels.sizes()));
    return conv(pixels.to(conv->weight.scalar_type())).flatten(2).transpose(1, 2);
}

}  // namespace

VisionConfig parse_clip_vision_config(const std::string& text, const std::string& source) {
    json j = io::parse_json(text, source);
    if (!j.is_object()) throw Error("config is not a JSON object", {source});
    VisionConfig c;
    c.patch_size = 32;
    c.hidden_act = "quick_gelu";
    c.layer_norm_eps = 1e-5;
    j = clip_tower_config(j, "vision", source, &c.projection_dim);
    if (c.projection_dim <= 0) throw Error("must be positive, got " + std::to_string(c.projection_dim), {source, "projection_dim"});
    return read_common(j, c, source);
}

VisionConfig parse_vit_config(const std::string& text, const std::string& source) {
    const json j = io::parse_json(text, source);
    if (!j.is_object()) throw Error("config is not a JSON object", {source});
    const std::string type = io::json_value_or<std::string>(j, "model_type", "", source);
    if (type != "vit") throw Error("model_type '" + type + "' is not a ViT (expected vit)", {source, "model_type"});
    VisionConfig c;
    c.hidden_act = "gelu";
    c.layer_norm_eps = 1e-12;
    c.qkv_bias = io::json_value_or<bool>(j, "qkv_bias", true, source);
    return read_common(j, c, source);
}

ClipVisionModelImpl::ClipVisionModelImpl(const VisionConfig& c, bool with_projection) : c_(c) {
    auto vm = register_module("vision_model", std::make_shared<torch::nn::Module>());
    auto emb = vm->register_module("embeddings", std::make_shared<torch::nn::Module>());
    class_embedding = emb->register_parameter("class_embedding", torch::randn({c.hidden_size}));
    patch_embedding = emb->register_module("patch_embedding", patch_conv(c, false));
    position_embedding = emb->register_module("position_embedding", torch::nn::Embedding(c.tokens(), c.hidden_size));
    pre_layrnorm = vm->register_module("pre_layrnorm", layer_norm(c));
    auto encoder = vm->register_module("encoder", std::make_shared<torch::nn::Module>());
    layers = encoder->register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(ClipEncoderLayer(clip_layer_config(c)));
    post_layernorm = vm->register_module("post_layernorm", layer_norm(c));
    if (with_projection) visual_projection = register_module("visual_projection", Linear(c.hidden_size, c.projection_dim, false));
}

VisionOutputs ClipVisionModelImpl::forward(const torch::Tensor& pixel_values) {
    auto patches = patch_tokens(patch_embedding, pixel_values, c_, "the CLIP vision model");
    const int64_t b = patches.size(0);
    auto h = torch::cat({class_embedding.view({1, 1, -1}).expand({b, 1, c_.hidden_size}), patches}, 1) +
             position_embedding->weight.unsqueeze(0);
    h = pre_layrnorm(h);
    VisionOutputs out;
    out.hidden_states.push_back(h);
    const auto no_mask = torch::zeros({}, h.options());  // every token sees every token
    for (const auto& layer : *layers) {
        h = layer->as<ClipEncoderLayer>()->forward(h, no_mask);
        out.hidden_states.push_back(h);
    }
    out.last_hidden_state = h;
    out.pooler_output = post_layernorm(h.select(1, 0));
    if (visual_projection) out.image_embeds = visual_projection(out.pooler_output);
    return out;
}

VitAttentionImpl::VitAttentionImpl(const VisionConfig& c)
    : heads_(c.num_attention_heads), head_dim_(c.hidden_size / c.num_attention_heads) {
    auto outer = register_module("attention", std::make_shared<torch::nn::Module>());
    query = outer->register_module("query", Linear(c.hidden_size, c.hidden_size, c.qkv_bias));
    key = outer->register_module("key", Linear(c.hidden_size, c.hidden_size, c.qkv_bias));
    value = outer->register_module("value", Linear(c.hidden_size, c.hidden_size, c.qkv_bias));
    auto output = register_module("output", std::make_shared<torch::nn::Module>());
    dense = output->register_module("dense", Linear(c.hidden_size, c.hidden_size));
}

torch::Tensor VitAttentionImpl::forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), t = x.size(1);
    auto split = [&](const torch::Tensor& y) { return y.view({b, t, heads_, head_dim_}).permute({0, 2, 1, 3}); };
    auto q = split(query(x)), k = split(key(x)), v = split(value(x));
    // transformers' ViTSelfAttention: (q·kᵀ) / √d, then softmax.
    auto scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(head_dim_));
    auto ctx = torch::matmul(scores.softmax(-1), v).permute({0, 2, 1, 3}).reshape({b, t, heads_ * head_dim_});
    return dense(ctx);
}

VitLayerImpl::VitLayerImpl(const VisionConfig& c) {
    attention = register_module("attention", VitAttention(c));
    auto inter = register_module("intermediate", std::make_shared<torch::nn::Module>());
    intermediate = inter->register_module("dense", Linear(c.hidden_size, c.intermediate_size));
    auto out = register_module("output", std::make_shared<torch::nn::Module>());
    output = out->register_module("dense", Linear(c.intermediate_size, c.hidden_size));
    layernorm_before = register_module("layernorm_before", layer_norm(c));
    layernorm_after = register_module("layernorm_after", layer_norm(c));
}

torch::Tensor VitLayerImpl::forward(const torch::Tensor& x) {
    auto h = attention(layernorm_before(x)) + x;
    return output(torch::gelu(intermediate(layernorm_after(h)))) + h;
}

VitModelImpl::VitModelImpl(const VisionConfig& c) : c_(c) {
    auto emb = register_module("embeddings", std::make_shared<torch::nn::Module>());
    cls_token = emb->register_parameter("cls_token", torch::randn({1, 1, c.hidden_size}) * 0.02);
    position_embeddings = emb->register_parameter("position_embeddings", torch::randn({1, c.tokens(), c.hidden_size}) * 0.02);
    auto patches = emb->register_module("patch_embeddings", std::make_shared<torch::nn::Module>());
    projection = patches->register_module("projection", patch_conv(c, true));
    auto encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    layers = encoder->register_module("layer", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(VitLayer(c));
    layernorm = register_module("layernorm", layer_norm(c));
}

VisionOutputs VitModelImpl::forward(const torch::Tensor& pixel_values) {
    auto patches = patch_tokens(projection, pixel_values, c_, "the ViT");
    auto h = torch::cat({cls_token.expand({patches.size(0), 1, c_.hidden_size}), patches}, 1) + position_embeddings;
    VisionOutputs out;
    out.hidden_states.push_back(h);
    for (const auto& layer : *layers) {
        h = layer->as<VitLayer>()->forward(h);
        out.hidden_states.push_back(h);
    }
    out.last_hidden_state = layernorm(h);
    out.image_embeds = out.last_hidden_state.select(1, 0);
    return out;
}

ClipVisionModel load_clip_vision(const std::string& dir, c10::ScalarType dtype) {
    const std::string cfg = io::file_in_folder(dir, "config.json");
    const auto config = parse_clip_vision_config(io::read_file(cfg), cfg);
    const auto store = io::WeightStore::open(dir);
    ClipVisionModel model{nullptr};
    {
        SkipInitGuard skip;  // every parameter is overwritten from the file
        model = ClipVisionModel(config, store.contains("visual_projection.weight"));
    }
    model = frozen(model, dtype);
    load_named_weights(base_parameters(*model), store, [](const std::string& key) {
        return ends_with(key, "embeddings.position_ids") || starts_with(key, "text_model.") || key == "text_projection.weight" ||
               key == "logit_scale";
    });
    return model;
}

VitModel load_vit(const std::string& dir, c10::ScalarType dtype) {
    const std::string cfg = io::file_in_folder(dir, "config.json");
    const auto config = parse_vit_config(io::read_file(cfg), cfg);
    const auto store = io::WeightStore::open(dir);
    VitModel model{nullptr};
    {
        SkipInitGuard skip;
        model = VitModel(config);
    }
    model = frozen(model, dtype);
    load_named_weights(base_parameters(*model), store, [](const std::string& key) { return starts_with(key, "pooler."); });
    return model;
}

}  // namespace hra
