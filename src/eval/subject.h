// Subject-driven generation metrics (DIFFUSION.md §3, the seed's evaluate.py
// and get_result.py): DINO, CLIP-I, CLIP-T and LPIPS of generated images
// against a subject's real photos, the epoch rule, and the prompt lists.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "data/image.h"
#include "models/clip_text.h"
#include "eval/dreambooth_prompts.h"
#include "models/lpips.h"
#include "models/vision.h"
#include "text/clip_tokenizer.h"

namespace hra::eval {

struct SubjectMetrics {
    double dino = 0, clip_i = 0, clip_t = 0, lpips = 0;
    int64_t real = 0, generated = 0;  // images used
    int64_t skipped = 0;              // all-black images left out (the seed's rule for safety-filtered outputs)
};

class SubjectScorer {
public:
    // dino: a ViT folder (facebook/dino-vits16); clip: a CLIPModel folder
    // (openai/clip-vit-large-patch14; image and text towers, tokenizer files or
    // the bundled CLIP vocabulary); lpips_vgg / lpips_lin: LPIPS' trunk and lin
    // weights. Preprocessing: each folder's preprocessor_config.json, LPIPS the
    // seed's (squash to `lpips_size`², bilinear, [-1, 1]).
    SubjectScorer(const std::string& dino, const std::string& clip, const std::string& lpips_vgg, const std::string& lpips_lin,
                  int64_t lpips_size = 512, c10::ScalarType dtype = c10::ScalarType::Float);

    // Means over real × generated pairs (DINO, CLIP-I, LPIPS) and over the
    // generated images (CLIP-T against `prompt`). uint8 [H, W, 3] images.
    SubjectMetrics score(const std::vector<torch::Tensor>& real, const std::vector<torch::Tensor>& generated, const std::string& prompt);

    // Unit-norm embeddings [N, D] (for tests and reuse).
    torch::Tensor dino_embeddings(const std::vector<torch::Tensor>& images);
    torch::Tensor clip_image_embeddings(const std::vector<torch::Tensor>& images);
    torch::Tensor clip_text_embedding(const std::string& prompt);

private:
    VitModel dino_{nullptr};
    data::ImageProcessor dino_proc_;
    ClipVisionModel clip_vision_{nullptr};
    LoadedClipText clip_text_;
    std::unique_ptr<ClipTokenizer> tokenizer_;
    data::ImageProcessor clip_proc_;
    models::Lpips lpips_;
    data::ImageProcessor lpips_proc_;
    c10::ScalarType dtype_;
};

// get_result.py's choice: per metric, the values over epochs (NaN as 0)
// divided by their range (max − min), summed over the four metrics (LPIPS as
// it is, so a larger distance counts as better); the first epoch with the
// largest sum. A metric whose range is 0 adds nothing (the seed divides by zero).
size_t seed_epoch_choice(const std::vector<SubjectMetrics>& per_epoch);

}  // namespace hra::eval
