// hra demo --diffusion: Stable Diffusion's classes (CLIP text encoder,
// UNet2DConditionModel, a scheduler; no VAE: pixel space) trained from scratch
// on the shape world (diffusion/shape_world.h) by the training engine's
// text-to-image task, within minutes on a CPU. The 100 held-out captions never
// appear in training (every colour, shape, position and size does, in other
// combinations); the checker reads each generated image back from its pixels.
// Reported per training seed: held-out accuracy (all five attributes right),
// each attribute's accuracy, the same on 100 training captions, the untrained
// model's accuracy and chance (1/324).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/options.h"

namespace hra {

struct DiffusionDemoOptions {
    std::string out = "demo-diffusion";
    int64_t image_size = 32;
    int64_t renders_per_caption = 8;  // jittered training images per training caption
    std::vector<uint64_t> seeds = {0, 1, 2};
    double train_minutes = 2.5;  // wall-clock box per seed
    int64_t max_steps = 0;        // > 0: stop at this many steps (tests)
    int64_t batch_size = 16;
    double lr = 1e-3;
    int64_t warmup_steps = 100;
    double ema_decay = 0.995;  // sample with the EMA weights (held-out 0.44 vs 0.35 raw, seed 0, 3 min)
    double caption_dropout = 0.1;
    std::vector<int64_t> channels = {32, 64, 64, 64};  // down to 4x4: every cell next to a border
    int64_t heads = 2;
    int64_t text_hidden = 64, text_layers = 0;  // 0: embeddings + final norm (1 or 2 layers: no caption learnt in minutes)
    int64_t max_tokens = 16;        // the tokenizer's model_max_length (captions take at most 10)
    int64_t attention_levels = 2;   // cross-attention in this many of the coarsest UNet levels
    std::string prediction = "sample";  // what the UNet predicts: sample (x0) or epsilon
    std::string beta_schedule = "linear";  // the training noise schedule (linear, squaredcos_cap_v2)
    int64_t layers_per_block = 1;
    std::string scheduler = "ddim";
    int64_t sample_steps = 15;
    double guidance = 1.5;
    int64_t heldout = 100;
    int64_t train_probe = 100;  // training captions sampled for comparison
};

struct DiffusionDemoSeed {
    uint64_t seed = 0;
    int64_t steps = 0;
    double train_seconds = 0, first_loss = 0, final_loss = 0;
    double heldout_accuracy = 0, train_accuracy = 0;
    std::vector<double> heldout_attributes;  // colour, shape, row, column, size
};

struct DiffusionDemoResult {
    std::vector<DiffusionDemoSeed> seeds;
    double untrained_accuracy = 0, chance = 0;
    double heldout_mean = 0, heldout_min = 0, heldout_max = 0, train_mean = 0;
    std::string grid;   // PNG of the first seed's held-out images
    std::string table;  // the printed summary, ending with the JSON line
    nlohmann::json json;
};

DiffusionDemoResult run_diffusion_demo(const DiffusionDemoOptions& options);

// The demo's pixel-space pipeline folder, configs only: loading it with
// --from-scratch (or SdLoadOptions::random_init) builds seeded random weights.
void write_world_model_configs(const DiffusionDemoOptions& options, const std::string& dir);
// The demo's from-scratch training recipe (full, constant lr with warm-up, EMA,
// caption dropout; options.train_minutes or options.max_steps) as engine options.
TrainOptions world_pretrain_options(const DiffusionDemoOptions& options, const std::string& model, const std::string& data,
                                    const std::string& out, uint64_t seed);

}  // namespace hra
