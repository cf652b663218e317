// diffusers' AutoencoderKL (the Stable Diffusion VAE): Encoder, diagonal
// Gaussian latent distribution, Decoder, as diffusers v0.25 computes them
// (../shared/fixtures/sd-vae-tiny/README.md): GroupNorm eps 1e-6, resnets
// without time embedding, a one-head mid-block attention whose softmax runs in
// float32 (diffusers' upcast_softmax), downsampling by a right/bottom zero pad
// and a stride-2 conv, nearest x2 upsampling. Module names are diffusers'
// state-dict names; convolutions are hra::Conv2d and the attention projections
// hra::Linear, so adapters can target them.
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

struct VaeConfig {
    int64_t in_channels = 3, out_channels = 3, latent_channels = 4;
    std::vector<int64_t> block_out_channels = {64};
    int64_t layers_per_block = 1;
    int64_t norm_num_groups = 32;
    double scaling_factor = 0.18215;  // SD pipelines: latents × this after encode, ÷ before decode
};
// A lower estimate of the parameter count (its largest matrices), checked against a budget on parsing.
double parameters_at_least(const VaeConfig& c);

// config.json of an AutoencoderKL (down blocks DownEncoderBlock2D, up blocks
// UpDecoderBlock2D, act silu); anything else is an error naming the key.
VaeConfig parse_vae_config(const std::string& json_text, const std::string& source);
// The config.json diffusers would write for `c` (parse_vae_config reads it back).
std::string vae_config_json(const VaeConfig& c);

class VaeResnetImpl : public torch::nn::Module {
public:
    VaeResnetImpl(int64_t in, int64_t out, int64_t groups);
    torch::Tensor forward(const torch::Tensor& x);
    torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
    Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
};
TORCH_MODULE(VaeResnet);

// The mid-block self-attention over the H·W positions (one head of width C).
class VaeAttentionImpl : public torch::nn::Module {
public:
    VaeAttentionImpl(int64_t channels, int64_t groups);
    torch::Tensor forward(const torch::Tensor& x);
    torch::nn::GroupNorm group_norm{nullptr};
    Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};  // to_out is "to_out.0"
};
TORCH_MODULE(VaeAttention);

// resnet, attention, resnet.
class VaeMidBlockImpl : public torch::nn::Module {
public:
    VaeMidBlockImpl(int64_t channels, int64_t groups);
    torch::Tensor forward(const torch::Tensor& x);
    torch::nn::ModuleList resnets{nullptr}, attentions{nullptr};
};
TORCH_MODULE(VaeMidBlock);

// Resnets, then a downsampler (encoder) or an upsampler (decoder) unless last.
class VaeBlockImpl : public torch::nn::Module {
public:
    enum class Kind { Down, Up };
    VaeBlockImpl(Kind kind, int64_t in, int64_t out, int64_t resnets, int64_t groups, bool resample);
    torch::Tensor forward(const torch::Tensor& x);
    torch::nn::ModuleList resnets{nullptr};
    Conv2d resample_conv{nullptr};  // downsamplers.0.conv / upsamplers.0.conv

private:
    Kind kind_;
};
TORCH_MODULE(VaeBlock);

class VaeCoderImpl : public torch::nn::Module {
public:
    VaeCoderImpl(const VaeConfig& c, bool encoder);
    // Activations by name (conv_in, down_blocks.i / up_blocks.i, mid_block, conv_out) when `acts` is given.
    torch::Tensor forward(const torch::Tensor& x, std::map<std::string, torch::Tensor>* acts = nullptr);
    Conv2d conv_in{nullptr}, conv_out{nullptr};
    torch::nn::ModuleList blocks{nullptr};
    VaeMidBlock mid_block{nullptr};
    torch::nn::GroupNorm conv_norm_out{nullptr};

private:
    bool encoder_;
};
TORCH_MODULE(VaeCoder);

struct LatentDistribution {
    torch::Tensor mean, logvar, std;  // logvar clamped to [-30, 20]
    // mean + std·noise (noise standard normal, drawn by the caller's generator).
    torch::Tensor sample(const torch::Tensor& noise) const { return mean + std * noise; }
};

class AutoencoderKLImpl : public torch::nn::Module {
public:
    explicit AutoencoderKLImpl(const VaeConfig& c);
    // image [B, 3, H, W] in [-1, 1] (H, W multiples of 2^(levels−1)).
    LatentDistribution encode(const torch::Tensor& image, std::map<std::string, torch::Tensor>* acts = nullptr);
    // z [B, latent, h, w] (unscaled: divide SD latents by scaling_factor first).
    torch::Tensor decode(const torch::Tensor& z, std::map<std::string, torch::Tensor>* acts = nullptr);
    const VaeConfig& config() const { return c_; }
    VaeCoder encoder{nullptr}, decoder{nullptr};
    Conv2d quant_conv{nullptr}, post_quant_conv{nullptr};

private:
    VaeConfig c_;
};
TORCH_MODULE(AutoencoderKL);

struct LoadedVae {
    std::string dir;
    VaeConfig config;
    AutoencoderKL model{nullptr};
};

// A vae/ folder (config.json + weights) or a pipeline folder holding one.
// Strict; the attention names of older diffusers (query, key, value,
// proj_attn) are read as to_q, to_k, to_v, to_out.0.
LoadedVae load_vae(const std::string& dir, c10::ScalarType dtype = c10::ScalarType::Float,
                      const std::string& variant = "");

}  // namespace hra
