#include "models/lpips.h"

#include <torch/torch.h>

#include "common/error.h"
#include "io/weights.h"

namespace hra::models {

namespace {

// torchvision's VGG16 ("D") feature indices of the convolutions, grouped by
// the relu1_2 … relu5_3 slices lpips cuts (a 2×2 max-pool opens blocks 2–5).
const std::vector<std::vector<int>> kConvIndices = {{0, 2}, {5, 7}, {10, 12, 14}, {17, 19, 21}, {24, 26, 28}};

}  // namespace

Lpips Lpips::load(const std::string& vgg_path, const std::string& lin_path, c10::ScalarType dtype) {
    const auto vgg = io::WeightStore::open(vgg_path);
    const auto lin = io::WeightStore::open(lin_path);
    Lpips m;
    int64_t in_ch = 3;
    for (const auto& block : kConvIndices) {
        std::vector<Conv> convs;
        for (int i : block) {
            const std::string w = "features." + std::to_string(i) + ".weight", b = "features." + std::to_string(i) + ".bias";
            auto weight = vgg.get(w);
            if (weight.dim() != 4 || weight.size(1) != in_ch || weight.size(2) != 3 || weight.size(3) != 3)
                throw Error("expected a [out, " + std::to_string(in_ch) + ", 3, 3] convolution, got " + c10::str(weight.sizes()),
                            {vgg_path, w});
            auto bias = vgg.get(b);
            if (bias.dim() != 1 || bias.size(0) != weight.size(0))
                throw Error("expected [" + std::to_string(weight.size(0)) + "], got " + c10::str(bias.sizes()), {vgg_path, b});
            in_ch = weight.size(0);
            convs.push_back({weight.to(dtype).contiguous(), bias.to(dtype).contiguous()});
        }
        m.blocks_.push_back(std::move(convs));
    }
    for (size_t k = 0; k < m.blocks_.size(); ++k) {
        const std::string key = "lin" + std::to_string(k) + ".model.1.weight";
        auto w = lin.get(key);
        const int64_t c = m.blocks_[k].back().weight.size(0);
        if (w.dim() != 4 || w.size(0) != 1 || w.size(1) != c || w.size(2) != 1 || w.size(3) != 1)
            throw Error("expected [1, " + std::to_string(c) + ", 1, 1], got " + c10::str(w.sizes()), {lin_path, key});
        m.lins_.push_back(w.to(dtype).contiguous());
    }
    // lpips makes these with torch.Tensor: float32 values, whatever dtype runs.
    m.shift_ = torch::tensor({-.030F, -.088F, -.188F}, torch::kFloat).to(dtype).view({1, 3, 1, 1});
    m.scale_ = torch::tensor({.458F, .448F, .450F}, torch::kFloat).to(dtype).view({1, 3, 1, 1});
    return m;
}

torch::Tensor Lpips::scale_input(const torch::Tensor& x) const {
    if (x.dim() != 4 || x.size(1) != 3) throw Error("LPIPS takes [N, 3, H, W] images, got " + c10::str(x.sizes()));
    return (x - shift_.to(x.device())) / scale_.to(x.device());
}

std::vector<torch::Tensor> Lpips::features(const torch::Tensor& scaled) const {
    std::vector<torch::Tensor> out;
    auto h = scaled;
    for (size_t b = 0; b < blocks_.size(); ++b) {
        if (b > 0) h = torch::max_pool2d(h, {2, 2}, {2, 2});
        for (const auto& c : blocks_[b]) h = torch::relu(torch::conv2d(h, c.weight.to(h.device()), c.bias.to(h.device()), 1, 1));
        out.push_back(h);
    }
    return out;
}

std::vector<torch::Tensor> Lpips::unit_features(const torch::Tensor& x, bool normalize) const {
    if (x.dim() == 4 && (x.size(2) < 16 || x.size(3) < 16))
        throw Error("LPIPS needs images of at least 16×16 pixels (four 2×2 poolings), got " + c10::str(x.sizes()));
    auto f = features(scale_input(normalize ? 2 * x - 1 : x));
    for (auto& t : f) t = t / (t.pow(2).sum(1, true).sqrt() + 1e-10);
    return f;
}

std::vector<torch::Tensor> Lpips::terms(const std::vector<torch::Tensor>& u0, const std::vector<torch::Tensor>& u1) const {
    std::vector<torch::Tensor> out;
    for (size_t k = 0; k < u0.size(); ++k) {
        auto d = (u0[k] - u1[k]).pow(2);
        out.push_back(torch::conv2d(d, lins_[k].to(d.device())).mean({2, 3}).view({-1}));
    }
    return out;
}

std::vector<torch::Tensor> Lpips::layer_terms(const torch::Tensor& in0, const torch::Tensor& in1, bool normalize) const {
    if (in0.sizes() != in1.sizes()) throw Error("LPIPS compares images of one size: " + c10::str(in0.sizes()) + " vs " + c10::str(in1.sizes()));
    return terms(unit_features(in0, normalize), unit_features(in1, normalize));
}

torch::Tensor Lpips::distance(const torch::Tensor& in0, const torch::Tensor& in1, bool normalize) const {
    const auto terms = layer_terms(in0, in1, normalize);
    auto total = torch::zeros_like(terms[0]);
    for (const auto& t : terms) total = total + t;
    return total;
}

}  // namespace hra::models
