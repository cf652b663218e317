// The image towers of the subject-driven metrics (DIFFUSION.md §3), under
// transformers' state-dict names, every Linear an hra::Linear:
// - CLIP's vision transformer (CLIPVisionModel / CLIPVisionModelWithProjection,
//   the vision half of a CLIPModel): patch convolution without bias, class
//   embedding, learned positions, pre_layrnorm, the CLIP text model's pre-LN
//   layers without a mask, post_layernorm of the class token, visual_projection.
//   CLIP-I is the cosine of two `image_embeds`.
// - ViT (ViTModel, DINO's checkpoints): patch convolution with bias, cls_token,
//   position embeddings, pre-LN layers with erf GELU, final layernorm; the DINO
//   embedding is last_hidden_state[:, 0].
// Inputs are normalised pixel values at the config's image_size (position
// embeddings are not interpolated: other sizes are an error).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "adapters/layers.h"
#include "models/clip_text.h"

namespace hra {

struct VisionConfig {
    int64_t image_size = 224, patch_size = 16, num_channels = 3;
    int64_t hidden_size = 768, intermediate_size = 3072, num_hidden_layers = 12, num_attention_heads = 12;
    std::string hidden_act;  // quick_gelu (CLIP) or gelu (ViT)
    double layer_norm_eps = 1e-5;
    int64_t projection_dim = 512;  // CLIP
    bool qkv_bias = true;          // ViT
    int64_t tokens() const { return (image_size / patch_size) * (image_size / patch_size) + 1; }
};

// config.json of a CLIPVisionModel (model_type clip_vision_model) or a CLIPModel
// (its vision_config); transformers' defaults for absent keys.
VisionConfig parse_clip_vision_config(const std::string& json_text, const std::string& source);
// config.json of a ViTModel (model_type vit, DINO's checkpoints).
VisionConfig parse_vit_config(const std::string& json_text, const std::string& source);

struct VisionOutputs {
    torch::Tensor last_hidden_state;           // [B, tokens, D]
    torch::Tensor pooler_output;               // CLIP: post_layernorm(last_hidden_state[:, 0])
    torch::Tensor image_embeds;                // CLIP with projection; ViT: last_hidden_state[:, 0]
    std::vector<torch::Tensor> hidden_states;  // the encoder's input, then each layer's output
};

class ClipVisionModelImpl : public torch::nn::Module {
public:
    ClipVisionModelImpl(const VisionConfig& c, bool with_projection);
    VisionOutputs forward(const torch::Tensor& pixel_values);
    const VisionConfig& config() const { return c_; }
    torch::Tensor class_embedding;
    torch::nn::Conv2d patch_embedding{nullptr};
    torch::nn::Embedding position_embedding{nullptr};
    torch::nn::LayerNorm pre_layrnorm{nullptr}, post_layernorm{nullptr};
    torch::nn::ModuleList layers{nullptr};
    Linear visual_projection{nullptr};

private:
    VisionConfig c_;
};
TORCH_MODULE(ClipVisionModel);

class VitAttentionImpl : public torch::nn::Module {
public:
    explicit VitAttentionImpl(const VisionConfig& c);
    torch::Tensor forward(const torch::Tensor& x);
    Linear query{nullptr}, key{nullptr}, value{nullptr}, dense{nullptr};  // dense: attention.output.dense

private:
    int64_t heads_, head_dim_;
};
TORCH_MODULE(VitAttention);

class VitLayerImpl : public torch::nn::Module {
public:
    explicit VitLayerImpl(const VisionConfig& c);
    torch::Tensor forward(const torch::Tensor& x);
    VitAttention attention{nullptr};
    Linear intermediate{nullptr}, output{nullptr};
    torch::nn::LayerNorm layernorm_before{nullptr}, layernorm_after{nullptr};
};
TORCH_MODULE(VitLayer);

class VitModelImpl : public torch::nn::Module {
public:
    explicit VitModelImpl(const VisionConfig& c);
    VisionOutputs forward(const torch::Tensor& pixel_values);
    const VisionConfig& config() const { return c_; }
    torch::Tensor cls_token, position_embeddings;
    torch::nn::Conv2d projection{nullptr};
    torch::nn::ModuleList layers{nullptr};
    torch::nn::LayerNorm layernorm{nullptr};

private:
    VisionConfig c_;
};
TORCH_MODULE(VitModel);

// Strict loading from a folder (config.json + safetensors or .bin): missing,
// unexpected or mis-shaped tensors are one error naming them. A CLIPModel
// checkpoint loads its vision half (text tower and logit_scale ignored); a
// position_ids buffer and a ViT pooler are ignored. The CLIP projection is
// loaded when the file has visual_projection.weight.
ClipVisionModel load_clip_vision(const std::string& dir, c10::ScalarType dtype = c10::ScalarType::Float);
VitModel load_vit(const std::string& dir, c10::ScalarType dtype = c10::ScalarType::Float);

}  // namespace hra
