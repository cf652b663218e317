// CLIP's text transformer (transformers' CLIPTextModel and
// CLIPTextModelWithProjection; the text encoder of Stable Diffusion 1.x):
// token + learned position embeddings, pre-LN blocks with causal self-attention
// (q scaled before the product) and a quick_gelu MLP, final LayerNorm; the
// pooled output is the hidden state at the end token, optionally projected by
// `text_projection` (no bias). Module names are HF's state-dict names, every
// Linear an hra::Linear (adapters can target q_proj, ..., fc2).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "adapters/layers.h"

namespace hra {

struct ClipTextConfig {
    int64_t vocab_size = 49408;
    int64_t hidden_size = 512;
    int64_t intermediate_size = 2048;
    int64_t num_hidden_layers = 12;
    int64_t num_attention_heads = 8;
    int64_t max_position_embeddings = 77;
    int64_t projection_dim = 512;
    std::string hidden_act = "quick_gelu";  // or gelu
    double layer_norm_eps = 1e-5;
    int64_t eos_token_id = 2;  // 2 (SD 1.5's legacy value): pool at argmax(ids), as transformers v4.36
    bool with_projection = false;  // CLIPTextModelWithProjection
};

// config.json of a CLIPTextModel (model_type clip_text_model), or a CLIPModel's
// text_config; transformers' defaults for absent keys; errors name the file and key.
ClipTextConfig parse_clip_text_config(const std::string& json_text, const std::string& source);

// The checks every CLIP-style encoder config shares: hidden_size a multiple of
// the head count, hidden_act quick_gelu or gelu (errors name `source` and the key).
// The config of one tower of a CLIP config: `j` itself when its model_type is
// clip_<tower>_model, its <tower>_config when it is a whole CLIPModel ("clip").
// Sets `projection_dim` as transformers uses it: a CLIPModel's top-level value
// (the towers' nested ones are ignored), else the tower's own, else left as is.
nlohmann::json clip_tower_config(const nlohmann::json& j, const std::string& tower, const std::string& source,
                                 int64_t* projection_dim);
void check_clip_encoder_shape(int64_t hidden_size, int64_t heads, const std::string& hidden_act, const std::string& source);

struct ClipTextOutputs {
    torch::Tensor last_hidden_state;           // [B, T, D], after final_layer_norm
    torch::Tensor pooler_output;               // [B, D]
    torch::Tensor text_embeds;                 // [B, projection_dim] (with projection)
    std::vector<torch::Tensor> hidden_states;  // embeddings, then each layer's output
};

class ClipAttentionImpl : public torch::nn::Module {
public:
    explicit ClipAttentionImpl(const ClipTextConfig& c);
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
    Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, out_proj{nullptr};

private:
    int64_t heads_, head_dim_;
};
TORCH_MODULE(ClipAttention);

class ClipMlpImpl : public torch::nn::Module {
public:
    explicit ClipMlpImpl(const ClipTextConfig& c);
    torch::Tensor forward(const torch::Tensor& x);
    Linear fc1{nullptr}, fc2{nullptr};

private:
    bool quick_;
};
TORCH_MODULE(ClipMlp);

class ClipEncoderLayerImpl : public torch::nn::Module {
public:
    explicit ClipEncoderLayerImpl(const ClipTextConfig& c);
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& mask);
    ClipAttention self_attn{nullptr};
    torch::nn::LayerNorm layer_norm1{nullptr}, layer_norm2{nullptr};
    ClipMlp mlp{nullptr};
};
TORCH_MODULE(ClipEncoderLayer);

// text_model.*: embeddings, encoder, final_layer_norm.
class ClipTextTransformerImpl : public torch::nn::Module {
public:
    explicit ClipTextTransformerImpl(const ClipTextConfig& c);
    ClipTextOutputs forward(const torch::Tensor& input_ids);
    torch::nn::Embedding token_embedding{nullptr}, position_embedding{nullptr};
    torch::nn::ModuleList layers{nullptr};
    torch::nn::LayerNorm final_layer_norm{nullptr};

private:
    ClipTextConfig c_;
};
TORCH_MODULE(ClipTextTransformer);

class ClipTextModelImpl : public torch::nn::Module {
public:
    explicit ClipTextModelImpl(const ClipTextConfig& c);
    // input_ids [B, T] (T <= max_position_embeddings); no attention mask, as SD.
    ClipTextOutputs forward(const torch::Tensor& input_ids);
    const ClipTextConfig& config() const { return c_; }
    ClipTextTransformer text_model{nullptr};
    Linear text_projection{nullptr};  // with_projection only

private:
    ClipTextConfig c_;
};
TORCH_MODULE(ClipTextModel);

struct LoadedClipText {
    std::string dir;
    ClipTextConfig config;
    ClipTextModel model{nullptr};
};

// A text encoder folder (config.json + safetensors or .bin, sharded or not), or
// a diffusers pipeline folder holding one in text_encoder/. Strict: missing,
// unexpected or mis-shaped tensors are one error naming them; a
// `position_ids` buffer (older transformers) is accepted and ignored. The
// projection is loaded when the file has `text_projection.weight`.
LoadedClipText load_clip_text(const std::string& dir, c10::ScalarType dtype = c10::ScalarType::Float,
                            const std::string& variant = "");
// A transformers config.json (clip_text_model) for `c` (parse_clip_text_config reads it back).
std::string clip_text_config_json(const ClipTextConfig& c);

}  // namespace hra
