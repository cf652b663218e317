// Rotary position embeddings, rotate-half convention (Hugging Face's), with
// the default, linear and llama3 frequency rules. Computed in the dtype given
// (float32 reproduces transformers' numbers, float64 its float64 flavour).
#pragma once

#include <ATen/core/Tensor.h>

#include "models/llama_config.h"

namespace hra {

// inv_freq[i] = 1 / theta^(2i/head_dim), adjusted by the scaling rule.
at::Tensor rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& scaling, c10::ScalarType dtype);

// cos and sin for positions [..., T] (integers): [..., T, head_dim], the
// frequencies repeated as [f, f] (not interleaved), in inv_freq's dtype.
std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions);

// x·cos + rotate_half(x)·sin for x [B, H, T, D] and cos/sin [B, T, D] (or [T, D]).
at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace hra
