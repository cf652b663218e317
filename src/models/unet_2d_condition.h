// diffusers' UNet2DConditionModel, the Stable Diffusion 1.x / 2.x denoiser, as
// diffusers v0.25 computes it (../shared/fixtures/sd-unet-tiny/README.md,
// ../shared/docs/DIFFUSION.md §1): sinusoidal timestep embedding in float32,
// resnets with a time-embedding projection, Transformer2D blocks (GroupNorm
// eps 1e-6, 1×1-conv or Linear proj_in/proj_out, self- and cross-attention,
// GEGLU feed-forward), cross-attention down/up blocks with skip connections.
// Module names are diffusers' state-dict names; every convolution is an
// hra::Conv2d and every projection an hra::Linear, so adapters can target any
// of them. Two additions diffusers lacks: an input residual added right after
// conv_in (the control experiments' hint enters there), and query-chunked
// attention so that a 512×512 image never holds all attention probabilities.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "adapters/layers.h"

namespace hra {

struct UNetConfig {
    int64_t in_channels = 4, out_channels = 4, sample_size = 64;
    std::vector<int64_t> block_out_channels = {320, 640, 1280, 1280};
    // true: CrossAttnDownBlock2D / CrossAttnUpBlock2D; false: DownBlock2D / UpBlock2D.
    std::vector<bool> down_cross = {true, true, true, false}, up_cross = {false, true, true, true};
    bool mid_block = true;  // UNetMidBlock2DCrossAttn (false: mid_block_type null)
    int64_t layers_per_block = 2;
    std::vector<int64_t> transformer_layers = {1, 1, 1, 1};  // per down block (up blocks reversed)
    int64_t norm_num_groups = 32;
    double norm_eps = 1e-5;
    int64_t cross_attention_dim = 768;
    // Heads per down block (up blocks reversed): diffusers' num_attention_heads,
    // or attention_head_dim when that is null (SD's naming quirk: 8 means 8 heads).
    std::vector<int64_t> heads = {8, 8, 8, 8};
    bool use_linear_projection = false, upcast_attention = false;
    bool flip_sin_to_cos = true, center_input_sample = false;
    double freq_shift = 0;
    int64_t downsample_padding = 1;
    double mid_block_scale_factor = 1;
    int64_t conv_in_kernel = 3, conv_out_kernel = 3;

    int64_t time_embed_dim() const { return 4 * block_out_channels.front(); }
};
// A lower estimate of the parameter count (its largest matrices), checked against a budget on parsing.
double parameters_at_least(const UNetConfig& c);

// A diffusers config.json of a UNet2DConditionModel. Settings this runtime does
// not implement (class or addition embeddings, other block types, ...) are an
// error naming the key, never silently ignored.
UNetConfig parse_unet_config(const std::string& json_text, const std::string& source);
// The config.json diffusers would write for `c` (parse_unet_config reads it back).
std::string unet_config_json(const UNetConfig& c);

// diffusers' Attention with its classic processor: q from x, k and v from the
// context (x itself for self-attention), heads split along channels,
// softmax(q kᵀ / √d) v, to_out.0. `upcast` computes the scores and softmax in
// float32 (diffusers' upcast_attention). With query_chunk > 0 the scores are
// formed for that many query rows at a time (same numbers, bounded memory).
class UNetAttentionImpl : public torch::nn::Module {
public:
    UNetAttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads, bool upcast);
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context = {});
    Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};  // to_out is "to_out.0"
    int64_t heads;
    bool upcast;
    int64_t query_chunk = 0;
};
TORCH_MODULE(UNetAttention);

// ff.net.0.proj (GEGLU: C → 8C, a · gelu(gate)) and ff.net.2 (4C → C).
class GegluFeedForwardImpl : public torch::nn::Module {
public:
    explicit GegluFeedForwardImpl(int64_t dim);
    torch::Tensor forward(const torch::Tensor& x);
    Linear proj{nullptr}, out{nullptr};
};
TORCH_MODULE(GegluFeedForward);

class BasicTransformerBlockImpl : public torch::nn::Module {
public:
    BasicTransformerBlockImpl(int64_t dim, int64_t context_dim, int64_t heads, bool upcast);
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);
    torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr}, norm3{nullptr};
    UNetAttention attn1{nullptr}, attn2{nullptr};
    GegluFeedForward ff{nullptr};
};
TORCH_MODULE(BasicTransformerBlock);

class Transformer2DImpl : public torch::nn::Module {
public:
    Transformer2DImpl(const UNetConfig& c, int64_t channels, int64_t heads, int64_t layers);
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& context);
    torch::nn::GroupNorm norm{nullptr};
    Conv2d proj_in_conv{nullptr}, proj_out_conv{nullptr};  // SD 1.x: 1×1 convolutions
    Linear proj_in_linear{nullptr}, proj_out_linear{nullptr};  // use_linear_projection (SD 2.x)
    torch::nn::ModuleList transformer_blocks{nullptr};
};
TORCH_MODULE(Transformer2D);

// ResnetBlock2D with the time embedding added after conv1.
class UNetResnetImpl : public torch::nn::Module {
public:
    UNetResnetImpl(int64_t in, int64_t out, int64_t temb, int64_t groups, double eps, double output_scale);
    torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& emb);
    torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
    Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
    Linear time_emb_proj{nullptr};
    double output_scale;
};
TORCH_MODULE(UNetResnet);

// One down block (resnets, attentions when cross, downsampler unless last) or
// up block (the same with an upsampler); mid block: resnet, attention, resnet.
class UNetBlockImpl : public torch::nn::Module {
public:
    enum class Kind { Down, Up, Mid };
    UNetBlockImpl(const UNetConfig& c, Kind kind, int64_t index);
    // Down: returns the output and appends one skip per layer (and per
    // downsampler) to `skips`. Up: consumes its skips from the back of `skips`;
    // `upsample_size` is the spatial size to upsample to (the next skip's).
    torch::Tensor forward(torch::Tensor h, const torch::Tensor& emb, const torch::Tensor& context,
                          std::vector<torch::Tensor>* skips, c10::IntArrayRef upsample_size = {});
    torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
    Conv2d resample_conv{nullptr};  // downsamplers.0.conv / upsamplers.0.conv
    int64_t layers() const { return static_cast<int64_t>(resnets->size()); }

private:
    Kind kind_;
    int64_t downsample_padding_ = 1;
};
TORCH_MODULE(UNetBlock);

class UNet2DConditionModelImpl : public torch::nn::Module {
public:
    explicit UNet2DConditionModelImpl(const UNetConfig& c);
    // sample [B, in, h, w], timestep [B] or [] (integer or float), context
    // [B, tokens, cross_attention_dim]. `input_residual`, when defined, is added
    // to conv_in's output before it becomes the first skip. `acts` collects
    // time_proj, time_embedding, conv_in, down_blocks.i, mid_block,
    // up_blocks.i, conv_norm_out.
    torch::Tensor forward(const torch::Tensor& sample, const torch::Tensor& timestep, const torch::Tensor& context,
                          const torch::Tensor& input_residual = {},
                          std::map<std::string, torch::Tensor>* acts = nullptr);
    // diffusers' Timesteps: [cos, sin] (or [sin, cos]) in float32, [B, boc0].
    torch::Tensor time_proj(const torch::Tensor& timestep) const;
    // Query rows per attention chunk in every attention (0: all at once).
    void set_attention_chunk(int64_t rows);
    const UNetConfig& config() const { return c_; }

    Conv2d conv_in{nullptr}, conv_out{nullptr};
    Linear time_linear_1{nullptr}, time_linear_2{nullptr};  // time_embedding.linear_{1,2}
    torch::nn::ModuleList down_blocks{nullptr}, up_blocks{nullptr};
    UNetBlock mid_block{nullptr};
    torch::nn::GroupNorm conv_norm_out{nullptr};

private:
    UNetConfig c_;
};
TORCH_MODULE(UNet2DConditionModel);

struct LoadedUNet {
    std::string dir;
    UNetConfig config;
    UNet2DConditionModel model{nullptr};
};

// A unet/ folder (config.json + weights) or a pipeline folder holding one; strict.
LoadedUNet load_unet(const std::string& dir, c10::ScalarType dtype = c10::ScalarType::Float,
                       const std::string& variant = "");

}  // namespace hra
