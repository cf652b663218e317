// Stable Diffusion end to end beyond sd_parity: `hra sd generate` writes the
// reference pipeline's pixels as a PNG with its settings, weight variants,
// PNG round trips and bad input (sizes, schedulers, prompts, checkpoints).
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "adapters/peft_model.h"
#include "diffusion/pipeline.h"
#include "io/atomic_file.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "adapters/layers.h"
#include "models/model_weights.h"
#include "models/sd_checkpoint.h"
#include "models/unet_2d_condition.h"
#include "models/autoencoder_kl.h"
#include "test_util.h"

using namespace hra;
namespace fs = std::filesystem;

namespace {

const std::string kPipeline = std::string(HRA_TEST_FIXTURES) + "/sd/sd-pipeline-tiny";

using hra::test::error_of;

}  // namespace

// The fixture's "ddim" run from its seed: the CLI's PNG holds diffusers' uint8 image.
TEST(SdGenerate, CliWritesTheReferencePixels) {
    test::TempDir dir;
    const auto io = io::SafetensorsFile::open(kPipeline + "/io.safetensors");
    const auto runs = nlohmann::json::parse(io.metadata().at("runs"));
    const auto& r = runs.at("ddim");
    const std::string out = dir / "img.png";
    auto res = test::run_hra("sd generate --model " + kPipeline + " --prompt '" + r.at("prompt").get<std::string>() +
                                 "' --scheduler ddim --steps 3 --guidance 7.5 --seed 1 --dtype float64 --out " + out,
                             dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto png = io::read_png(out);
    EXPECT_TRUE(png.pixels.equal(io.tensor("ddim.image")[0]));
    ASSERT_TRUE(png.text.count("parameters"));
    const auto p = nlohmann::json::parse(png.text.at("parameters"));
    EXPECT_EQ(p.at("prompt"), r.at("prompt"));
    EXPECT_EQ(p.at("seed"), 1);
    EXPECT_EQ(p.at("scheduler"), "ddim");
    EXPECT_EQ(png.text.at("prompt"), r.at("prompt"));

    // Same seed, same image; several images are NAME-i.png.
    res = test::run_hra("-q sd generate --model " + kPipeline + " --prompt '' --steps 2 --num-images 2 --seed 5 --out " +
                            (dir / "b.png"),
                        dir);
    ASSERT_EQ(res.code, 0) << res.err;
    EXPECT_EQ(res.err, "");
    res = test::run_hra("-q sd generate --model " + kPipeline + " --prompt '' --steps 2 --num-images 2 --seed 5 --out " +
                            (dir / "c.png"),
                        dir);
    ASSERT_EQ(res.code, 0) << res.err;
    for (const char* i : {"0", "1"})
        EXPECT_TRUE(io::read_png(dir / (std::string("b-") + i + ".png"))
                        .pixels.equal(io::read_png(dir / (std::string("c-") + i + ".png")).pixels));
    EXPECT_FALSE(io::read_png(dir / "b-0.png").pixels.equal(io::read_png(dir / "b-1.png").pixels));
}

TEST(SdGenerate, BadInput) {
    test::TempDir dir;
    auto res = test::run_hra("sd generate --model " + kPipeline + " --prompt x --width 36 --out " + (dir / "a.png"), dir);
    EXPECT_EQ(res.code, 1);
    EXPECT_NE(res.err.find("multiples of 8"), std::string::npos) << res.err;
    res = test::run_hra("sd generate --model " + kPipeline + " --prompt x --scheduler euler-a --out " + (dir / "a.png"), dir);
    EXPECT_EQ(res.code, 1);
    EXPECT_NE(res.err.find("unknown scheduler 'euler-a'"), std::string::npos) << res.err;
    res = test::run_hra("sd generate --model " + (dir / "none") + " --prompt x --out " + (dir / "a.png"), dir);
    EXPECT_EQ(res.code, 1);
    EXPECT_NE(res.err.find("model_index.json"), std::string::npos) << res.err;
    EXPECT_FALSE(fs::exists(dir / "a.png"));

    // A 10,000-character prompt is cut to 77 ids with a warning.
    auto sd = diffusion::load_stable_diffusion(kPipeline, torch::kFloat);
    std::string long_prompt;
    while (long_prompt.size() < 10000) long_prompt += "red circle ";
    bool truncated = false;
    auto e = diffusion::encode_prompt(sd, long_prompt, &truncated);
    EXPECT_TRUE(truncated);
    EXPECT_EQ(e.sizes(), (c10::IntArrayRef{1, 77, 32}));
    res = test::run_hra("sd generate --model " + kPipeline + " --steps 1 --prompt '" + long_prompt + "' --out " + (dir / "l.png"), dir);
    EXPECT_EQ(res.code, 0) << res.err;
    EXPECT_NE(res.err.find("longer than 75 tokens"), std::string::npos) << res.err;

    // A truncated or corrupt weight file is an error naming it.
    fs::copy(kPipeline, dir / "pipe", fs::copy_options::recursive);
    const std::string unet = dir / "pipe/unet/diffusion_pytorch_model.safetensors";
    fs::resize_file(unet, fs::file_size(unet) / 2);
    auto msg = error_of([&] { diffusion::load_stable_diffusion(dir / "pipe"); });
    EXPECT_NE(msg.find(unet), std::string::npos) << msg;
    io::write_file_atomically(unet, "garbage");
    msg = error_of([&] { diffusion::load_stable_diffusion(dir / "pipe"); });
    EXPECT_NE(msg.find(unet), std::string::npos) << msg;
}

// The text encoder of the fixture is stored as the fp16 variant only; an
// explicit variant that is not there is an error.
TEST(SdGenerate, WeightVariants) {
    auto sd = diffusion::load_stable_diffusion(kPipeline, torch::kFloat);
    EXPECT_EQ(sd.text_encoder.model->parameters().front().scalar_type(), torch::kFloat);
    diffusion::SdLoadOptions bf16;
    bf16.variant = "bf16";
    auto msg = error_of([&] { diffusion::load_stable_diffusion(kPipeline, torch::kFloat, bf16); });
    EXPECT_NE(msg.find("variant 'bf16'"), std::string::npos) << msg;
}

TEST(Png, RoundTripAndCorruptFiles) {
    test::TempDir dir;
    auto img = torch::randint(0, 256, {5, 7, 3}, torch::kLong).to(torch::kUInt8);
    io::write_png(dir / "a.png", img, {{"prompt", "a cat, 1 €"}});
    auto back = io::read_png(dir / "a.png");
    EXPECT_TRUE(back.pixels.equal(img));
    EXPECT_EQ(back.text.at("prompt"), "a cat, 1 €");
    auto grey = torch::randint(0, 256, {4, 4, 1}, torch::kLong).to(torch::kUInt8);
    io::write_png(dir / "g.png", grey);
    EXPECT_TRUE(io::read_png(dir / "g.png").pixels.equal(grey));
    EXPECT_NE(error_of([&] { io::write_png(dir / "b.png", torch::zeros({2, 2, 3})); }).find("uint8"), std::string::npos);
    const std::string bytes = io::read_file(dir / "a.png");
    io::write_file_atomically(dir / "t.png", bytes.substr(0, bytes.size() / 2));
    EXPECT_NE(error_of([&] { io::read_png(dir / "t.png"); }).find("corrupt PNG"), std::string::npos);
    io::write_file_atomically(dir / "n.png", "not a png at all");
    EXPECT_NE(error_of([&] { io::read_png(dir / "n.png"); }).find("not a PNG"), std::string::npos);
}

// SD 1.5's shapes through the name map: every parameter gets a distinct
// single-file name, among them the ldm names of v1-5-pruned (DIFFUSION.md §1).
TEST(SdSingleFile, StableDiffusion15NameMap) {
    const auto unet_cfg = parse_unet_config(sd15_unet_config_json(), "sd15 unet");
    const auto vae_cfg = parse_vae_config(sd15_vae_config_json(), "sd15 vae");
    SkipInitGuard skip;  // names and shapes only: never initialised
    UNet2DConditionModel unet(unet_cfg);
    AutoencoderKL vae(vae_cfg);
    std::set<std::string> names;
    for (const auto& [n, p] : base_parameters(*unet)) names.insert(sd_single_file_name(SdComponent::Unet, n, unet_cfg, vae_cfg));
    EXPECT_EQ(names.size(), 686u);
    for (const auto& [n, p] : base_parameters(*vae)) names.insert(sd_single_file_name(SdComponent::Vae, n, unet_cfg, vae_cfg));
    EXPECT_EQ(names.size(), 686u + 248u);
    for (const char* known : {"model.diffusion_model.time_embed.0.weight", "model.diffusion_model.input_blocks.0.0.weight",
                              "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
                              "model.diffusion_model.input_blocks.3.0.op.weight",
                              "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
                              "model.diffusion_model.input_blocks.11.0.emb_layers.1.weight",
                              "model.diffusion_model.middle_block.1.proj_in.weight",
                              "model.diffusion_model.middle_block.2.out_layers.3.bias",
                              "model.diffusion_model.output_blocks.2.1.conv.weight",
                              "model.diffusion_model.output_blocks.5.2.conv.weight",
                              "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight",
                              "model.diffusion_model.out.2.weight", "first_stage_model.encoder.down.0.block.1.conv2.weight",
                              "first_stage_model.encoder.down.3.block.0.norm1.weight",
                              "first_stage_model.encoder.mid.attn_1.q.weight", "first_stage_model.encoder.norm_out.bias",
                              "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
                              "first_stage_model.decoder.up.3.upsample.conv.weight", "first_stage_model.decoder.mid.block_2.conv1.weight",
                              "first_stage_model.post_quant_conv.weight"})
        EXPECT_TRUE(names.count(known)) << known;
    EXPECT_EQ(sd_ema_name("model.diffusion_model.input_blocks.0.0.weight"), "model_ema.diffusion_modelinput_blocks00weight");
}

// diffusers -> single file -> diffusers reproduces the reference pixels; the
// single file generates them directly; --ema reads the EMA copy; bad files fail
// with one error listing the problems.
TEST(SdSingleFile, ConvertBothWaysAndEma) {
    test::TempDir dir;
    const auto io = io::SafetensorsFile::open(kPipeline + "/io.safetensors");
    const std::string file = dir / "tiny.safetensors";
    auto r = test::run_hra("-q sd convert --model " + kPipeline + " --out " + file, dir);
    ASSERT_EQ(r.code, 0) << r.err;
    r = test::run_hra("-q sd convert --model " + file + " --config-from " + kPipeline + " --out " + (dir / "back"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    for (const std::string& model : {std::string(dir / "back"), file}) {
        const std::string out = dir / "x.png";
        fs::remove(out);
        r = test::run_hra("-q sd generate --model " + model + " --config-from " + kPipeline +
                              " --prompt 'a red circle at the top left, photo' --scheduler ddim --steps 3 --seed 1 --dtype float64 --out " + out,
                          dir);
        ASSERT_EQ(r.code, 0) << r.err;
        EXPECT_TRUE(io::read_png(out).pixels.equal(io.tensor("ddim.image")[0])) << model;
    }
    // EMA: the UNet's copy under model_ema.* (here the weights × 0.5) replaces the other with --ema.
    auto single = io::SafetensorsFile::open(file);
    io::NamedTensors tensors;
    for (const auto& k : single.names()) {
        tensors.emplace_back(k, single.tensor(k));
        if (k.rfind("model.diffusion_model.", 0) == 0) tensors.emplace_back(sd_ema_name(k), single.tensor(k) * 0.5);
    }
    io::save_safetensors(dir / "ema.safetensors", tensors);
    diffusion::SdLoadOptions o;
    o.config_dir = kPipeline;
    auto plain = diffusion::load_stable_diffusion(dir / "ema.safetensors", torch::kFloat, o);
    o.ema = true;
    auto ema = diffusion::load_stable_diffusion(dir / "ema.safetensors", torch::kFloat, o);
    EXPECT_TRUE(ema.unet.model->conv_in->weight.equal(plain.unet.model->conv_in->weight * 0.5));
    EXPECT_TRUE(ema.vae.model->quant_conv->weight.equal(plain.vae.model->quant_conv->weight));

    // Missing, extra and mis-shaped tensors: one error naming all three.
    tensors.clear();
    for (const auto& k : single.names()) {
        if (k == "model.diffusion_model.out.2.bias") continue;
        auto t = single.tensor(k);
        if (k == "first_stage_model.quant_conv.bias") t = torch::zeros({3});
        tensors.emplace_back(k, t);
    }
    tensors.emplace_back("control_model.zero_convs.0.0.weight", torch::zeros({2}));
    io::save_safetensors(dir / "bad.safetensors", tensors);
    o.ema = false;
    const auto msg = error_of([&] { diffusion::load_stable_diffusion(dir / "bad.safetensors", torch::kFloat, o); });
    EXPECT_NE(msg.find("3 problems"), std::string::npos) << msg;
    EXPECT_NE(msg.find("missing model.diffusion_model.out.2.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("first_stage_model.quant_conv.bias is [3]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected control_model.zero_convs.0.0.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
}

// A PEFT HRA adapter on the UNet's attention projections: loaded at
// generation time or merged, the pixels agree (float64) and differ from the
// base model's; a folder without an adapter is refused.
TEST(SdGenerate, PeftAdapterLoadedOrMerged) {
    test::TempDir dir;
    auto sd = diffusion::load_stable_diffusion(kPipeline, torch::kDouble);
    PeftModel peft(sd.unet.model.ptr());
    auto c = AdapterConfig::of("hra");
    c.r = 4;
    c.target_modules = ModuleSelector::regex(R"(.*attn[12]\.(to_q|to_k|to_v|to_out\.0))");
    c.set("init_weights", false);  // random reflections: the adapter changes the output
    EXPECT_EQ(peft.add_adapter("default", c).size(), 6u * 2u * 4u);  // 6 transformers, 2 attentions, q/k/v/out
    peft.save_adapter(dir / "hra");
    auto run = [&](const std::string& extra, const std::string& out) {
        auto r = test::run_hra("-q sd generate --model " + kPipeline + " --prompt 'a red circle' --steps 2 --seed 3 --dtype float64 " +
                                   extra + " --out " + (dir / out),
                               dir);
        EXPECT_EQ(r.code, 0) << r.err;
        return io::read_png(dir / out).pixels;
    };
    const auto base = run("", "base.png"), adapted = run("--adapter " + (dir / "hra"), "a.png"),
               merged = run("--adapter " + (dir / "hra") + " --merge-adapter", "m.png");
    EXPECT_TRUE(adapted.equal(merged));
    EXPECT_FALSE(adapted.equal(base));
    // hra merge writes the merged pipeline (float32, as --merge-adapter merges): the same pixels as merging at load time.
    auto r = test::run_hra("-q merge --model " + kPipeline + " --adapter " + (dir / "hra") + " --out " + (dir / "merged"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    auto run32 = [&](const std::string& model, const std::string& extra, const std::string& out) {
        auto g = test::run_hra("-q sd generate --model " + model + " --prompt 'a red circle' --steps 2 --seed 3 " + extra + " --out " + (dir / out), dir);
        EXPECT_EQ(g.code, 0) << g.err;
        return io::read_png(dir / out).pixels;
    };
    const auto from_folder = run32(dir / "merged", "", "f.png");
    EXPECT_TRUE(from_folder.equal(run32(kPipeline, "--adapter " + (dir / "hra") + " --merge-adapter", "m32.png")));
    EXPECT_FALSE(from_folder.equal(run32(kPipeline, "", "b32.png")));
    EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(dir / "merged") / "adapter_config.json"));
    r = test::run_hra("-q merge --model " + kPipeline + " --adapter " + (dir / "hra") + " --out " + (dir / "merged"), dir);
    EXPECT_EQ(r.code, 1);  // an existing folder is kept without --force
    r = test::run_hra("sd generate --model " + kPipeline + " --prompt x --adapter " + kPipeline + " --out " + (dir / "x.png"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("no PEFT adapter here"), std::string::npos) << r.err;
}
