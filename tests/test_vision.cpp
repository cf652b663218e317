// The image towers beyond the parity fixtures (vision_parity): a whole CLIPModel
// checkpoint, a ViT with its pooler, strict loading and bad input.
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "models/vision.h"
#include "test_util.h"

using namespace hra;
using hra::test::error_of;

namespace {

std::string vision_fixture(const std::string& name) { return std::string(HRA_TEST_FIXTURES) + "/vision/" + name; }

io::NamedTensors tensors_of(const std::string& file) {
    auto f = io::SafetensorsFile::open(file);
    io::NamedTensors out;
    for (const auto& name : f.names()) out.emplace_back(name, f.tensor(name).clone());
    return out;
}

}  // namespace

// A CLIPModel folder (vision_config nested, text tower and logit_scale beside
// the vision weights) gives the same image embeddings as the vision-only folder.
TEST(Vision, WholeClipModelCheckpoint) {
    test::TempDir dir;
    const auto vision_cfg = nlohmann::json::parse(io::read_file(vision_fixture("clip-vision-tiny") + "/config.json"));
    // The towers' nested projection_dim (99 here) is not what CLIPModel uses: its top-level one is.
    auto nested = vision_cfg;
    nested["projection_dim"] = 99;
    nlohmann::json whole = {{"model_type", "clip"}, {"projection_dim", 24}, {"vision_config", nested},
                            {"text_config", {{"hidden_size", 16}, {"projection_dim", 99}}}};
    EXPECT_EQ(parse_clip_vision_config(whole.dump(), "whole.json").projection_dim, 24);
    EXPECT_EQ(parse_clip_text_config(whole.dump(), "whole.json").projection_dim, 24);
    io::write_file_atomically(dir / "config.json", whole.dump());
    auto tensors = tensors_of(vision_fixture("clip-vision-tiny") + "/model.safetensors");
    tensors.emplace_back("text_model.embeddings.token_embedding.weight", torch::zeros({10, 16}));
    tensors.emplace_back("text_projection.weight", torch::zeros({24, 16}));
    tensors.emplace_back("logit_scale", torch::tensor(2.6592));
    tensors.emplace_back("vision_model.embeddings.position_ids", torch::arange(17).unsqueeze(0));
    io::save_safetensors(dir / "model.safetensors", tensors);

    auto io = io::SafetensorsFile::open(vision_fixture("clip-vision-tiny") + "/io.safetensors");
    auto model = load_clip_vision(dir.path(), torch::kDouble);
    torch::NoGradGuard ng;
    auto out = model->forward(io.tensor("pixel_values"));
    EXPECT_LT(test::rel_err(out.image_embeds, io.tensor("image_embeds")), 1e-13);

    // Other image sizes are refused (no position interpolation), naming the sizes.
    const auto msg = error_of([&] { model->forward(torch::zeros({1, 3, 64, 64}, torch::kDouble)); });
    EXPECT_NE(msg.find("[batch, 3, 32, 32]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[1, 3, 64, 64]"), std::string::npos) << msg;
}

TEST(Vision, VitPoolerIgnoredAndStrictLoading) {
    test::TempDir dir;
    std::filesystem::copy_file(vision_fixture("vit-dino-tiny") + "/config.json", dir / "config.json");
    auto tensors = tensors_of(vision_fixture("vit-dino-tiny") + "/model.safetensors");
    tensors.emplace_back("pooler.dense.weight", torch::zeros({32, 32}));
    tensors.emplace_back("pooler.dense.bias", torch::zeros({32}));
    io::save_safetensors(dir / "model.safetensors", tensors);
    auto io = io::SafetensorsFile::open(vision_fixture("vit-dino-tiny") + "/io.safetensors");
    {
        auto model = load_vit(dir.path(), torch::kDouble);
        torch::NoGradGuard ng;
        EXPECT_LT(test::rel_err(model->forward(io.tensor("pixel_values")).image_embeds, io.tensor("cls")), 1e-13);
    }
    // A missing and a mis-shaped tensor: one error naming both.
    tensors.erase(tensors.begin() + 2, tensors.begin() + 4);
    const std::string dropped = tensors_of(vision_fixture("vit-dino-tiny") + "/model.safetensors")[2].first;
    tensors[0].second = torch::zeros({3});
    io::save_safetensors(dir / "model.safetensors", tensors);
    const std::string msg = error_of([&] { load_vit(dir.path()); });
    EXPECT_NE(msg.find(dropped), std::string::npos) << msg;
    EXPECT_NE(msg.find(tensors[0].first), std::string::npos) << msg;
}

TEST(Vision, ConfigErrorsNameTheKey) {
    auto err = [](const std::string& text, bool vit) {
        return error_of([&] { vit ? parse_vit_config(text, "c.json") : parse_clip_vision_config(text, "c.json"); });
    };
    EXPECT_NE(err(R"({"model_type": "clip_text_model"})", false).find("model_type"), std::string::npos);
    EXPECT_NE(err(R"({"model_type": "clip"})", false).find("vision_config"), std::string::npos);
    EXPECT_NE(err(R"({"model_type": "vit", "image_size": 30, "patch_size": 8})", true).find("patch_size"), std::string::npos);
    EXPECT_NE(err(R"({"model_type": "vit", "hidden_size": 30, "num_attention_heads": 4})", true).find("num_attention_heads"),
              std::string::npos);
    EXPECT_NE(err(R"({"model_type": "vit", "hidden_act": "relu"})", true).find("hidden_act"), std::string::npos);
    EXPECT_NE(err(R"({"model_type": "vit", "patch_size": 0})", true).find("patch_size"), std::string::npos);
    // Defaults are transformers': ViT-B/16 for vit, ViT-B/32 for CLIP.
    const auto vit = parse_vit_config(R"({"model_type": "vit"})", "c.json");
    EXPECT_EQ(vit.tokens(), 197);
    EXPECT_EQ(vit.layer_norm_eps, 1e-12);
    const auto clip = parse_clip_vision_config(R"({"model_type": "clip_vision_model"})", "c.json");
    EXPECT_EQ(clip.tokens(), 50);
    EXPECT_EQ(clip.hidden_act, "quick_gelu");
}
