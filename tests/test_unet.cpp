// The UNet beyond the parity fixtures (sd_parity): the SD 1.5 and SD 2.1
// shapes, the input-residual hook, chunked attention, bad configs and input.
#include <functional>
#include <tuple>
#include <limits>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/layers.h"
#include "adapters/peft_model.h"
#include "common/error.h"
#include "common/torch_compat.h"
#include "models/model_weights.h"
#include "models/unet_2d_condition.h"
#include "test_sd15.h"
#include "test_util.h"

using namespace hra;

namespace {

using hra::test::error_of;

std::pair<size_t, int64_t> count(const UNetConfig& c) {
    SkipInitGuard skip;  // allocated once, never initialised
    UNet2DConditionModel m(c);
    int64_t n = 0;
    const auto params = unique_named_parameters(*m);
    for (const auto& [name, p] : params) n += p.numel();
    return {params.size(), n};
}


}  // namespace

// SD 1.5's and SD 2.1's unet/config.json; counts from diffusers v0.25.1's
// UNet2DConditionModel built from the same configs (DIFFUSION.md §1 for 1.5).
TEST(UNet, StableDiffusion15And21Shapes) {
    const std::string sd15 = test::kSd15UnetConfig;
    auto c = parse_unet_config(sd15, "sd15.json");
    EXPECT_EQ(c.heads, (std::vector<int64_t>{8, 8, 8, 8}));
    EXPECT_EQ(count(c), (std::pair<size_t, int64_t>{686, 859520964}));
    nlohmann::json j = nlohmann::json::parse(sd15);
    j["attention_head_dim"] = {5, 10, 20, 20};
    j["cross_attention_dim"] = 1024;
    j["use_linear_projection"] = true;
    j["upcast_attention"] = true;
    j["sample_size"] = 96;
    c = parse_unet_config(j.dump(), "sd21.json");
    EXPECT_EQ(c.heads, (std::vector<int64_t>{5, 10, 20, 20}));
    EXPECT_EQ(count(c), (std::pair<size_t, int64_t>{686, 865910724}));
}

// DIFFUSION.md §3, the seed's subject placement: adapters on to_q, to_k, to_v
// and to_out.0 of all 32 attention processors of SD 1.5 (the dreambooth task's
// default targets) make 128 layers. Worked by hand: each of the 16 transformer
// blocks of width d (5 of 320, 5 of 640, 6 of 1280) has attn1 4d inputs and attn2
// 2d + 2·768, so Σ(6d + 1536) = 99,456 inputs; HRA holds r per input.
TEST(UNet, SubjectPlacementCountsOnSd15) {
    for (int64_t r : {8, 7}) EXPECT_EQ(test::hra_on_sd15({"to_q", "to_k", "to_v", "to_out.0"}, r), (std::pair<size_t, int64_t>{128, 99456 * r}));
}

UNetConfig tiny_config() {
    UNetConfig c;
    c.block_out_channels = {8, 16};
    c.down_cross = {true, false};
    c.up_cross = {false, true};
    c.heads = {2, 2};
    c.transformer_layers = {1, 1};
    c.norm_num_groups = 4;
    c.cross_attention_dim = 12;
    c.layers_per_block = 1;
    c.sample_size = 8;
    return c;
}

// A per-channel constant residual after conv_in is the same as adding it to
// conv_in's bias; a zero residual changes nothing.
TEST(UNet, InputResidualAfterConvIn) {
    torch::manual_seed(0);
    UNet2DConditionModel m(tiny_config());
    m->to(torch::kDouble);
    m->eval();
    torch::NoGradGuard ng;
    auto x = torch::randn({2, 4, 8, 8}, torch::kDouble), ctx = torch::randn({2, 3, 12}, torch::kDouble);
    auto t = torch::tensor({7, 700});
    auto base = m->forward(x, t, ctx);
    EXPECT_TRUE(m->forward(x, t, ctx, torch::zeros({2, 8, 8, 8}, torch::kDouble)).equal(base));
    auto shift = torch::randn({8}, torch::kDouble);
    auto with_residual = m->forward(x, t, ctx, shift.view({1, 8, 1, 1}).expand({2, 8, 8, 8}));
    m->conv_in->bias.add_(shift);
    auto with_bias = m->forward(x, t, ctx);
    EXPECT_LT(test::rel_err(with_residual, with_bias), 1e-14);
    EXPECT_GT(test::rel_err(with_residual, base), 1e-3);
    EXPECT_NE(error_of([&] { m->forward(x, t, ctx, torch::zeros({2, 8, 4, 4}, torch::kDouble)); }).find("input residual"),
              std::string::npos);
}

// Chunked attention computes the same numbers as the whole score matrix.
TEST(UNet, ChunkedAttentionMatches) {
    torch::manual_seed(1);
    UNet2DConditionModel m(tiny_config());
    m->to(torch::kDouble);
    m->eval();
    torch::NoGradGuard ng;
    auto x = torch::randn({1, 4, 8, 8}, torch::kDouble), ctx = torch::randn({1, 5, 12}, torch::kDouble);
    auto t = torch::tensor(500);
    auto whole = m->forward(x, t, ctx);
    m->set_attention_chunk(7);  // 64 and 16 positions: uneven chunks
    EXPECT_LT(test::rel_err(m->forward(x, t, ctx), whole), 1e-14);
}

TEST(UNet, BadConfigAndInput) {
    auto bad = [](const std::string& extra) {
        return error_of([&] {
            parse_unet_config(R"({"block_out_channels": [32, 64], "norm_num_groups": 8,
                "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"])" +
                                  extra + "}",
                              "unet/config.json");
        });
    };
    EXPECT_EQ(bad(""), "");
    EXPECT_NE(bad(R"(, "class_embed_type": "timestep")").find("class_embed_type"), std::string::npos);
    EXPECT_NE(bad(R"(, "addition_embed_type": "text_time")").find("addition_embed_type"), std::string::npos);
    EXPECT_NE(bad(R"(, "resnet_time_scale_shift": "scale_shift")").find("resnet_time_scale_shift"), std::string::npos);
    EXPECT_NE(bad(R"(, "attention_head_dim": 5)").find("do not split into 5 heads"), std::string::npos);
    EXPECT_NE(bad(R"(, "attention_head_dim": [8, 8, 8])").find("one entry per block"), std::string::npos);
    EXPECT_NE(bad(R"(, "mid_block_type": "UNetMidBlock2DSimpleCrossAttn")").find("mid_block_type"), std::string::npos);
    EXPECT_NE(bad(R"(, "cross_attention_dim": [32, 64])").find("cross_attention_dim"), std::string::npos);
    EXPECT_NE(error_of([] { parse_unet_config(R"({"down_block_types": ["SimpleCrossAttnDownBlock2D"], "block_out_channels": [32]})", "c.json"); })
                  .find("SimpleCrossAttnDownBlock2D"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_unet_config(R"({"block_out_channels": [30, 60], "norm_num_groups": 8})", "c.json"); })
                  .find("block_out_channels"),
              std::string::npos);

    UNet2DConditionModel m(tiny_config());
    torch::NoGradGuard ng;
    auto ctx = torch::randn({1, 3, 12});
    EXPECT_NE(error_of([&] { m->forward(torch::randn({1, 3, 8, 8}), torch::tensor(1), ctx); }).find("denoises [B, 4"),
              std::string::npos);
    EXPECT_NE(error_of([&] { m->forward(torch::randn({1, 4, 8, 8}), torch::tensor(1), torch::randn({1, 3, 10})); })
                  .find("context must be [1, tokens, 12]"),
              std::string::npos);
    EXPECT_NE(error_of([&] { m->forward(torch::randn({1, 4, 8, 8}), torch::tensor({1, 2, 3}), ctx); }).find("one timestep"),
              std::string::npos);
}

// Attention scores are scale·q·kᵀ with no trace of whatever the result's memory
// held before (libtorch 1.13's small baddbmm with beta 0 reads it: NaN at random).
TEST(UNet, ScaledScoresIgnoreStaleMemory) {
    using hra::compat::scaled_bmm;
    torch::manual_seed(3);
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (int64_t rows : {1, 3, 7, 16}) {
        auto q = torch::randn({4, rows, 5}, torch::kDouble), k = torch::randn({4, 5, 9}, torch::kDouble);
        const auto want = torch::bmm(q, k) * 0.25;
        for (int i = 0; i < 20; ++i) {
            { auto stale = torch::full({4, rows, 9}, nan, torch::kDouble); }  // freed: the next block of this size reuses it
            EXPECT_LT(test::max_abs_diff(scaled_bmm(q, k, 0.25), want), 1e-15) << rows;
        }
    }
}

// The parameter budget checked on parsing uses a lower estimate: at most the real count
// (diffusers' 859,520,964 for SD 1.5), and close enough to mean something.
TEST(UNet, ParameterEstimateAndAbsurdConfigs) {
    const auto sd15 = parse_unet_config(test::kSd15UnetConfig, "sd15.json");
    EXPECT_LE(parameters_at_least(sd15), 859520964.0);
    EXPECT_GE(parameters_at_least(sd15), 0.5 * 859520964.0);
    const auto tiny = tiny_config();  // cross-attention down in block 0, up in block 1
    EXPECT_LE(parameters_at_least(tiny), static_cast<double>(count(tiny).second));
    {
        // Down blocks hold layers_per_block transformers, up blocks one more: counted per
        // direction, this one-block config (about 6.4e11 weights) is under the budget.
        auto j = nlohmann::json::parse(test::kSd15UnetConfig);
        j["block_out_channels"] = {1024};
        j["down_block_types"] = {"CrossAttnDownBlock2D"};
        j["up_block_types"] = {"UpBlock2D"};
        j["attention_head_dim"] = 8;
        j["layers_per_block"] = 64;
        j["transformer_layers_per_block"] = 64;
        j["cross_attention_dim"] = 65536;
        j["mid_block_type"] = nullptr;
        EXPECT_NO_THROW(parse_unet_config(j.dump(), "one-block.json"));
    }
    for (const auto& [key, value, fragment] : std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
             {"block_out_channels", {320, 640, 1280, 1000000000}, "'block_out_channels': 1000000000 is outside 1..65536"},
             {"layers_per_block", 100000, "'layers_per_block': 100000 is outside 1..64"},
             {"cross_attention_dim", 1e12, "'cross_attention_dim': 1000000000000 is outside"},
             {"sample_size", -3, "'sample_size'"},
             // Each size within its bound, their products not: 64 layers of 65,536 channels.
             {"block_out_channels", {65536, 65536, 65536, 65536}, "beyond any model (at most 2^40"},
         }) {
        auto j = nlohmann::json::parse(test::kSd15UnetConfig);
        j[key] = value;
        if (key == "block_out_channels" && value[3] == 65536) j["layers_per_block"] = 64;
        const auto e = error_of([&] { parse_unet_config(j.dump(), "unet.json"); });
        EXPECT_NE(e.find("unet.json"), std::string::npos) << e;
        EXPECT_NE(e.find(fragment), std::string::npos) << key << ": " << e;
    }
}
