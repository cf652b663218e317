#include "models/rope.h"

#include <cmath>

#include <ATen/ATen.h>

#include "common/error.h"

namespace hra {

at::Tensor rope_inv_freq(int64_t head_dim, double theta, const RopeScaling& s, c10::ScalarType dtype) {
    auto exponents = at::arange(0, head_dim, 2, at::TensorOptions().dtype(at::kLong)).to(dtype) / head_dim;
    auto inv_freq = 1.0 / at::pow(theta, exponents);
    if (s.type == "default") return inv_freq;
    if (s.type == "linear") return inv_freq / s.factor;
    if (s.type != "llama3") throw Error("unsupported rope scaling '" + s.type + "'");
    // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    auto wavelen = 2 * M_PI / inv_freq;
    auto scaled = at::where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq);
    auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    auto medium = (wavelen >= high_wavelen).logical_and(wavelen <= low_wavelen);
    return at::where(medium, smoothed, scaled);
}

std::pair<at::Tensor, at::Tensor> rope_cos_sin(const at::Tensor& inv_freq, const at::Tensor& positions) {
    auto freqs = positions.to(inv_freq.scalar_type()).unsqueeze(-1) * inv_freq;
    auto emb = at::cat({freqs, freqs}, -1);
    return {emb.cos(), emb.sin()};
}

at::Tensor apply_rope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    const int64_t half = x.size(-1) / 2;
    auto c = cos.dim() == 2 ? cos : cos.unsqueeze(1);  // broadcast over heads
    auto s = sin.dim() == 2 ? sin : sin.unsqueeze(1);
    auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
    return x * c + rotated * s;
}

}  // namespace hra
