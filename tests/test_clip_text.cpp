// CLIP's text encoder beyond the parity fixture (sd_parity): the SD 1.5 shape,
// pipeline folders, strict loading and bad input.
#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/layers.h"
#include "common/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "models/clip_text.h"
#include "models/model_weights.h"
#include "test_util.h"

using namespace hra;

namespace {

std::string fixture_dir() { return std::string(HRA_TEST_FIXTURES) + "/sd/clip-text-tiny"; }

using hra::test::error_of;

}  // namespace

// SD 1.5's text_encoder/config.json values: 196 tensors, 123,060,480 parameters (DIFFUSION.md §1).
TEST(ClipText, StableDiffusion15Shape) {
    ClipTextConfig c;
    c.vocab_size = 49408;
    c.hidden_size = 768;
    c.intermediate_size = 3072;
    c.num_hidden_layers = 12;
    c.num_attention_heads = 12;
    c.max_position_embeddings = 77;
    SkipInitGuard skip;
    ClipTextModel m(c);
    int64_t n = 0;
    const auto params = unique_named_parameters(*m);
    for (const auto& [name, p] : params) n += p.numel();
    EXPECT_EQ(params.size(), 196u);
    EXPECT_EQ(n, 123060480);
    // The projection of CLIPTextModelWithProjection (CLIP-T) adds one bias-free matrix.
    c.with_projection = true;
    c.projection_dim = 768;
    ClipTextModel p(c);
    EXPECT_EQ(unique_named_parameters(*p).size(), 197u);
}

TEST(ClipText, PipelineFoldersStrictLoadingAndBadInput) {
    test::TempDir dir;
    std::filesystem::create_directories(dir / "pipe/text_encoder");
    std::filesystem::copy_file(fixture_dir() + "/config.json", dir / "pipe/text_encoder/config.json");
    auto weights = io::SafetensorsFile::open(fixture_dir() + "/model.safetensors");
    io::NamedTensors tensors;
    for (const auto& name : weights.names()) tensors.emplace_back(name, weights.tensor(name).clone());
    // Older transformers saved the position_ids buffer: accepted and ignored.
    tensors.emplace_back("text_model.embeddings.position_ids", torch::arange(77, torch::kLong).unsqueeze(0));
    io::save_safetensors(dir / "pipe/text_encoder/model.safetensors", tensors);
    auto loaded = load_clip_text(dir / "pipe", torch::kDouble);  // text_encoder/ found
    EXPECT_EQ(loaded.config.hidden_size, 32);
    EXPECT_FALSE(loaded.config.with_projection);
    torch::NoGradGuard ng;
    auto out = loaded.model->forward(torch::tensor({{97, 51, 98}}, torch::kLong));
    EXPECT_EQ(out.last_hidden_state.sizes(), (std::vector<int64_t>{1, 3, 32}));
    // Causal: the first position does not see the later tokens.
    auto other = loaded.model->forward(torch::tensor({{97, 12, 13}}, torch::kLong));
    EXPECT_TRUE(out.hidden_states.back().select(1, 0).equal(other.hidden_states.back().select(1, 0)));

    EXPECT_NE(error_of([&] { loaded.model->forward(torch::zeros({1, 78}, torch::kLong)); }).find("1..77 tokens"),
              std::string::npos);
    EXPECT_NE(error_of([&] { loaded.model->forward(torch::tensor({{99}}, torch::kLong)); }).find("outside the vocabulary"),
              std::string::npos);

    // A mis-shaped and an unexpected tensor: one error naming both, with the file.
    tensors[0].second = torch::zeros({3, 3});
    tensors.emplace_back("text_model.extra.weight", torch::zeros({2}));
    io::save_safetensors(dir / "pipe/text_encoder/model.safetensors", tensors);
    const std::string msg = error_of([&] { load_clip_text(dir / "pipe"); });
    EXPECT_NE(msg.find("text_model.extra.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find(tensors[0].first), std::string::npos) << msg;
    EXPECT_NE(msg.find(dir / "pipe/text_encoder"), std::string::npos) << msg;
    EXPECT_EQ(msg.find("missing keys"), std::string::npos) << msg;  // mis-shaped is not also missing

    // Config errors name the key.
    EXPECT_NE(error_of([] { parse_clip_text_config(R"({"model_type": "bert"})", "c.json"); }).find("model_type"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_clip_text_config(R"({"model_type": "clip_text_model", "hidden_size": 30, "num_attention_heads": 4})", "c.json"); })
                  .find("num_attention_heads"),
              std::string::npos);
    auto whole = parse_clip_text_config(R"({"model_type": "clip", "projection_dim": 768, "text_config": {"hidden_size": 64, "num_attention_heads": 2}})", "c.json");
    EXPECT_EQ(whole.hidden_size, 64);
    EXPECT_EQ(whole.projection_dim, 768);
}

// transformers accepts num_hidden_layers 0 (an empty CLIPEncoder): the output is
// the final layer norm of token plus position embeddings, worked out here by hand.
TEST(ClipText, NoLayersIsNormalisedEmbeddings) {
    auto c = parse_clip_text_config(R"({"model_type": "clip_text_model", "vocab_size": 50, "hidden_size": 8,
        "intermediate_size": 16, "num_hidden_layers": 0, "num_attention_heads": 2, "max_position_embeddings": 6})", "c.json");
    EXPECT_EQ(c.num_hidden_layers, 0);
    torch::manual_seed(4);
    ClipTextModel m(c);
    m->to(torch::kDouble);
    auto& t = *m->text_model;
    EXPECT_EQ(t.layers->size(), 0u);
    EXPECT_EQ(unique_named_parameters(*m).size(), 4u);  // two embeddings, the norm's weight and bias
    torch::NoGradGuard ng;
    {  // a norm that is not the identity
        t.final_layer_norm->weight.uniform_(0.5, 1.5);
        t.final_layer_norm->bias.uniform_(-1, 1);
    }
    const std::vector<int64_t> ids = {3, 17, 49, 0};
    auto out = m->forward(torch::tensor(ids, torch::kLong).unsqueeze(0));
    double worst = 0;
    for (int64_t p = 0; p < 4; ++p) {
        auto x = t.token_embedding->weight[ids[static_cast<size_t>(p)]] + t.position_embedding->weight[p];
        const double mean = x.mean().item<double>();
        const double var = (x - mean).pow(2).mean().item<double>();
        auto want = (x - mean) / std::sqrt(var + c.layer_norm_eps) * t.final_layer_norm->weight + t.final_layer_norm->bias;
        worst = std::max(worst, test::max_abs_diff(out.last_hidden_state[0][p], want));
    }
    EXPECT_LT(worst, 1e-13);
    EXPECT_NE(error_of([] {
                  parse_clip_text_config(R"({"model_type": "clip_text_model", "num_hidden_layers": -1})", "c.json");
              }).find("num_hidden_layers"),
              std::string::npos);
}
