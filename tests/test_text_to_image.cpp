// The engine's text-to-image task and pixel-space pipelines: the denoising
// objective against a hand computation, training that lowers the loss and
// resumes, adapter checkpoints that the generator loads, bad image folders,
// batched prompts, and the diffusion demo's output contract.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "data/image.h"
#include "diffusion/pipeline.h"
#include "diffusion/shape_world.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "train/engine.h"
#include "train/task.h"
#include "test_util.h"

using namespace hra;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// A tiny pixel-space pipeline folder holding configs only.
void write_configs(const std::string& dir) {
    fs::create_directories(fs::path(dir) / "unet");
    fs::create_directories(fs::path(dir) / "text_encoder");
    fs::create_directories(fs::path(dir) / "scheduler");
    const json unet = {{"sample_size", 32},
                       {"in_channels", 3},
                       {"out_channels", 3},
                       {"block_out_channels", {8, 16}},
                       {"down_block_types", {"DownBlock2D", "CrossAttnDownBlock2D"}},
                       {"up_block_types", {"CrossAttnUpBlock2D", "UpBlock2D"}},
                       {"layers_per_block", 1},
                       {"norm_num_groups", 4},
                       {"attention_head_dim", 2},
                       {"cross_attention_dim", 16}};
    io::write_file_atomically(dir + "/unet/config.json", unet.dump());
    const json text = {{"model_type", "clip_text_model"}, {"vocab_size", 49408}, {"hidden_size", 16}, {"intermediate_size", 32}, {"num_hidden_layers", 1},
                       {"num_attention_heads", 2},     {"max_position_embeddings", 77}, {"hidden_act", "quick_gelu"},
                       {"projection_dim", 16}};
    io::write_file_atomically(dir + "/text_encoder/config.json", text.dump());
    const json sched = {{"num_train_timesteps", 1000}, {"beta_start", 0.0001}, {"beta_end", 0.02}, {"beta_schedule", "linear"}};
    io::write_file_atomically(dir + "/scheduler/scheduler_config.json", sched.dump());
    ClipTokenizer::bundled()->save_folder(dir + "/tokenizer");
    const json index = {{"_class_name", "StableDiffusionPipeline"}, {"vae", {nullptr, nullptr}}};
    io::write_file_atomically(dir + "/model_index.json", index.dump());
}

// `n` shape-world images with their captions.
void write_images(const std::string& dir, int n) {
    fs::create_directories(dir);
    std::string meta;
    const auto scenes = diffusion::all_scenes();
    for (int i = 0; i < n; ++i) {
        const auto& s = scenes[static_cast<size_t>(i * 37 % 324)];
        const std::string name = "img" + std::to_string(i) + ".png";
        io::write_png(dir + "/" + name, diffusion::render(s, 32, static_cast<uint64_t>(i)));
        meta += json{{"file_name", name}, {"text", diffusion::caption(s)}}.dump() + "\n";
    }
    io::write_file_atomically(dir + "/metadata.jsonl", meta);
}

TrainOptions base_options(const test::TempDir& dir) {
    TrainOptions o;
    o.task = "text-to-image";
    o.model = dir / "model";
    o.data = dir / "images";
    o.out = dir / "run";
    o.set_method("full");
    o.from_scratch = true;
    o.batch_size = 4;
    o.lr = 2e-3;
    o.schedule = Schedule::Constant;
    o.log_every = 1000;
    o.overwrite = true;
    return o;
}

// dir/model: the tiny pipeline with seeded weights (configs in dir/config).
void write_base_model(const test::TempDir& dir) {
    write_configs(dir / "config");
    torch::manual_seed(0);
    diffusion::SdLoadOptions lo;
    lo.random_init = true;
    auto base = diffusion::load_stable_diffusion(dir / "config", torch::kFloat, lo);
    diffusion::save_stable_diffusion(base, dir / "model");
}

// A tiny model folder and `images` captioned images in `dir`, and the options
// that train on them.
TrainOptions prepared_run(const test::TempDir& dir, int images) {
    write_configs(dir / "model");
    write_images(dir / "images", images);
    return base_options(dir);
}

}  // namespace

// loss(rows) is diffusers' ε objective: with the task's random draws replayed
// (timesteps, then noise), x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε from the linear betas
// computed here in float64, and the mean of (UNet(x_t, t, text) − ε)² per image.
TEST(TextToImage, LossIsTheEpsilonObjective) {
    test::TempDir dir;
    auto o = prepared_run(dir, 6);
    validate(o);
    torch::manual_seed(3);
    auto task = find_task("text-to-image").make(o);
    task->setup("");
    ASSERT_EQ(task->train_size(), 6);
    task->set_training(false);
    torch::manual_seed(11);
    const auto got = task->loss({1, 4});
    EXPECT_EQ(got.count, 2);

    // The same model, loaded from the checkpoint the task writes.
    task->save(dir.path());  // a pipeline folder with weights; model_index.json names no VAE
    auto sd = diffusion::load_stable_diffusion(dir.path());
    EXPECT_FALSE(sd.has_vae());
    torch::manual_seed(11);
    auto t = torch::randint(0, 1000, {2}, torch::kLong);
    auto x0 = torch::stack({io::read_png(dir / "images/img1.png").pixels, io::read_png(dir / "images/img4.png").pixels})
                  .permute({0, 3, 1, 2})
                  .to(torch::kFloat) /
                  127.5 -
              1.0;
    auto noise = torch::randn(x0.sizes());
    auto beta = torch::linspace(1e-4, 0.02, 1000, torch::kDouble);
    auto abar = torch::cumprod(1 - beta, 0);
    auto a = abar.index_select(0, t).view({2, 1, 1, 1});
    auto xt = (a.sqrt() * x0.to(torch::kDouble) + (1 - a).sqrt() * noise.to(torch::kDouble)).to(torch::kFloat);
    std::vector<torch::Tensor> ctx;
    for (int i : {1, 4}) {
        const auto scenes = diffusion::all_scenes();
        ctx.push_back(diffusion::encode_prompt(sd, diffusion::caption(scenes[static_cast<size_t>(i * 37 % 324)])));
    }
    torch::NoGradGuard ng;
    auto eps = sd.unet.model->forward(xt, t, torch::cat(ctx));
    const double want = (eps - noise).pow(2).mean({1, 2, 3}).sum().item<double>();
    EXPECT_NEAR(got.sum.item<double>(), want, 1e-5 * want);
}

// The engine trains it: the loss falls on a small set, the checkpoint is a
// pipeline folder that generates, and a resumed run continues it.
TEST(TextToImage, TrainsGeneratesAndResumes) {
    test::TempDir dir;
    auto o = prepared_run(dir, 8);
    o.max_steps = 60;
    o.save_every = 30;
    o.caption_dropout = 0.1;
    const auto r = train(o);
    ASSERT_EQ(r.steps, 60);
    double first = 0, last = 0;
    for (int i = 0; i < 10; ++i) first += r.history[static_cast<size_t>(i)].loss, last += r.history[r.history.size() - 1 - static_cast<size_t>(i)].loss;
    EXPECT_LT(last, 0.5 * first) << "the mean of the first 10 losses " << first / 10 << ", of the last 10 " << last / 10;
    auto sd = diffusion::load_stable_diffusion(r.adapter_dir);
    diffusion::GenerateOptions g;
    g.prompts = {"a small red circle at the top left", "a large blue square at the bottom right"};
    g.steps = 3;
    g.scheduler = "ddim";
    const auto out = diffusion::generate(sd, g);
    EXPECT_EQ(out.pixels.sizes(), (std::vector<int64_t>{2, 32, 32, 3}));

    // Resume from the step-30 checkpoint: the same 60 steps' final losses.
    auto o2 = o;
    o2.out = dir / "run2";
    o2.max_steps = 30;
    const auto r2a = train(o2);
    o2.max_steps = 60;
    o2.resume = true;
    o2.overwrite = false;
    const auto r2 = train(o2);
    ASSERT_FALSE(r2.history.empty());
    EXPECT_EQ(r2.history.back().step, 60);
    EXPECT_DOUBLE_EQ(r2.history.back().loss, r.history.back().loss);
    (void)r2a;
}

// --ema-decay: the checkpoint's UNet is diffusers' EMAModel average of the raw
// weights, computed here from a run without EMA that saved every step (the
// same seed gives the same raw weights), and a resumed EMA run ends where an
// uninterrupted one does.
TEST(TextToImage, EmaCheckpointsHoldTheAverage) {
    test::TempDir dir;
    // A pretrained folder to start from (so that the initial weights are on disk).
    auto o = prepared_run(dir, 8);
    o.max_steps = 1;
    o.out = dir / "pre";
    const std::string start = train(o).adapter_dir;
    o.from_scratch = false;  // full training of the UNet from `start`
    o.model = start;
    o.max_steps = 3;
    o.save_every = 1;
    o.out = dir / "raw";
    train(o);
    o.ema_decay = 0.5;
    o.save_every = 0;
    o.out = dir / "ema";
    const std::string ema_dir = train(o).adapter_dir;

    auto unet = [](const std::string& folder) {
        return io::SafetensorsFile::open(folder + "/unet/diffusion_pytorch_model.safetensors").load_all();
    };
    auto expected = unet(start);
    for (int k = 1; k <= 3; ++k) {
        const double d = std::min(0.5, k / (9.0 + k));  // 0.1, 2/11, 0.25
        auto raw = unet(dir / "raw" + "/checkpoint-" + std::to_string(k));
        for (auto& [name, t] : expected) t = d * t.to(torch::kDouble) + (1 - d) * raw.at(name).to(torch::kDouble);
    }
    const auto got = unet(ema_dir);
    double err = 0, moved = 0;
    for (const auto& [name, t] : expected) {
        err = std::max(err, test::max_abs_diff(got.at(name).to(torch::kDouble), t));
        moved = std::max(moved, test::max_abs_diff(got.at(name).to(torch::kDouble), unet(dir / "raw" + "/checkpoint-3").at(name).to(torch::kDouble)));
    }
    std::printf("EMA: max |checkpoint - average computed here| %.3g, max |checkpoint - raw step 3| %.3g\n", err, moved);
    EXPECT_LT(err, 3e-7);  // float32 checkpoints against float64 here: 7.5e-8 measured
    EXPECT_GT(moved, 1e-4) << "the average should differ from the last raw weights";

    // Resume after step 2: the raw weights come back from optimizer.safetensors.
    o.out = dir / "ema2";
    o.max_steps = 2;
    o.save_every = 0;
    train(o);
    o.max_steps = 3;
    o.resume = true;
    o.overwrite = false;
    const auto resumed = unet(train(o).adapter_dir);
    double diff = 0;
    for (const auto& [name, t] : got) diff = std::max(diff, test::max_abs_diff(resumed.at(name), t));
    EXPECT_EQ(diff, 0.0);

    // Resuming an EMA checkpoint without --ema-decay is refused.
    o.ema_decay = 0;
    o.max_steps = 4;
    EXPECT_NE(test::error_of([&] { train(o); }).find("--ema-decay"), std::string::npos);
}

// --method hra trains adapters on the UNet's attention projections; the
// checkpoint is a PEFT folder that the generator loads onto the base pipeline.
TEST(TextToImage, HraAdaptersOnTheUnet) {
    test::TempDir dir;
    write_base_model(dir);
    write_images(dir / "images", 4);
    auto o = base_options(dir);
    o.from_scratch = false;
    o.set_method("hra");
    o.adapter.r = 2;
    o.max_steps = 3;
    const auto r = train(o);
    ASSERT_TRUE(fs::exists(fs::path(r.adapter_dir) / "adapter_config.json"));
    const auto cfg = io::read_json_file((fs::path(r.adapter_dir) / "adapter_config.json").string());
    EXPECT_EQ(cfg.at("peft_type"), "HRA");
    auto sd = diffusion::load_stable_diffusion(dir / "model");
    const auto parts = diffusion::load_sd_adapters(sd, r.adapter_dir, false);
    EXPECT_EQ(parts, std::vector<std::string>{"unet"});
    // 2 attention modules (self and cross) in 4 transformer blocks (down 1, mid 1, up 2), 2 attentions of 4 projections each.
    EXPECT_EQ(sd.adapters.front()->adapted_modules("default").size(), 32u);
    EXPECT_NE(test::error_of([&] {
                  auto bad = o;
                  bad.from_scratch = true;
                  bad.out = dir / "bad";
                  train(bad);
              }),
              "");
}

TEST(TextToImage, BadImageFolders) {
    test::TempDir dir;
    write_configs(dir / "model");
    fs::create_directories(dir / "images");
    auto o = base_options(dir);
    o.max_steps = 1;
    auto err = test::error_of([&] { train(o); });
    EXPECT_NE(err.find("metadata.jsonl"), std::string::npos) << err;
    io::write_file_atomically(dir / "images/metadata.jsonl", "{\"file_name\": \"a.png\"}\n");
    err = test::error_of([&] { train(o); });
    EXPECT_NE(err.find("\"text\""), std::string::npos) << err;
    EXPECT_NE(err.find("metadata.jsonl:1"), std::string::npos) << err;
    io::write_file_atomically(dir / "images/metadata.jsonl", "{\"file_name\": \"missing.png\", \"text\": \"x\"}\n");
    err = test::error_of([&] { train(o); });
    EXPECT_NE(err.find("missing.png"), std::string::npos) << err;
    io::write_file_atomically(dir / "images/metadata.jsonl", "");
    err = test::error_of([&] { train(o); });
    EXPECT_NE(err.find("no images"), std::string::npos) << err;
    io::write_file_atomically(dir / "images/bad.png", "not a png");
    io::write_file_atomically(dir / "images/metadata.jsonl", "{\"file_name\": \"bad.png\", \"text\": \"x\"}\n");
    err = test::error_of([&] { train(o); });
    EXPECT_NE(err.find("bad.png"), std::string::npos) << err;
}

// Prompts in one batch give each image what it gets alone from the same initial latents.
TEST(TextToImage, BatchedPromptsMatchSingleRuns) {
    test::TempDir dir;
    write_configs(dir / "model");
    torch::manual_seed(1);
    diffusion::SdLoadOptions lo;
    lo.random_init = true;
    auto sd = diffusion::load_stable_diffusion(dir / "model", torch::kDouble, lo);
    const std::vector<std::string> prompts = {"a small red circle at the top left", "", "a large cyan triangle at the middle center"};
    auto latents = torch::randn({3, 3, 32, 32}, torch::kDouble);
    diffusion::GenerateOptions g;
    g.prompts = prompts;
    g.latents = latents;
    g.steps = 4;
    g.guidance = 3.0;
    g.scheduler = "dpm++2m";
    const auto batch = diffusion::generate(sd, g);
    for (size_t i = 0; i < prompts.size(); ++i) {
        diffusion::GenerateOptions one = g;
        one.prompts.clear();
        one.prompt = prompts[i];
        one.latents = latents.slice(0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1);
        const auto single = diffusion::generate(sd, one);
        EXPECT_LT(test::max_abs_diff(single.latents, batch.latents.slice(0, static_cast<int64_t>(i), static_cast<int64_t>(i) + 1)),
                  1e-12);
    }
    // Pixel space: the image is the final sample mapped from [-1, 1].
    EXPECT_LT(test::max_abs_diff(batch.image, (batch.latents / 2 + 0.5).clamp(0, 1)), 1e-15);
    // No single-file layout without a VAE.
    EXPECT_NE(test::error_of([&] { diffusion::save_sd_single_file(sd, dir / "x.safetensors"); }).find("no VAE"), std::string::npos);
}

// The demo's contract, on a run far too short to learn: the table, the grid
// and a last line of JSON with held_out_accuracy and chance.
TEST(TextToImage, DemoPrintsItsTableAndJson) {
    test::TempDir dir;
    const auto res = test::run_hra("-q demo --diffusion --out " + (dir / "demo") + " --max-steps 2 --seeds 0 --sample-steps 2", dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto last = res.out.substr(res.out.rfind('\n', res.out.size() - 2) + 1);
    const auto j = json::parse(last);
    EXPECT_DOUBLE_EQ(j.at("chance").get<double>(), 1.0 / 324);
    EXPECT_EQ(j.at("held_out_captions"), 100);
    const double acc = j.at("held_out_accuracy").get<double>();
    EXPECT_GE(acc, 0.0);
    EXPECT_LE(acc, 1.0);
    EXPECT_EQ(j.at("seeds").size(), 1u);
    const auto grid = io::read_png(j.at("grid").get<std::string>()).pixels;
    EXPECT_EQ(grid.sizes(), (std::vector<int64_t>{10 * 34 + 2, 10 * 34 + 2, 3}));
    EXPECT_NE(res.out.find("held-out"), std::string::npos);

    // hra sd world eval on the trained pipeline: its counts are the checker's on the images it wrote.
    const auto model = fs::path(j.at("grid").get<std::string>()).parent_path() / "run-seed0" / "checkpoint-2";
    const auto ev = test::run_hra("-q sd world eval --model " + model.string() + " --split heldout --limit 12 --steps 2 --grid " +
                                      (dir / "eval.png"),
                                  dir);
    ASSERT_EQ(ev.code, 0) << ev.err;
    const auto e = json::parse(ev.out);
    ASSERT_EQ(e.at("images"), 12);
    const auto tiles = io::read_png(dir / "eval.png").pixels;
    ASSERT_EQ(tiles.sizes(), (std::vector<int64_t>{2 * 34 + 2, 10 * 34 + 2, 3}));
    const auto scenes = diffusion::split_world(100).heldout;
    int64_t accepted = 0, found = 0;
    for (int64_t i = 0; i < 12; ++i) {
        const auto tile = tiles.slice(0, 2 + i / 10 * 34, 2 + i / 10 * 34 + 32).slice(1, 2 + i % 10 * 34, 2 + i % 10 * 34 + 32);
        const auto r = diffusion::check_image(tile);
        found += r.found;
        accepted += r.found && r.scene == scenes[static_cast<size_t>(i)];
    }
    EXPECT_EQ(e.at("accepted").get<int64_t>(), accepted);
    EXPECT_DOUBLE_EQ(e.at("found").get<double>(), static_cast<double>(found) / 12);
    const auto bad = test::run_hra("sd world eval --model " + model.string() + " --split testing", dir);
    EXPECT_NE(bad.code, 0);
    EXPECT_NE(bad.err.find("--split must be train, heldout or all"), std::string::npos) << bad.err;
}

// `hra train --task text-to-image` from the command line, and its options checked.
TEST(TextToImage, CliTrainsAndChecksOptions) {
    test::TempDir dir;
    write_configs(dir / "model");
    write_images(dir / "images", 4);
    const std::string base = "-q train --task text-to-image --model " + (dir / "model") + " --data " + (dir / "images") +
                             " --from-scratch --method full --batch-size 2 --max-steps 2";
    auto res = test::run_hra(base + " --caption-dropout 0.5 --resolution 32 --out " + (dir / "run"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto result = io::read_json_file(dir / "run/results.json");
    EXPECT_EQ(result.at("steps"), 2);
    EXPECT_EQ(result.at("config").at("task_config").at("caption_dropout"), 0.5);
    EXPECT_TRUE(fs::exists(dir / "run/checkpoint-2/model_index.json"));
    res = test::run_hra(base + " --caption-dropout 1.5 --out " + (dir / "bad"), dir);
    EXPECT_NE(res.code, 0);
    EXPECT_NE(res.err.find("caption-dropout"), std::string::npos) << res.err;
    EXPECT_FALSE(fs::exists(dir / "bad"));
    res = test::run_hra("-q train --task mlm --model " + (dir / "model") + " --data x --resolution 64 --out " + (dir / "bad"), dir);
    EXPECT_NE(res.code, 0);
    EXPECT_NE(res.err.find("--resolution does not apply"), std::string::npos) << res.err;
    // 16 px images are resized (with a warning) to the model's 32.
    fs::create_directories(dir / "small");
    io::write_png(dir / "small/a.png", torch::full({16, 16, 3}, 200, torch::kUInt8));
    io::write_file_atomically(dir / "small/metadata.jsonl", "{\"file_name\": \"a.png\", \"text\": \"grey\"}\n");
    res = test::run_hra("train --task text-to-image --model " + (dir / "model") + " --data " + (dir / "small") +
                            " --from-scratch --method full --batch-size 1 --max-steps 1 --out " + (dir / "run-small"),
                        dir);
    ASSERT_EQ(res.code, 0) << res.err;
    EXPECT_NE(res.err.find("resized and centre-cropped to 32 px"), std::string::npos) << res.err;
}

namespace {

// A pixel-space base pipeline with seeded weights, 2 instance photos (a JPEG
// and a PNG, not square) and `class_images` class PNGs.
TrainOptions dreambooth_run(const test::TempDir& dir, int class_images) {
    write_base_model(dir);
    fs::create_directories(dir / "subject");
    const auto scenes = diffusion::all_scenes();
    io::write_png(dir / "subject/b.png", torch::cat({diffusion::render(scenes[5], 32, 1), diffusion::render(scenes[9], 32, 2)}, 1));
    fs::copy_file(std::string(HRA_TEST_FIXTURES) + "/images/jpeg_baseline.jpg", dir / "subject/a.jpg");  // 64x48
    fs::create_directories(dir / "class");
    for (int i = 0; i < class_images; ++i)
        io::write_png(dir / ("class/c" + std::to_string(i) + ".png"), diffusion::render(scenes[static_cast<size_t>(40 + i)], 32, 3));
    TrainOptions o;
    o.task = "dreambooth";
    o.model = dir / "model";
    o.data = dir / "subject";
    o.class_data = dir / "class";
    o.class_word = "shape";
    o.out = dir / "run";
    o.set_method("hra");
    o.adapter.r = 2;
    o.adapter.target_modules = ModuleSelector::of({"to_q", "to_k", "to_v", "to_out.0"});
    o.log_every = 1000;
    o.overwrite = true;
    return o;
}

// diffusers' train_dreambooth errors recomputed by hand for one instance and one class image with their prompts:
// centre crop, ε-prediction on DDPM's linear schedule, the noise and timesteps of manual_seed(seed). [2]
torch::Tensor reference_errors(const test::TempDir& dir, const std::string& instance, const std::string& cls,
                               const std::string& instance_prompt, const std::string& class_prompt, uint64_t seed) {
    auto sd = diffusion::load_stable_diffusion(dir / "model");  // adapters at init leave the UNet unchanged
    auto prep = [](const std::string& f) {
        return data::center_crop(data::resize_shortest_edge(data::load_rgb(f), 32, data::Resample::Bilinear), 32, 32);
    };
    auto x0 = torch::stack({prep(instance), prep(cls)}).permute({0, 3, 1, 2}).to(torch::kFloat) / 127.5 - 1.0;
    torch::manual_seed(seed);
    auto t = torch::randint(0, 1000, {2}, torch::kLong);
    auto noise = torch::randn(x0.sizes());
    auto beta = torch::linspace(1e-4, 0.02, 1000, torch::kDouble);
    auto a = torch::cumprod(1 - beta, 0).index_select(0, t).view({2, 1, 1, 1});
    auto xt = (a.sqrt() * x0.to(torch::kDouble) + (1 - a).sqrt() * noise.to(torch::kDouble)).to(torch::kFloat);
    auto ctx = torch::cat({diffusion::encode_prompt(sd, instance_prompt), diffusion::encode_prompt(sd, class_prompt)});
    torch::NoGradGuard ng;
    return (sd.unet.model->forward(xt, t, ctx) - noise).pow(2).mean({1, 2, 3});
}

}  // namespace

// loss(rows) is diffusers' train_dreambooth objective: instance and class
// image in one batch, MSE(instance) + prior_loss_weight · MSE(class), with the
// prompts "a photo of qwe shape" / "a photo of shape" and images resized
// (shorter side, Pillow's bilinear) and cropped. An epoch cycles the shorter list.
TEST(DreamBooth, LossIsInstancePlusWeightedPrior) {
    test::TempDir dir;
    auto o = dreambooth_run(dir, 3);
    o.prior_loss_weight = 0.5;
    o.num_class_images = 3;
    o.center_crop = true;
    validate(o);
    auto task = find_task("dreambooth").make(o);
    task->setup("");
    EXPECT_EQ(task->train_size(), 3);  // max(2 instance, 3 class)
    task->set_training(false);
    torch::manual_seed(5);
    const auto got = task->loss({2});  // instance 2 % 2 = 0 (a.jpg), class 2 (c2.png)
    EXPECT_EQ(got.count, 1);

    const auto err = reference_errors(dir, dir / "subject/a.jpg", dir / "class/c2.png", "a photo of qwe shape", "a photo of shape", 5);
    const double want = err[0].item<double>() + 0.5 * err[1].item<double>();
    EXPECT_NEAR(got.sum.item<double>(), want, 1e-5 * want);
    EXPECT_GT(err[1].item<double>(), 0.05 * err[0].item<double>());  // the prior term is not negligible here
}

// Folders with metadata.jsonl give each image its own prompt (diffusers' custom instance prompts): the loss
// is the same objective with those captions, and results.json says where the prompts came from.
TEST(DreamBooth, CaptionedFoldersGiveEachImageItsPrompt) {
    test::TempDir dir;
    auto o = dreambooth_run(dir, 2);
    io::write_file_atomically(dir / "subject/metadata.jsonl", R"({"file_name": "a.jpg", "text": "a qwe shape on the left"})" "\n"
                                                              R"({"file_name": "b.png", "text": "a red qwe shape"})" "\n");
    io::write_file_atomically(dir / "class/metadata.jsonl", R"({"file_name": "c0.png", "text": "a shape on the left"})" "\n"
                                                            R"({"file_name": "c1.png", "text": "a red shape"})" "\n");
    o.class_word.clear();  // no prompt given: the captions are the prompts
    o.num_class_images = 2;
    o.center_crop = true;
    validate(o);
    auto task = find_task("dreambooth").make(o);
    task->setup("");
    EXPECT_EQ(task->train_size(), 2);
    task->set_training(false);
    torch::manual_seed(5);
    const auto got = task->loss({1});  // b.png with its caption, c1.png with its caption
    const auto err = reference_errors(dir, dir / "subject/b.png", dir / "class/c1.png", "a red qwe shape", "a red shape", 5);
    const double want = err[0].item<double>() + err[1].item<double>();
    EXPECT_NEAR(got.sum.item<double>(), want, 1e-5 * want);
    // The instance prompt would give another loss (the random model barely reads its prompt: 7.6e-5 of the
    // loss apart, 7.6 times the tolerance above): the captions were used.
    const double prompt_loss =
        reference_errors(dir, dir / "subject/b.png", dir / "class/c1.png", "a photo of qwe shape", "a photo of shape", 5).sum().item<double>();
    EXPECT_GT(std::abs(prompt_loss - want), 3e-5 * want);
    EXPECT_EQ(task->describe().at("instance_prompt"), "metadata.jsonl");
    EXPECT_EQ(task->describe().at("class_prompt"), "metadata.jsonl");
    // A prompt given on the command line wins over the captions.
    o.instance_prompt = "a photo of qwe shape";
    o.class_prompt = "a photo of shape";
    auto prompted = find_task("dreambooth").make(o);
    prompted->setup("");
    EXPECT_EQ(prompted->describe().at("instance_prompt"), "a photo of qwe shape");
    EXPECT_EQ(prompted->describe().at("class_prompt"), "a photo of shape");
}

// From the command line: missing class images are generated into the class
// folder (and reused by the next run), HRA r 8 is the default, validation grids
// are written, and a missing prompt or class folder is an error naming the option.
TEST(DreamBooth, CliGeneratesClassImagesOnce) {
    test::TempDir dir;
    dreambooth_run(dir, 1);  // one class image there already: 2 more are generated
    const std::string base = "train --task dreambooth --model " + (dir / "model") + " --data " + (dir / "subject") +
                             " --resolution 32 --max-steps 2 --num-class-images 3 --class-data " + (dir / "class");
    auto res = test::run_hra(base + " --class-word shape --validation-prompt \"a qwe shape\" --validation-images 2 --out " + (dir / "run"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    EXPECT_NE(res.err.find("generating 2 class images of \"a photo of shape\""), std::string::npos) << res.err;
    int pngs = 0;
    for (const auto& e : fs::directory_iterator(dir / "class")) pngs += e.path().extension() == ".png";
    EXPECT_EQ(pngs, 3);
    const auto gen = io::read_png(dir / "class/class-00001.png");
    EXPECT_EQ(gen.text.at("prompt"), "a photo of shape");
    EXPECT_EQ(gen.pixels.sizes(), (std::vector<int64_t>{32, 32, 3}));
    const auto result = io::read_json_file(dir / "run/results.json");
    const auto& tc = result.at("config").at("task_config");
    EXPECT_EQ(tc.at("instance_prompt"), "a photo of qwe shape");
    EXPECT_EQ(tc.at("class_images"), 3);
    EXPECT_EQ(tc.at("crop"), "random");
    EXPECT_EQ(result.at("config").at("lr"), 1e-4);
    EXPECT_EQ(result.at("config").at("adapter").at("r"), 8);
    EXPECT_EQ(io::read_png(dir / "run/validation/eval-000.png").text.at("prompt"), "a qwe shape");
    // Second run, as `hra sd train-subject` with PEFT's example preset: the cache is complete, nothing is generated.
    res = test::run_hra("sd train-subject" + base.substr(std::string("train --task dreambooth").size()) + " --class-word shape --preset peft --out " + (dir / "run2"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    EXPECT_EQ(res.err.find("generating"), std::string::npos) << res.err;
    const auto peft = io::read_json_file(dir / "run2/results.json").at("config");
    EXPECT_EQ(peft.at("lr"), 5e-3);
    EXPECT_EQ(peft.at("adapter").at("bias"), "hra_only");
    res = test::run_hra(base + " --class-word shape --preset paper --out " + (dir / "run3"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto paper = io::read_json_file(dir / "run3/results.json").at("config");
    EXPECT_EQ(paper.at("lr"), 7e-6);
    EXPECT_EQ(paper.at("adapter").at("r"), 7);
    res = test::run_hra(base + " --out " + (dir / "bad"), dir);
    EXPECT_NE(res.code, 0);
    EXPECT_NE(res.err.find("--class-word or --instance-prompt"), std::string::npos) << res.err;
    res = test::run_hra("train --task dreambooth --model " + (dir / "model") + " --data " + (dir / "subject") +
                            " --class-word shape --max-steps 1 --out " + (dir / "bad"),
                        dir);
    EXPECT_NE(res.code, 0);
    EXPECT_NE(res.err.find("--class-data"), std::string::npos) << res.err;
}

// --train-text-encoder: the method's adapters on the text encoder's
// q/k/v/out_proj too, saved as unet/ and text_encoder/ (PEFT's DreamBooth
// layout), trained (the images differ from the UNet adapter's alone), resumed,
// and merged by hra merge into the same pipeline as --merge-adapter.
TEST(DreamBooth, TextEncoderAdaptersBesideTheUnets) {
    test::TempDir dir;
    dreambooth_run(dir, 2);
    const std::string base = "-q train --task dreambooth --model " + (dir / "model") + " --data " + (dir / "subject") +
                             " --resolution 32 --num-class-images 2 --class-word shape --lr 1e-2 --class-data " + (dir / "class");
    auto res = test::run_hra(base + " --max-steps 3 --out " + (dir / "unet-only"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    res = test::run_hra(base + " --max-steps 3 --train-text-encoder --out " + (dir / "run"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto ck = fs::path(dir / "run/checkpoint-3");
    ASSERT_TRUE(fs::exists(ck / "unet/adapter_config.json"));
    ASSERT_TRUE(fs::exists(ck / "text_encoder/adapter_config.json"));
    EXPECT_FALSE(fs::exists(ck / "adapter_config.json"));
    const auto tcfg = io::read_json_file((ck / "text_encoder/adapter_config.json").string());
    EXPECT_EQ(tcfg.at("peft_type"), "HRA");
    EXPECT_EQ(tcfg.at("target_modules"), json({"k_proj", "out_proj", "q_proj", "v_proj"}));
    const auto with = io::read_json_file(dir / "run/results.json").at("config").at("task_config");
    const auto without = io::read_json_file(dir / "unet-only/results.json").at("config").at("task_config");
    EXPECT_EQ(with.at("train_text_encoder"), true);
    // 1 text layer of width 16: 4 projections x 16 x r 8.
    EXPECT_EQ(with.at("trainable_params").get<int64_t>() - without.at("trainable_params").get<int64_t>(), 4 * 16 * 8);
    auto generate = [&](const std::string& model, const std::string& extra, const std::string& out) {
        auto g = test::run_hra("-q sd generate --model " + model + " --prompt 'a photo of qwe shape' --steps 2 --seed 1 " + extra + " --out " +
                                   (dir / out),
                               dir);
        EXPECT_EQ(g.code, 0) << g.err;
        return io::read_png(dir / out).pixels;
    };
    const auto both = generate(dir / "model", "--adapter " + ck.string(), "both.png");
    EXPECT_FALSE(both.equal(generate(dir / "model", "--adapter " + (ck / "unet").string(), "unet.png")));
    // Resumed for one more step from unet/ and text_encoder/.
    res = test::run_hra(base + " --max-steps 4 --train-text-encoder --resume --out " + (dir / "run"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    ASSERT_TRUE(fs::exists(dir / "run/checkpoint-4/text_encoder/adapter_config.json"));
    // hra merge folds both into a diffusers folder: the pixels of merging at load time.
    res = test::run_hra("-q merge --model " + (dir / "model") + " --adapter " + ck.string() + " --out " + (dir / "merged"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto merged = generate(dir / "merged", "", "merged.png");
    EXPECT_TRUE(merged.equal(generate(dir / "model", "--adapter " + ck.string() + " --merge-adapter", "m.png")));
}

namespace {

// dir/ctl: three shape-world targets with prompts; two give a condition image
// (another rendering; one at twice the target's size, as the seed's CelebA-HQ
// pairs a 512 px drawing with a 1024 px photo), one is left to Canny of its target. Also metadata.jsonl
// over the same targets and prompts, for the text-to-image task.
void write_control_data(const test::TempDir& dir) {
    fs::create_directories(dir / "ctl/target");
    fs::create_directories(dir / "ctl/source");
    const auto scenes = diffusion::all_scenes();
    std::string lines, meta;
    for (int i = 0; i < 3; ++i) {
        const auto& s = scenes[static_cast<size_t>(11 + 29 * i)];
        const std::string name = std::to_string(i) + ".png";
        io::write_png(dir / ("ctl/target/" + name), diffusion::render(s, 32, static_cast<uint64_t>(i)));
        json rec = {{"target", "target/" + name}, {"prompt", diffusion::caption(s)}};
        if (i != 1) {
            io::write_png(dir / ("ctl/source/" + name), diffusion::render(scenes[static_cast<size_t>(200 + i)], i == 2 ? 64 : 32, 7));
            rec["source"] = "source/" + name;
        }
        lines += rec.dump() + "\n";
        meta += json{{"file_name", "target/" + name}, {"text", diffusion::caption(s)}}.dump() + "\n";
    }
    io::write_file_atomically(dir / "ctl/prompt.json", lines);
    io::write_file_atomically(dir / "ctl/metadata.jsonl", meta);
}

}  // namespace

// At init the control task's loss is text-to-image's on the same images and
// prompts with the same draws (zero hint residual, HRA's paired init), the
// gradient reaches the hint encoder's zero convolution, and the adapters sit on
// the seed's placement (4 transformer blocks × 9 projections here).
TEST(Control, LossAtInitIsTheDenoisingLossAndTheHintLearns) {
    test::TempDir dir;
    write_base_model(dir);
    write_control_data(dir);
    auto o = base_options(dir);
    o.task = "control";
    o.from_scratch = false;
    o.set_method("hra");
    o.adapter.r = 2;
    o.data = dir / "ctl";
    validate(o);
    auto task = find_task("control").make(o);
    task->setup("");
    EXPECT_EQ(task->train_size(), 3);
    EXPECT_EQ(task->describe().at("canny_from_target"), 1);
    EXPECT_EQ(task->describe().at("hint_encoder_params"), 367320);  // 348,880 + 256·8·9 + 8 (out = the UNet's 8 channels)
    task->set_training(false);
    torch::manual_seed(5);
    const auto got = task->loss({0, 1, 2});
    auto t2i = o;
    t2i.task = "text-to-image";
    t2i.data = dir / "ctl";
    validate(t2i);
    auto plain = find_task("text-to-image").make(t2i);
    plain->setup("");
    plain->set_training(false);
    torch::manual_seed(5);
    const auto want = plain->loss({0, 1, 2});
    // float32: measured 6.8e-8 relative (HRA's paired reflections are the identity up to rounding)
    EXPECT_NEAR(got.sum.item<double>(), want.sum.item<double>(), 3e-7 * want.sum.item<double>());
    got.sum.backward();
    double last = 0;
    int64_t n = 0;
    for (const auto& p : task->trainable_parameters()) {
        ++n;
        if (p.numel() == 256 * 8 * 9) last = p.grad().abs().max().item<double>();
    }
    EXPECT_GT(last, 0.0);
    EXPECT_EQ(n, 36 + 16);  // 36 adapted projections' hra_u, the hint encoder's 16 tensors
    // A checkpoint's hint encoder is what a resumed task starts from (a fresh one's last convolution is zero).
    torch::Tensor trained;
    for (const auto& p : task->trainable_parameters())
        if (p.numel() == 256 * 8 * 9) trained = p;
    {
        torch::NoGradGuard ng;
        trained.normal_();
    }
    fs::create_directories(dir / "ckpt");
    task->save(dir / "ckpt");
    auto resumed = find_task("control").make(o);
    resumed->setup(dir / "ckpt");
    bool found = false;
    for (const auto& p : resumed->trainable_parameters())
        if (p.numel() == 256 * 8 * 9) found = p.equal(trained);
    EXPECT_TRUE(found);
}

// The generator's input residual: one residual for every image equals the same
// residual repeated per image, and it changes the output.
TEST(Control, GenerateAddsTheInputResidual) {
    test::TempDir dir;
    write_base_model(dir);
    auto sd = diffusion::load_stable_diffusion(dir / "model");
    diffusion::GenerateOptions g;
    g.prompt = "a red circle";
    g.steps = 3;
    g.num_images = 2;
    g.guidance = 3.0;
    const auto plain = diffusion::generate(sd, g).image;
    torch::manual_seed(2);
    g.input_residual = torch::randn({1, 8, 32, 32}) * 0.5;
    const auto one = diffusion::generate(sd, g).image;
    g.input_residual = g.input_residual.expand({2, 8, 32, 32}).contiguous();
    const auto two = diffusion::generate(sd, g).image;
    EXPECT_TRUE(one.equal(two));
    EXPECT_GT((one - plain).abs().max().item<double>(), 1e-3);
    g.input_residual = torch::zeros({1, 8, 16, 16});
    EXPECT_NE(test::error_of([&] { diffusion::generate(sd, g); }).find("input residual"), std::string::npos);
}

// From the command line: the seed's defaults, a checkpoint with the adapter and
// the hint encoder, which `hra sd generate --control` uses with the seed's
// sampler settings; a bad record is named by file and line.
TEST(Control, CliTrainsAndGenerates) {
    test::TempDir dir;
    write_base_model(dir);
    write_control_data(dir);
    auto res = test::run_hra("sd train-control --model " + (dir / "model") + " --data " + (dir / "ctl/prompt.json") +
                                 " --batch-size 2 --max-steps 2 --out " + (dir / "run"),
                             dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto result = io::read_json_file(dir / "run/results.json");
    const auto& cfg = result.at("config");
    EXPECT_EQ(cfg.at("lr"), 9e-4);
    EXPECT_EQ(cfg.at("weight_decay"), 1e-2);
    EXPECT_EQ(cfg.at("max_grad_norm"), 0.0);
    EXPECT_EQ(cfg.at("adapter").at("r"), 8);
    const std::string ckpt = result.at("checkpoint");
    for (const char* f : {"adapter_config.json", "hint_encoder.safetensors", "hint_encoder.json"})
        EXPECT_TRUE(fs::exists(fs::path(ckpt) / f)) << f;
    // Resuming continues from the checkpoint's adapter and hint encoder.
    res = test::run_hra("train --out " + (dir / "run") + " --resume --max-steps 3", dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto resumed = io::read_json_file(dir / "run/results.json");
    EXPECT_EQ(resumed.at("steps"), 3);
    EXPECT_TRUE(fs::exists(fs::path(resumed.at("checkpoint").get<std::string>()) / "hint_encoder.safetensors"));
    res = test::run_hra("sd generate --model " + (dir / "model") + " --prompt \"a red circle\" --control " + (dir / "ctl/source/0.png") +
                            " --control-model " + ckpt + " --steps 3 --out " + (dir / "gen.png"),
                        dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto png = io::read_png(dir / "gen.png");
    const auto params = json::parse(png.text.at("parameters"));
    EXPECT_EQ(params.at("prompt"), "a red circle, ");
    EXPECT_EQ(params.at("scheduler"), "ddim");
    EXPECT_EQ(params.at("guidance"), 9.0);
    EXPECT_EQ(params.at("steps"), 3);
    EXPECT_EQ(png.pixels.sizes(), (std::vector<int64_t>{32, 32, 3}));
    res = test::run_hra("sd generate --model " + (dir / "model") + " --prompt x --control " + (dir / "ctl/source/0.png") + " --out " +
                            (dir / "g2.png"),
                        dir);
    EXPECT_NE(res.code, 0);
    EXPECT_NE(res.err.find("--control-model"), std::string::npos) << res.err;
    io::write_file_atomically(dir / "ctl/bad.json", R"({"target": "target/0.png", "prompt": "a"})" "\n"
                                                     R"({"target": "target/9.png", "prompt": "b"})" "\n");
    res = test::run_hra("train --task control --model " + (dir / "model") + " --data " + (dir / "ctl/bad.json") + " --max-steps 1 --out " +
                            (dir / "bad"),
                        dir);
    EXPECT_NE(res.code, 0);
    EXPECT_NE(res.err.find("bad.json:2"), std::string::npos) << res.err;
    EXPECT_NE(res.err.find("target/9.png"), std::string::npos) << res.err;
}
