// hra sd ...: Stable Diffusion. `generate` runs a diffusers pipeline folder
// and writes PNG files with the prompt and settings in their text chunks.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "diffusion/pipeline.h"
#include "io/png.h"
#include "models/model_weights.h"

namespace hra::cli {

namespace {

// out.png for one image; out-0.png, out-1.png, ... for several.
std::string image_path(const std::string& out, int64_t i, int64_t n) {
    if (n == 1) return out;
    const std::filesystem::path p(out);
    return (p.parent_path() / (p.stem().string() + "-" + std::to_string(i) + p.extension().string())).string();
}

Command add_sd_generate(CLI::App& sd) {
    auto* cmd = sd.add_subcommand("generate", "text to image with a diffusers Stable Diffusion folder");
    struct Opts {
        std::string model, out, dtype = "float32", adapter;
        bool merge = false;
        diffusion::SdLoadOptions load;
        diffusion::GenerateOptions g;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--model", o->model, "diffusers pipeline folder, or an SD 1.x single file (.safetensors, .ckpt)")->required();
    cmd->add_option("--prompt", o->g.prompt, "the prompt (longer than 75 CLIP tokens: truncated, with a warning)")->required();
    cmd->add_option("--negative-prompt", o->g.negative_prompt, "the negative prompt of classifier-free guidance")
        ->capture_default_str();
    cmd->add_option("--steps", o->g.steps, "denoising steps")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--guidance", o->g.guidance, "classifier-free guidance scale (<= 1: none)")->capture_default_str();
    cmd->add_option("--scheduler", o->g.scheduler, "sampler: " + join_names(diffusion::scheduler_names()))->capture_default_str();
    cmd->add_option("--seed", o->g.seed, "seed of the initial noise (torch's CPU generator)")->capture_default_str();
    cmd->add_option("--width", o->g.width, "image width, a multiple of 8 (default: the UNet's sample_size x the VAE factor)");
    cmd->add_option("--height", o->g.height, "image height, a multiple of 8 (default as --width)");
    cmd->add_option("--num-images", o->g.num_images, "images (one batch)")->capture_default_str()->check(CLI::PositiveNumber);
    cmd->add_option("--dtype", o->dtype, "compute dtype: float32, float64, bfloat16 or float16")->capture_default_str();
    cmd->add_option("--variant", o->load.variant, "weight files of this variant (model.<variant>.safetensors), e.g. fp16");
    cmd->add_option("--config-from", o->load.config_dir, "single file: a diffusers folder with its configs (default: SD 1.5's)");
    cmd->add_flag("--ema", o->load.ema, "single file: the EMA copy of the UNet");
    cmd->add_option("--attention-chunk", o->g.attention_chunk,
                    "query rows per attention chunk (0: all at once; 1024 bounds a 512x512 image's attention memory)")
        ->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--adapter", o->adapter,
                    "PEFT adapter folder (HRA, LoRA): adapter_config.json for the UNet, or unet/ and text_encoder/ holding one");
    cmd->add_flag("--merge-adapter", o->merge, "fold the adapter into the weights before generating");
    cmd->add_option("--out", o->out, "PNG file (several images: NAME-0.png, NAME-1.png, ...)")->required();
    return {cmd, [o]() {
                if (!ends_with(o->out, ".png")) throw Error("--out must name a .png file", {o->out});
                // Unknown sampler names fail before anything is loaded.
                diffusion::make_scheduler(o->g.scheduler, diffusion::ScheduleConfig{});
                const auto dtype = parse_dtype(o->dtype);
                auto sd = diffusion::load_stable_diffusion(o->model, dtype, o->load);
                if (!o->adapter.empty())
                    log_info("adapter: " + join_names(diffusion::load_sd_adapters(sd, o->adapter, o->merge)) + " from " + o->adapter +
                             (o->merge ? " (merged)" : ""));
                const auto start = std::chrono::steady_clock::now();
                auto g = o->g;
                g.on_step = [&](int64_t k, int64_t t, const torch::Tensor&) {
                    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                    const double eta = s / static_cast<double>(k + 1) * static_cast<double>(g.steps - k - 1);
                    show_progress(strprintf("step %lld/%lld (t=%lld)  %.1f s, ETA %.1f s", static_cast<long long>(k + 1),
                                            static_cast<long long>(g.steps), static_cast<long long>(t), s, eta));
                };
                auto out = diffusion::generate(sd, g);
                clear_progress();
                const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                nlohmann::json settings = {{"prompt", g.prompt},
                                           {"negative_prompt", g.negative_prompt},
                                           {"steps", g.steps},
                                           {"guidance", g.guidance},
                                           {"scheduler", g.scheduler},
                                           {"seed", g.seed},
                                           {"width", out.pixels.size(2)},
                                           {"height", out.pixels.size(1)},
                                           {"dtype", o->dtype},
                                           {"model", o->model},
                                           {"adapter", o->adapter},
                                           {"generator", "hra sd generate"}};
                std::vector<std::string> written;
                for (int64_t i = 0; i < g.num_images; ++i) {
                    auto s = settings;
                    s["index"] = i;
                    const std::string path = image_path(o->out, i, g.num_images);
                    io::write_png(path, out.pixels[i], {{"prompt", g.prompt}, {"parameters", s.dump()}});
                    written.push_back(path);
                }
                log_info(strprintf("wrote %s (%lld image(s), %.1f s)", join_names(written).c_str(),
                                   static_cast<long long>(g.num_images), secs));
                return 0;
            }};
}

Command add_sd_convert(CLI::App& sd) {
    auto* cmd = sd.add_subcommand("convert", "diffusers folder <-> SD 1.x single file (original ldm names)");
    struct Opts {
        std::string model, out, dtype = "float32";
        diffusion::SdLoadOptions load;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--model", o->model, "a diffusers pipeline folder, or a single file (.safetensors, .ckpt)")->required();
    cmd->add_option("--out", o->out, "a single .safetensors file (from a folder), or a new diffusers folder (from a file)")
        ->required();
    cmd->add_option("--config-from", o->load.config_dir, "single file: a diffusers folder with its configs (default: SD 1.5's)");
    cmd->add_flag("--ema", o->load.ema, "single file: take the EMA copy of the UNet");
    cmd->add_option("--variant", o->load.variant, "folder: weight files of this variant, e.g. fp16");
    cmd->add_option("--dtype", o->dtype, "dtype of the written weights: float32, float16 or bfloat16")->capture_default_str();
    return {cmd, [o]() {
                const bool from_file = std::filesystem::is_regular_file(o->model);
                if (!from_file && !ends_with(o->out, ".safetensors"))
                    throw Error("--out must name a .safetensors file when --model is a folder", {o->out});
                auto sd = diffusion::load_stable_diffusion(o->model, parse_dtype(o->dtype), o->load);
                if (from_file)
                    diffusion::save_stable_diffusion(sd, o->out);
                else
                    diffusion::save_sd_single_file(sd, o->out);
                log_info("wrote " + o->out);
                return 0;
            }};
}

}  // namespace

Command add_sd(CLI::App& app) {
    auto* sd = app.add_subcommand("sd", "Stable Diffusion: generate, convert");
    sd->require_subcommand(1);
    const std::vector<Command> subs = {add_sd_generate(*sd), add_sd_convert(*sd)};
    return {sd, [subs]() {
                for (const auto& c : subs)
                    if (c.app->parsed()) return c.run();
                return 2;
            }};
}

}  // namespace hra::cli
