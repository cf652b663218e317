#include "eval/subject.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "common/error.h"
#include "io/json_file.h"

namespace hra::eval {

namespace fs = std::filesystem;

SubjectScorer::SubjectScorer(const std::string& dino, const std::string& clip, const std::string& lpips_vgg,
                             const std::string& lpips_lin, int64_t lpips_size, c10::ScalarType dtype)
    : dtype_(dtype) {
    dino_ = load_vit(dino, dtype);
    dino_proc_ = data::ImageProcessor::from_file(io::file_in_folder(dino, "preprocessor_config.json"));
    clip_vision_ = load_clip_vision(clip, dtype);
    clip_text_ = load_clip_text(clip, dtype);
    if (!clip_text_.config.with_projection) throw Error("CLIP-T needs the text projection (a whole CLIPModel folder)", {clip, "text_projection.weight"});
    tokenizer_ = fs::exists(fs::path(clip) / "vocab.json") ? ClipTokenizer::from_folder(clip) : ClipTokenizer::bundled();
    clip_proc_ = data::ImageProcessor::from_file(io::file_in_folder(clip, "preprocessor_config.json"));
    lpips_ = models::Lpips::load(lpips_vgg, lpips_lin, dtype);
    lpips_proc_ = data::ImageProcessor::lpips(lpips_size);
}

namespace {

torch::Tensor batch_of(const std::vector<torch::Tensor>& images, const data::ImageProcessor& proc, c10::ScalarType dtype) {
    std::vector<torch::Tensor> xs;
    for (const auto& img : images) xs.push_back(proc(img));
    return torch::stack(xs).to(dtype);
}

torch::Tensor unit(const torch::Tensor& x) { return x / x.norm(2, -1, true); }

}  // namespace

torch::Tensor SubjectScorer::dino_embeddings(const std::vector<torch::Tensor>& images) {
    torch::NoGradGuard ng;
    return unit(dino_->forward(batch_of(images, dino_proc_, dtype_)).image_embeds);
}

torch::Tensor SubjectScorer::clip_image_embeddings(const std::vector<torch::Tensor>& images) {
    torch::NoGradGuard ng;
    return unit(clip_vision_->forward(batch_of(images, clip_proc_, dtype_)).image_embeds);
}

torch::Tensor SubjectScorer::clip_text_embedding(const std::string& prompt) {
    torch::NoGradGuard ng;
    const auto ids = tokenizer_->encode(prompt);  // unpadded, as the seed's tokenizer([prompt], padding=True)
    if (static_cast<int64_t>(ids.size()) > clip_text_.config.max_position_embeddings)
        throw Error("the prompt has " + std::to_string(ids.size()) + " tokens; CLIP takes " +
                    std::to_string(clip_text_.config.max_position_embeddings));
    auto t = torch::tensor(ids, torch::kLong).unsqueeze(0);
    return unit(clip_text_.model->forward(t).text_embeds);
}

SubjectMetrics SubjectScorer::score(const std::vector<torch::Tensor>& real_in, const std::vector<torch::Tensor>& gen_in,
                                    const std::string& prompt) {
    SubjectMetrics m;
    std::vector<torch::Tensor> real, gen;
    for (const auto& r : real_in) (data::all_black(r) ? m.skipped : (real.push_back(r), m.real))++;
    for (const auto& g : gen_in) (data::all_black(g) ? m.skipped : (gen.push_back(g), m.generated))++;
    if (real.empty() || gen.empty()) return m;  // the seed's guards: an epoch without pairs scores 0
    m.dino = torch::mm(dino_embeddings(real), dino_embeddings(gen).t()).mean().item<double>();
    const auto gi = clip_image_embeddings(gen);
    m.clip_i = torch::mm(clip_image_embeddings(real), gi.t()).mean().item<double>();
    m.clip_t = torch::mm(gi, clip_text_embedding(prompt).t()).mean().item<double>();
    // LPIPS over every pair: each image's features once, then paired.
    torch::NoGradGuard ng;
    const auto ur = lpips_.unit_features(batch_of(real, lpips_proc_, dtype_));
    const auto ug = lpips_.unit_features(batch_of(gen, lpips_proc_, dtype_));
    double sum = 0;
    for (int64_t i = 0; i < ur[0].size(0); ++i) {
        std::vector<torch::Tensor> one;
        for (const auto& f : ur) one.push_back(f.narrow(0, i, 1).expand_as(ug[one.size()]));
        for (const auto& t : lpips_.terms(one, ug)) sum += t.sum().item<double>();
    }
    m.lpips = sum / static_cast<double>(real.size() * gen.size());
    return m;
}

size_t seed_epoch_choice(const std::vector<SubjectMetrics>& per_epoch) {
    if (per_epoch.empty()) throw Error("no epochs to choose from");
    std::vector<double> total(per_epoch.size(), 0.0);
    for (double SubjectMetrics::*metric : {&SubjectMetrics::dino, &SubjectMetrics::clip_i, &SubjectMetrics::clip_t, &SubjectMetrics::lpips}) {
        std::vector<double> v;
        for (const auto& e : per_epoch) v.push_back(std::isnan(e.*metric) ? 0.0 : e.*metric);
        const double range = *std::max_element(v.begin(), v.end()) - *std::min_element(v.begin(), v.end());
        if (range == 0) continue;
        for (size_t i = 0; i < v.size(); ++i) total[i] += v[i] / range;
    }
    return static_cast<size_t>(std::max_element(total.begin(), total.end()) - total.begin());
}

}  // namespace hra::eval
