// Images for the diffusion tasks and the subject metrics: decoding (PNG, JPEG),
// Pillow-exact resizing, crops, and the preprocessing of transformers' image
// processors read from preprocessor_config.json.
//
// Hand-written: no Debian package resamples as Pillow does (OpenCV's INTER_AREA
// and libtorch's antialiased interpolate differ from it by several levels), and
// the metrics of DIFFUSION.md §3 are defined on Pillow's pixels.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>
#include <torch/types.h>

namespace hra::data {

// Pillow's resampling filters under their integer codes (the `resample` of preprocessor_config.json).
enum class Resample : int { Nearest = 0, Lanczos = 1, Bilinear = 2, Bicubic = 3, Box = 4, Hamming = 5 };
Resample resample_from_code(int64_t code);
const char* resample_name(Resample r);

// Any PNG or JPEG (told by its first bytes) as uint8 [H, W, 3], converted as
// Pillow's Image.convert("RGB") does (grey replicated, alpha dropped).
torch::Tensor load_rgb(const std::string& path);
torch::Tensor to_rgb(const torch::Tensor& hwc);

// uint8 [H, W, C] → uint8 [height, width, C], equal to Pillow's Image.resize((width,
// height), resample) (Pillow ≥ 7 without reducing_gap): separable convolution with
// the filter stretched by the scale when shrinking, 22-bit fixed-point weights,
// horizontal pass then vertical, each rounded and clipped to uint8.
torch::Tensor resize(const torch::Tensor& hwc, int64_t width, int64_t height, Resample resample);
// The shorter side becomes `edge`, the longer int(edge · long / short), as
// transformers' shortest_edge and torchvision's Resize(int) compute it.
torch::Tensor resize_shortest_edge(const torch::Tensor& hwc, int64_t edge, Resample resample);
// transformers' center_crop: top = (H − height) // 2, left = (W − width) // 2;
// an image smaller than the crop is centred on zeros first.
torch::Tensor center_crop(const torch::Tensor& hwc, int64_t width, int64_t height);
// A uniformly placed crop (torchvision's RandomCrop); the image must be large enough.
torch::Tensor random_crop(const torch::Tensor& hwc, int64_t width, int64_t height, c10::optional<at::Generator> gen);
// True when every pixel is 0: the seed's evaluation skips such (safety-filtered) images.
bool all_black(const torch::Tensor& hwc);

// The preprocessing of transformers' CLIPImageProcessor / ViTImageProcessor (and
// their older *FeatureExtractor names), or of a torchvision Resize/ToTensor/Normalize chain.
struct ImageProcessor {
    enum class Size { ShortestEdge, Exact };
    bool do_resize = true;
    Size size_kind = Size::Exact;
    int64_t width = 224, height = 224;  // Exact
    int64_t shortest_edge = 224;        // ShortestEdge
    Resample resample = Resample::Bilinear;
    bool do_center_crop = false;
    int64_t crop_width = 224, crop_height = 224;
    bool do_rescale = true;
    double rescale_factor = 1.0 / 255.0;
    // transformers multiplies the uint8 values by rescale_factor in float64, then
    // casts to float32; torchvision's ToTensor divides by 255 in float32.
    bool torchvision_divide = false;
    bool do_normalize = true;
    std::array<float, 3> mean{0.5F, 0.5F, 0.5F}, std{0.5F, 0.5F, 0.5F};

    // preprocessor_config.json (its path names errors). The processor class
    // decides what an integer `size` means: CLIP's shortest edge, ViT's square.
    static ImageProcessor from_file(const std::string& path);
    static ImageProcessor from_json(const nlohmann::json& j, const std::string& origin);
    // LPIPS as the seed's evaluate.py feeds it: squash to size² (bilinear), [-1, 1].
    static ImageProcessor lpips(int64_t size = 512);

    // uint8 [H, W, 3] → float32 [3, h, w].
    torch::Tensor operator()(const torch::Tensor& hwc) const;
};

}  // namespace hra::data
