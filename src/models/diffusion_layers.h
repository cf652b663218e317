// Layer constructors shared by the diffusion models (UNet, VAE): diffusers'
// convolutions as adaptable hra::Conv2d and its GroupNorms.
#pragma once

#include <cstdint>

#include <torch/nn/modules/normalization.h>

#include "adapters/layers.h"

namespace hra {

// k×k convolution with a bias (square stride and padding).
inline Conv2d diffusion_conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t padding = 0) {
    Conv2dOptions o;
    o.in_channels = in;
    o.out_channels = out;
    o.kernel = {k, k};
    o.stride = {stride, stride};
    o.padding = {padding, padding};
    return Conv2d(o);
}

inline torch::nn::GroupNorm diffusion_group_norm(int64_t groups, int64_t channels, double eps) {
    return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps));
}

}  // namespace hra
