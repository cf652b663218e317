// The VAE beyond the parity fixture (sd_parity): the SD 1.5 shape, older
// diffusers attention names, pipeline folders and bad input.
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/layers.h"
#include "common/error.h"
#include "io/safetensors.h"
#include "models/autoencoder_kl.h"
#include "models/model_weights.h"
#include "test_util.h"

using namespace hra;

// SD 1.5's vae/config.json values: 248 tensors, 83,653,863 parameters (DIFFUSION.md §1).
TEST(Vae, StableDiffusion15Shape) {
    VaeConfig c;
    c.block_out_channels = {128, 256, 512, 512};
    c.layers_per_block = 2;
    c.norm_num_groups = 32;
    SkipInitGuard skip;
    AutoencoderKL m(c);
    int64_t n = 0;
    const auto params = unique_named_parameters(*m);
    for (const auto& [name, p] : params) n += p.numel();
    EXPECT_EQ(params.size(), 248u);
    EXPECT_EQ(n, 83653863);
    EXPECT_LE(parameters_at_least(c), 83653863.0);  // the budget's lower estimate
    EXPECT_GE(parameters_at_least(c), 0.5 * 83653863.0);
    auto j = nlohmann::json::parse(vae_config_json(c));
    j["block_out_channels"] = {65536, 65536, 65536, 65536};
    j["norm_num_groups"] = 32;
    j["layers_per_block"] = 64;
    const auto e = hra::test::error_of([&] { parse_vae_config(j.dump(), "vae.json"); });
    EXPECT_NE(e.find("vae.json: these sizes make at least"), std::string::npos) << e;
    j["layers_per_block"] = 65;
    EXPECT_NE(hra::test::error_of([&] { parse_vae_config(j.dump(), "vae.json"); }).find("'layers_per_block': 65 is outside 1..64"),
              std::string::npos);
}

TEST(Vae, OlderAttentionNamesPipelineFoldersAndBadInput) {
    const std::string fixture = std::string(HRA_TEST_FIXTURES) + "/sd/sd-vae-tiny";
    test::TempDir dir;
    std::filesystem::create_directories(dir / "pipe/vae");
    std::filesystem::copy_file(fixture + "/config.json", dir / "pipe/vae/config.json");
    auto file = io::SafetensorsFile::open(fixture + "/model.safetensors");
    io::NamedTensors renamed;
    int old_names = 0;
    for (const auto& name : file.names()) {
        std::string n = name;
        for (auto [now, old] : {std::pair<const char*, const char*>{".to_q.", ".query."}, {".to_k.", ".key."},
                                {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}}) {
            const auto at = n.find(now);
            if (at != std::string::npos) n = n.substr(0, at) + old + n.substr(at + std::string(now).size()), ++old_names;
        }
        renamed.emplace_back(n, file.tensor(name).clone());
    }
    EXPECT_EQ(old_names, 16);  // 2 mid-block attentions × 4 projections × (weight, bias)
    io::save_safetensors(dir / "pipe/vae/diffusion_pytorch_model.safetensors", renamed);
    auto a = load_vae(fixture, torch::kDouble), b = load_vae(dir / "pipe", torch::kDouble);
    torch::NoGradGuard ng;
    auto z = torch::randn({1, 4, 8, 8}, torch::kDouble);
    EXPECT_TRUE(a.model->decode(z).equal(b.model->decode(z)));
    EXPECT_EQ(b.config.scaling_factor, 0.18215);

    auto error_of = [](const std::function<void()>& f) {
        try {
            f();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(error_of([&] { a.model->encode(torch::zeros({1, 3, 31, 32}, torch::kDouble)); }).find("multiples of 2"),
              std::string::npos);
    EXPECT_NE(error_of([&] { a.model->decode(torch::zeros({1, 3, 8, 8}, torch::kDouble)); }).find("decodes [B, 4"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_vae_config(R"({"up_block_types": ["UpBlock2D"], "block_out_channels": [32]})", "c.json"); })
                  .find("up_block_types"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_vae_config(R"({"block_out_channels": [30], "norm_num_groups": 8})", "c.json"); })
                  .find("block_out_channels"),
              std::string::npos);
}
