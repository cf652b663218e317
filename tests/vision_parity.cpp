// Image-tower parity against transformers v4.36.2: every subfolder of
// $HRA_VISION_FIXTURES (default: the repo's tests/fixtures/vision) is recognised
// by the `model_class` of its io.safetensors metadata and every stored tensor is
// compared, in float64 (1e-13 relative; the fixtures allow 1e-10, measured 0)
// and float32 (1e-5; they allow 1e-4, measured 4e-7). A folder this program
// cannot recognise, a stored tensor it does not compare and finding no folder
// are failures.
//
// Recognised: CLIPVisionModelWithProjection (image_embeds, their normalised
// form and cosine matrix: CLIP-I) and ViTModel(add_pooling_layer=False) (the
// class token and its cosine matrix: DINO).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "io/safetensors.h"
#include "models/vision.h"
#include "test_util.h"

namespace {

using hra::io::SafetensorsFile;

torch::Tensor cosine_matrix(const torch::Tensor& e) {
    auto n = e / e.norm(2, -1, true);
    return torch::matmul(n, n.transpose(0, 1));
}

// Every stored tensor but pixel_values against `ours`, each at `tol`.
void compare(const SafetensorsFile& io, const std::map<std::string, torch::Tensor>& ours, const std::string& tag, double tol,
             hra::test::ParityReport& rep) {
    for (const auto& name : io.names()) {
        if (name == "pixel_values") continue;
        auto it = ours.find(name);
        if (it == ours.end() || !it->second.defined()) {
            rep.check(tag + "unchecked tensor " + name, 1.0, 0);
            continue;
        }
        auto ref = io.tensor(name);
        rep.check(tag + name, it->second.sizes() == ref.sizes() ? hra::test::rel_err(it->second, ref) : 1.0, tol);
    }
}

std::map<std::string, torch::Tensor> outputs(const hra::VisionOutputs& out) {
    std::map<std::string, torch::Tensor> m;
    m["last_hidden_state"] = out.last_hidden_state;
    for (size_t i = 0; i < out.hidden_states.size(); ++i) m["hidden_states." + std::to_string(i)] = out.hidden_states[i];
    return m;
}

void check_clip(const std::string& dir, const SafetensorsFile& io, c10::ScalarType dtype, double tol, hra::test::ParityReport& rep) {
    const std::string tag = std::string(dtype == torch::kDouble ? "float64 " : "float32 ") + "CLIP vision ";
    auto model = hra::load_clip_vision(dir, dtype);
    torch::NoGradGuard ng;
    auto out = model->forward(io.tensor("pixel_values").to(dtype));
    auto ours = outputs(out);
    ours["pooler_output"] = out.pooler_output;
    ours["image_embeds"] = out.image_embeds;
    if (out.image_embeds.defined()) {
        ours["image_embeds_normalized"] = out.image_embeds / out.image_embeds.norm(2, -1, true);
        ours["cosine_similarity"] = cosine_matrix(out.image_embeds);
    }
    compare(io, ours, tag, tol, rep);
}

void check_vit(const std::string& dir, const SafetensorsFile& io, c10::ScalarType dtype, double tol, hra::test::ParityReport& rep) {
    const std::string tag = std::string(dtype == torch::kDouble ? "float64 " : "float32 ") + "ViT (DINO) ";
    auto model = hra::load_vit(dir, dtype);
    torch::NoGradGuard ng;
    auto out = model->forward(io.tensor("pixel_values").to(dtype));
    auto ours = outputs(out);
    ours["cls"] = out.image_embeds;
    ours["cosine_similarity"] = cosine_matrix(out.image_embeds);
    compare(io, ours, tag, tol, rep);
}

}  // namespace

int main() {
    try {
        hra::test::ParityReport rep;
        rep.width = 44;
        const auto dirs = hra::test::parity_folders("HRA_VISION_FIXTURES", "vision", 2, rep);  // clip-vision-tiny, vit-dino-tiny
        for (const auto& dir : dirs) {
            const auto io = SafetensorsFile::open((std::filesystem::path(dir) / "io.safetensors").string());
            const auto& meta = io.metadata();
            const std::string cls = meta.count("model_class") ? meta.at("model_class") : "";
            std::printf("%s: %s\n", dir.c_str(), cls.c_str());
            if (cls == "CLIPVisionModelWithProjection") {
                check_clip(dir, io, torch::kDouble, 1e-13, rep);
                check_clip(dir, io, torch::kFloat, 1e-5, rep);
            } else if (cls == "ViTModel(add_pooling_layer=False)") {
                check_vit(dir, io, torch::kDouble, 1e-13, rep);
                check_vit(dir, io, torch::kFloat, 1e-5, rep);
            } else {
                rep.check("not recognised: '" + cls + "'", 1.0, 0);
            }
        }
        return hra::test::parity_exit(rep, dirs.size());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
