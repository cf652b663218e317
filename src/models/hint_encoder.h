// The control experiments' hint encoder (DIFFUSION.md §4): ldm's
// `input_hint_block` as the seed's ControlLDM holds it, without a ControlNet copy.
// Eight 3×3 convolutions, SiLU between them, three of stride 2 (so the hint is 8×
// the UNet input's size), the last zero-initialised: its output is added to the
// UNet right after conv_in (UNet2DConditionModel::forward's input_residual), so a
// fresh encoder leaves the base model's output unchanged.
//
// SD 1.5 widths 3→16→16→32(s2)→32→96(s2)→96→256(s2)→320: 1,086,480 parameters.
// State-dict names are ldm's, `input_hint_block.{0,2,...,14}.{weight,bias}`,
// so a seed checkpoint's `control_model.input_hint_block.*` tensors load as they are.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/pimpl.h>

namespace hra {

struct HintEncoderConfig {
    int64_t in_channels = 3;
    // The seven hidden widths; the convolutions into widths 3, 5 and 7 (1-based)
    // have stride 2, as ldm's.
    std::vector<int64_t> hidden = {16, 16, 32, 32, 96, 96, 256};
    int64_t out_channels = 320;  // the UNet's block_out_channels[0]
    // How many of those three convolutions have stride 2: 3 for a latent UNet
    // (the VAE's factor 8), 0 for a pixel-space one (the hint at the UNet's size).
    int64_t strided = 3;
};

class HintEncoderImpl : public torch::nn::Module {
public:
    explicit HintEncoderImpl(const HintEncoderConfig& config = {});
    // hint [B, in_channels, H, W] (the seed: RGB in [0, 1]) → [B, out, H/8, W/8]
    // (H/2^strided, W/2^strided).
    torch::Tensor forward(const torch::Tensor& hint);
    const HintEncoderConfig& config() const { return config_; }
    int64_t factor() const { return int64_t{1} << config_.strided; }

private:
    HintEncoderConfig config_;
    torch::nn::Sequential block_{nullptr};
};
TORCH_MODULE(HintEncoder);

// DIR/hint_encoder.safetensors (ldm's names) and DIR/hint_encoder.json (the
// config), written atomically; and read back, with errors naming the file.
void save_hint_encoder(const HintEncoder& encoder, const std::string& dir);
HintEncoder load_hint_encoder(const std::string& dir);

// The seed's adapter placement for control (tool_add_hra.py, DIFFUSION.md §4):
// every Linear under the attentions and GEGLU, i.e. q, k, v and out of both
// attentions and ff.net.0.proj (not ff.net.2, proj_in, proj_out).
inline std::vector<std::string> control_adapter_targets() { return {"to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj"}; }

}  // namespace hra
