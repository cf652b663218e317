// LPIPS (Zhang et al. 2018, "v0.1", VGG trunk): the perceptual distance of
// DreamBooth's evaluation, as richzhang/PerceptualSimilarity computes it.
//
//   x → (x − shift) / scale  (shift −.030 −.088 −.188, scale .458 .448 .450, float32 constants)
//   VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
//   each unit-normalised over channels: f / (‖f‖₂ + 1e-10)
//   d_k = spatial mean of lin_k((f0 − f1)²)  (lin_k: 1×1 conv, one output, no bias)
//   distance = d_0 + … + d_4
//
// Weights: the VGG16 trunk under torchvision's names (features.{i}.weight/bias;
// classifier.* ignored) and the lin layers under lpips' names
// (lin{k}.model.1.weight, [1, C, 1, 1]); safetensors or zip-format torch files.
// Channel widths come from the weights, so the tiny test trunk loads like the real one.
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

namespace hra::models {

class Lpips {
public:
    // Files (or folders) of the trunk and of the lin layers; hra::Error naming
    // the file and key when a tensor is missing or has the wrong shape.
    static Lpips load(const std::string& vgg_path, const std::string& lin_path, c10::ScalarType dtype = c10::ScalarType::Float);

    // in0, in1: [N, 3, H, W] in [-1, 1] (or [0, 1] with normalize = true, as
    // lpips' forward(normalize=True)). Returns the distances [N].
    torch::Tensor distance(const torch::Tensor& in0, const torch::Tensor& in1, bool normalize = false) const;
    // The five per-layer terms, each [N] (their sum is distance()).
    std::vector<torch::Tensor> layer_terms(const torch::Tensor& in0, const torch::Tensor& in1, bool normalize = false) const;
    // The five feature maps of the trunk for scaled input x (for tests).
    std::vector<torch::Tensor> features(const torch::Tensor& scaled) const;
    // The unit-normalised feature maps of images in [-1, 1]: computed once per
    // image, then paired with terms() (what distance() does in one call).
    std::vector<torch::Tensor> unit_features(const torch::Tensor& x, bool normalize = false) const;
    // The five per-layer terms [N] between two sets of unit_features of one shape.
    std::vector<torch::Tensor> terms(const std::vector<torch::Tensor>& u0, const std::vector<torch::Tensor>& u1) const;
    torch::Tensor scale_input(const torch::Tensor& x) const;

private:
    struct Conv {
        torch::Tensor weight, bias;
    };
    std::vector<std::vector<Conv>> blocks_;  // 5 blocks of 2, 2, 3, 3, 3 convolutions
    std::vector<torch::Tensor> lins_;        // [1, C_k, 1, 1]
    torch::Tensor shift_, scale_;            // [1, 3, 1, 1]
};

}  // namespace hra::models
