#include "demo/diffusion_demo.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "demo/demo_util.h"
#include "diffusion/pipeline.h"
#include "diffusion/shape_world.h"
#include "io/atomic_file.h"
#include "io/png.h"
#include "train/engine.h"
#include "train/optim.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using demo_util::say;
using demo_util::seconds_since;

// The training images: every training caption rendered with `per` jitter seeds.
void write_world_folder(const std::vector<diffusion::Scene>& scenes, int64_t size, int64_t per, const fs::path& dir) {
    fs::create_directories(dir);
    std::string meta;
    int64_t n = 0;
    for (const auto& s : scenes)
        for (int64_t k = 0; k < per; ++k, ++n) {
            const std::string name = strprintf("%05lld.png", static_cast<long long>(n));
            io::write_png((dir / name).string(), diffusion::render(s, size, static_cast<uint64_t>(n)));
            meta += json{{"file_name", name}, {"text", diffusion::caption(s)}}.dump() + "\n";
        }
    io::write_file_atomically((dir / "metadata.jsonl").string(), meta);
}

// One image per scene's caption (seed `seed`), checked; batches of 25 prompts.
diffusion::WorldSamples sample_and_check(diffusion::StableDiffusion& sd, const std::vector<diffusion::Scene>& scenes,
                                         const DiffusionDemoOptions& o, uint64_t seed) {
    diffusion::GenerateOptions g;
    g.steps = o.sample_steps;
    g.guidance = o.guidance;
    g.scheduler = o.scheduler;
    g.seed = seed;
    return diffusion::generate_and_check(sd, scenes, g);
}

}  // namespace

void write_world_model_configs(const DiffusionDemoOptions& o, const std::string& folder) {
    const fs::path dir(folder);
    fs::create_directories(dir / "unet");
    fs::create_directories(dir / "text_encoder");
    fs::create_directories(dir / "scheduler");
    std::vector<std::string> down, up;
    for (size_t i = 0; i < o.channels.size(); ++i) {
        const bool attn = i + static_cast<size_t>(o.attention_levels) >= o.channels.size();  // the coarsest levels (and the mid block)
        down.push_back(attn ? "CrossAttnDownBlock2D" : "DownBlock2D");
        up.insert(up.begin(), attn ? "CrossAttnUpBlock2D" : "UpBlock2D");
    }
    const json unet = {{"_class_name", "UNet2DConditionModel"},
                       {"sample_size", o.image_size},
                       {"in_channels", 3},
                       {"out_channels", 3},
                       {"block_out_channels", o.channels},
                       {"down_block_types", down},
                       {"up_block_types", up},
                       {"layers_per_block", o.layers_per_block},
                       {"norm_num_groups", 8},
                       {"attention_head_dim", o.heads},
                       {"cross_attention_dim", o.text_hidden}};
    io::write_file_atomically((dir / "unet" / "config.json").string(), unet.dump(2) + "\n");
    const json text = {{"architectures", {"CLIPTextModel"}},
                       {"model_type", "clip_text_model"},
                       {"vocab_size", 49408},
                       {"hidden_size", o.text_hidden},
                       {"intermediate_size", 4 * o.text_hidden},
                       {"num_hidden_layers", o.text_layers},
                       {"num_attention_heads", 4},
                       {"max_position_embeddings", o.max_tokens},
                       {"hidden_act", "quick_gelu"},
                       {"projection_dim", o.text_hidden}};
    io::write_file_atomically((dir / "text_encoder" / "config.json").string(), text.dump(2) + "\n");
    // DDPM's linear schedule and x0 clipping, as diffusers' pixel-space pipelines.
    const json sched = {{"_class_name", "DDIMScheduler"},   {"num_train_timesteps", 1000}, {"beta_start", 0.0001},
                        {"beta_end", 0.02},                 {"beta_schedule", o.beta_schedule},   {"prediction_type", o.prediction},
                        {"clip_sample", true},              {"set_alpha_to_one", true},    {"steps_offset", 0}};
    io::write_file_atomically((dir / "scheduler" / "scheduler_config.json").string(), sched.dump(2) + "\n");
    ClipTokenizer::bundled()->save_folder((dir / "tokenizer").string());
    {
        // Short captions: prompts padded to max_tokens rather than 77.
        const auto cfg_path = (dir / "tokenizer" / "tokenizer_config.json").string();
        auto cfg = json::parse(io::read_file(cfg_path));
        cfg["model_max_length"] = o.max_tokens;
        io::write_file_atomically(cfg_path, cfg.dump(2) + "\n");
    }
    const json index = {{"_class_name", "StableDiffusionPipeline"},
                        {"scheduler", {"diffusers", "DDIMScheduler"}},
                        {"text_encoder", {"transformers", "CLIPTextModel"}},
                        {"tokenizer", {"transformers", "CLIPTokenizer"}},
                        {"unet", {"diffusers", "UNet2DConditionModel"}},
                        {"vae", {nullptr, nullptr}}};
    io::write_file_atomically((dir / "model_index.json").string(), index.dump(2) + "\n");
}

TrainOptions world_pretrain_options(const DiffusionDemoOptions& o, const std::string& model, const std::string& data,
                                    const std::string& out, uint64_t seed) {
    TrainOptions t;
    t.task = "text-to-image";
    t.model = model;
    t.data = data;
    t.out = out;
    t.set_method("full");
    t.from_scratch = true;
    t.caption_dropout = o.caption_dropout;
    t.lr = o.lr;
    t.schedule = Schedule::Constant;
    t.warmup_steps = o.warmup_steps;
    t.batch_size = o.batch_size;
    t.max_grad_norm = 1.0;
    t.ema_decay = o.ema_decay;
    t.max_steps = o.max_steps > 0 ? o.max_steps : 1000000;
    t.max_minutes = o.max_steps > 0 ? 0 : o.train_minutes;
    t.seed = seed;
    t.overwrite = true;
    t.log_every = 1000000;
    return t;
}

DiffusionDemoResult run_diffusion_demo(const DiffusionDemoOptions& o) {
    if (o.seeds.empty()) throw Error("the diffusion demo needs at least one seed");
    const auto t_start = std::chrono::steady_clock::now();
    const fs::path out(o.out);
    fs::create_directories(out);
    DiffusionDemoResult result;
    result.chance = 1.0 / static_cast<double>(diffusion::all_scenes().size());
    const auto split = diffusion::split_world(o.heldout);
    std::vector<diffusion::Scene> probe(split.train.begin(),
                                        split.train.begin() + std::min<int64_t>(o.train_probe, static_cast<int64_t>(split.train.size())));

    // 1. Data and the model's configs.
    const fs::path data = out / "train-images", model = out / "model-config";
    fs::remove_all(data);
    fs::remove_all(model);
    write_world_folder(split.train, o.image_size, o.renders_per_caption, data);
    write_world_model_configs(o, model.string());
    say(strprintf("hra demo --diffusion: %zu training captions x %lld renders (%lld px), %zu held-out captions never trained on",
                  split.train.size(), static_cast<long long>(o.renders_per_caption), static_cast<long long>(o.image_size),
                  split.heldout.size()));

    // 2. The untrained model (seeded random weights) under the same protocol.
    {
        torch::manual_seed(o.seeds.front());
        diffusion::SdLoadOptions lo;
        lo.random_init = true;
        auto sd = diffusion::load_stable_diffusion(model.string(), torch::kFloat, lo);
        result.untrained_accuracy = sample_and_check(sd, split.heldout, o, 0).score.accuracy();
        say(strprintf("untrained model: held-out accuracy %.3f", result.untrained_accuracy));
    }

    // 3. Per seed: train from scratch with the engine, then generate and check.
    for (const auto seed : o.seeds) {
        const auto t = world_pretrain_options(o, model.string(), data.string(), (out / ("run-seed" + std::to_string(seed))).string(), seed);
        TrainResult r;
        {
            ScopedLogLevel quiet(LogLevel::Warning);
            r = train(t);
        }
        DiffusionDemoSeed row;
        row.seed = seed;
        row.steps = r.steps;
        const auto losses = demo_util::summarize(r.history, 0.98);
        row.train_seconds = losses.seconds;
        row.first_loss = losses.first;
        row.final_loss = losses.last;
        auto sd = diffusion::load_stable_diffusion(r.adapter_dir, torch::kFloat);
        const auto held = sample_and_check(sd, split.heldout, o, seed);
        const auto seen = sample_and_check(sd, probe, o, seed);
        const auto& h = held.score;
        row.heldout_accuracy = h.accuracy();
        row.heldout_attributes = {h.share(h.colour), h.share(h.shape), h.share(h.row), h.share(h.col), h.share(h.size)};
        row.train_accuracy = seen.score.accuracy();
        if (result.grid.empty()) {
            result.grid = (out / "heldout-grid.png").string();
            io::write_png(result.grid, io::image_grid(held.pixels, 10), {{"hra", "demo --diffusion: held-out captions, seed 0"}});
            std::string captions;
            for (const auto& s : split.heldout) captions += diffusion::caption(s) + "\n";
            io::write_file_atomically((out / "heldout-grid.txt").string(), captions);
        }
        say(strprintf("seed %llu: %lld steps in %.0f s, loss %.3f -> %.3f; held-out accuracy %.3f, training captions %.3f",
                      static_cast<unsigned long long>(seed), static_cast<long long>(row.steps), row.train_seconds, row.first_loss,
                      row.final_loss, row.heldout_accuracy, row.train_accuracy));
        result.seeds.push_back(row);
    }

    // 4. The table and its JSON line.
    std::vector<double> held;
    for (const auto& s : result.seeds) held.push_back(s.heldout_accuracy), result.train_mean += s.train_accuracy;
    result.train_mean /= static_cast<double>(result.seeds.size());
    result.heldout_min = *std::min_element(held.begin(), held.end());
    result.heldout_max = *std::max_element(held.begin(), held.end());
    for (double h : held) result.heldout_mean += h / static_cast<double>(held.size());
    std::string table = "\nhra demo --diffusion: text-to-image from scratch on the shape world (" + std::to_string(o.image_size) +
                        " px, pixel space, " + o.prediction + " prediction), " + o.scheduler + " " + std::to_string(o.sample_steps) + " steps, guidance " +
                        strprintf("%.1f", o.guidance) + "\n";
    table += "CLIP text encoder with " + std::to_string(o.text_layers) + " transformer layers" +
             (o.ema_decay > 0 ? strprintf(", sampling with the EMA weights (decay %g)", o.ema_decay) : std::string()) + "\n";
    table += "accuracy: the checker reads all of colour, shape, row, column and size back from the generated pixels\n\n";
    table += "seed  steps  train s  loss           held-out  colour  shape  row    column  size   training captions\n";
    for (const auto& s : result.seeds) {
        const auto& a = s.heldout_attributes;
        table += strprintf("%-4llu  %5lld  %7.0f  %.3f -> %.3f  %8.3f  %6.3f  %5.3f  %5.3f  %6.3f  %5.3f  %.3f\n",
                           static_cast<unsigned long long>(s.seed), static_cast<long long>(s.steps), s.train_seconds, s.first_loss,
                           s.final_loss, s.heldout_accuracy, a[0], a[1], a[2], a[3], a[4], s.train_accuracy);
    }
    table += strprintf("\nheld-out accuracy over %zu seeds: mean %.3f (min %.3f, max %.3f); training captions %.3f\n",
                       result.seeds.size(), result.heldout_mean, result.heldout_min, result.heldout_max, result.train_mean);
    table += strprintf("untrained model %.3f; chance %.4f (1/%zu)\n", result.untrained_accuracy, result.chance,
                       diffusion::all_scenes().size());
    table += "image grid (held-out captions, seed " + std::to_string(o.seeds.front()) + "): " + result.grid + "\n";
    const double total = seconds_since(t_start);
    table += strprintf("total %.0f s\n", total);
    json seeds = json::array();
    for (const auto& s : result.seeds)
        seeds.push_back({{"seed", s.seed},
                         {"steps", s.steps},
                         {"train_seconds", s.train_seconds},
                         {"final_loss", s.final_loss},
                         {"held_out_accuracy", s.heldout_accuracy},
                         {"held_out_attributes",
                          {{"colour", s.heldout_attributes[0]},
                           {"shape", s.heldout_attributes[1]},
                           {"row", s.heldout_attributes[2]},
                           {"column", s.heldout_attributes[3]},
                           {"size", s.heldout_attributes[4]}}},
                         {"train_caption_accuracy", s.train_accuracy}});
    result.json = {{"demo", "diffusion"},
                   {"held_out_accuracy", result.heldout_mean},
                   {"held_out_accuracy_min", result.heldout_min},
                   {"held_out_accuracy_max", result.heldout_max},
                   {"train_caption_accuracy", result.train_mean},
                   {"untrained_accuracy", result.untrained_accuracy},
                   {"chance", result.chance},
                   {"held_out_captions", split.heldout.size()},
                   {"image_size", o.image_size},
                   {"prediction_type", o.prediction},
                   {"text_layers", o.text_layers},
                   {"ema_decay", o.ema_decay},
                   {"sampler", o.scheduler + " " + std::to_string(o.sample_steps) + " steps, guidance " + strprintf("%.1f", o.guidance)},
                   {"seeds", seeds},
                   {"grid", result.grid},
                   {"total_seconds", total}};
    table += result.json.dump() + "\n";
    result.table = table;
    return result;
}

}  // namespace hra
