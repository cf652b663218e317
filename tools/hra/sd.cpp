// hra sd ...: Stable Diffusion. `generate` runs a diffusers pipeline folder
// and writes PNG files with the prompt and settings in their text chunks.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "data/image.h"
#include "diffusion/pipeline.h"
#include "diffusion/shape_world.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/png.h"
#include "models/hint_encoder.h"
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
        std::string model, out, dtype = "float32", adapter, control, control_model;
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
    cmd->add_option("--control", o->control,
                    "condition image (canny map, segmentation colours, landmark drawing; PNG/JPEG): its size is the output's. "
                    "With it, unless given: DDIM 50 steps, guidance 9, and \", \" after the prompt (the seed's generation.py)");
    cmd->add_option("--control-model", o->control_model,
                    "a `hra train --task control` checkpoint: hint_encoder.safetensors, and its adapter unless --adapter is given");
    cmd->add_option("--out", o->out, "PNG file (several images: NAME-0.png, NAME-1.png, ...)")->required();
    return {cmd, [o, cmd]() {
                const auto cmd_given = [cmd](const char* name) { return cmd->get_option(name)->count() > 0; };
                if (!ends_with(o->out, ".png")) throw Error("--out must name a .png file", {o->out});
                // Unknown sampler names fail before anything is loaded.
                diffusion::make_scheduler(o->g.scheduler, diffusion::ScheduleConfig{});
                if (o->control.empty() != o->control_model.empty())
                    throw Error("--control and --control-model go together (the condition image and the trained hint encoder)");
                const auto dtype = parse_dtype(o->dtype);
                auto g = o->g;
                torch::Tensor hint;
                if (!o->control.empty()) {
                    hint = data::load_rgb(o->control);
                    if (g.width == 0) g.width = hint.size(1);
                    if (g.height == 0) g.height = hint.size(0);
                    if (hint.size(1) != g.width || hint.size(0) != g.height)
                        throw Error(strprintf("the condition image is %lldx%lld but the output %lldx%lld", static_cast<long long>(hint.size(1)),
                                              static_cast<long long>(hint.size(0)), static_cast<long long>(g.width),
                                              static_cast<long long>(g.height)),
                                    {o->control});
                    if (!cmd_given("--steps")) g.steps = 50;
                    if (!cmd_given("--scheduler")) g.scheduler = "ddim";
                    if (!cmd_given("--guidance")) g.guidance = 9.0;
                    g.prompt += ", ";
                }
                auto sd = diffusion::load_stable_diffusion(o->model, dtype, o->load);
                const std::string adapter = !o->adapter.empty() ? o->adapter
                                            : !o->control_model.empty() && std::filesystem::exists(std::filesystem::path(o->control_model) / "adapter_config.json")
                                                ? o->control_model
                                                : "";
                if (!adapter.empty())
                    log_info("adapter: " + join_names(diffusion::load_sd_adapters(sd, adapter, o->merge)) + " from " + adapter +
                             (o->merge ? " (merged)" : ""));
                if (hint.defined()) {
                    auto enc = load_hint_encoder(o->control_model);
                    if (enc->factor() != sd.vae_scale_factor() || enc->config().out_channels != sd.unet.config.block_out_channels.front())
                        throw Error(strprintf("this hint encoder gives %lld channels at 1/%lld of the condition's size; the model needs "
                                              "%lld at 1/%lld (another model's checkpoint?)",
                                              static_cast<long long>(enc->config().out_channels), static_cast<long long>(enc->factor()),
                                              static_cast<long long>(sd.unet.config.block_out_channels.front()),
                                              static_cast<long long>(sd.vae_scale_factor())),
                                    {(std::filesystem::path(o->control_model) / "hint_encoder.json").string()});
                    enc->eval();
                    torch::NoGradGuard ng;
                    const auto wide = dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
                    enc->to(wide);
                    try {
                        g.input_residual = enc->forward(hint.permute({2, 0, 1}).unsqueeze(0).to(wide).div(255.0)).to(dtype);
                    } catch (const Error& e) {
                        throw e.in_file(o->control);
                    }
                    log_info("control: " + o->control + " through the hint encoder of " + o->control_model);
                }
                const auto start = std::chrono::steady_clock::now();
                auto counting = diffusion::make_scheduler(g.scheduler, sd.schedule);
                counting->set_timesteps(g.steps);
                const auto total = static_cast<int64_t>(counting->timesteps().size());  // PNDM: steps + 1 model calls
                g.on_step = [&](int64_t k, int64_t t, const torch::Tensor&) {
                    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                    const double eta = s / static_cast<double>(k + 1) * static_cast<double>(total - k - 1);
                    show_progress(strprintf("step %lld/%lld (t=%lld)  %.1f s, ETA %.1f s", static_cast<long long>(k + 1),
                                            static_cast<long long>(total), static_cast<long long>(t), s, eta));
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
                                           {"adapter", adapter},
                                           {"control", o->control},
                                           {"control_model", o->control_model},
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


nlohmann::json world_score_json(const diffusion::WorldScore& s) {
    return {{"images", s.images},
            {"accepted", s.accepted},
            {"accuracy", s.accuracy()},
            {"chance", 1.0 / static_cast<double>(diffusion::all_scenes().size())},
            {"found", s.share(s.found)},
            {"colour_accuracy", s.share(s.colour)},
            {"shape_accuracy", s.share(s.shape)},
            {"row_accuracy", s.share(s.row)},
            {"column_accuracy", s.share(s.col)},
            {"position_accuracy", s.share(s.position)},
            {"size_accuracy", s.share(s.size)}};
}

std::vector<diffusion::Scene> world_scenes(const std::string& split, int64_t heldout) {
    const auto w = diffusion::split_world(heldout);
    if (split == "train") return w.train;
    if (split == "heldout") return w.heldout;
    if (split == "all") return diffusion::all_scenes();
    throw Error("--split must be train, heldout or all, got '" + split + "'");
}

Command add_sd_world(CLI::App& sd) {
    auto* world = sd.add_subcommand("world", "the shape world: captioned images and their exact checker");
    world->require_subcommand(1);
    auto* render = world->add_subcommand("render", "write captioned images (PNG + metadata.jsonl with file_name, text)");
    struct RenderOpts {
        std::string out, split = "all";
        int64_t per_scene = 1, size = 32, heldout = 100;
        uint64_t seed = 0;
    };
    auto ro = std::make_shared<RenderOpts>();
    render->add_option("--out", ro->out, "a new folder")->required();
    render->add_option("--split", ro->split, "train, heldout or all (of the 324 captions)")->capture_default_str();
    render->add_option("--per-scene", ro->per_scene, "images per caption (different jitters)")->capture_default_str()
        ->check(CLI::PositiveNumber);
    render->add_option("--size", ro->size, "pixels (at least 32)")->capture_default_str();
    render->add_option("--heldout", ro->heldout, "captions held out of training")->capture_default_str();
    render->add_option("--seed", ro->seed, "jitter seed")->capture_default_str();
    auto* check = world->add_subcommand("check", "score images against their captions; prints one JSON line");
    struct CheckOpts {
        std::string images;
    };
    auto co = std::make_shared<CheckOpts>();
    check->add_option("--images", co->images, "a folder with metadata.jsonl (file_name, text) and the images")->required();
    auto* eval = world->add_subcommand("eval", "generate one image per caption with a pipeline and check each; prints one JSON line");
    struct EvalOpts {
        std::string model, adapter, split = "heldout", grid;
        int64_t heldout = 100, limit = 0;
        diffusion::GenerateOptions g;
    };
    auto eo = std::make_shared<EvalOpts>();
    eo->g.steps = 15;
    eo->g.guidance = 4.0;
    eo->g.scheduler = "ddim";
    eval->add_option("--model", eo->model, "a diffusers pipeline folder trained on the shape world")->required();
    eval->add_option("--adapter", eo->adapter, "PEFT adapter folder for the pipeline");
    eval->add_option("--split", eo->split, "train, heldout or all (of the 324 captions)")->capture_default_str();
    eval->add_option("--heldout", eo->heldout, "captions held out of training")->capture_default_str();
    eval->add_option("--limit", eo->limit, "only the first N captions of the split (0: all)")->capture_default_str()
        ->check(CLI::NonNegativeNumber);
    eval->add_option("--steps", eo->g.steps, "denoising steps")->capture_default_str()->check(CLI::PositiveNumber);
    eval->add_option("--guidance", eo->g.guidance, "classifier-free guidance scale (<= 1: none)")->capture_default_str();
    eval->add_option("--scheduler", eo->g.scheduler, "sampler: " + join_names(diffusion::scheduler_names()))->capture_default_str();
    eval->add_option("--seed", eo->g.seed, "seed (batch b of 25 prompts uses seed*1000 + b)")->capture_default_str();
    eval->add_option("--grid", eo->grid, "also write the images as one PNG grid (10 per row)");
    Command eval_cmd{eval, [eo]() {
                         auto scenes = world_scenes(eo->split, eo->heldout);
                         if (eo->limit > 0 && eo->limit < static_cast<int64_t>(scenes.size())) scenes.resize(static_cast<size_t>(eo->limit));
                         if (!eo->grid.empty() && !ends_with(eo->grid, ".png")) throw Error("--grid must name a .png file", {eo->grid});
                         diffusion::make_scheduler(eo->g.scheduler, diffusion::ScheduleConfig{});
                         auto sd = diffusion::load_stable_diffusion(eo->model, torch::kFloat);
                         if (!eo->adapter.empty()) diffusion::load_sd_adapters(sd, eo->adapter, false);
                         const auto r = diffusion::generate_and_check(sd, scenes, eo->g);
                         auto out = world_score_json(r.score);
                         out["split"] = eo->split;
                         out["sampler"] = strprintf("%s %lld steps, guidance %g, seed %llu", eo->g.scheduler.c_str(),
                                                    static_cast<long long>(eo->g.steps), eo->g.guidance,
                                                    static_cast<unsigned long long>(eo->g.seed));
                         if (!eo->grid.empty()) {
                             io::write_png(eo->grid, io::image_grid(r.pixels, 10), {{"hra", "sd world eval: " + eo->split + " captions"}});
                             out["grid"] = eo->grid;
                         }
                         std::printf("%s\n", out.dump().c_str());
                         return 0;
                     }};
    Command render_cmd{render, [ro]() {
                           const auto scenes = world_scenes(ro->split, ro->heldout);
                           if (ro->size < 32) throw Error("--size must be at least 32, got " + std::to_string(ro->size));
                           if (std::filesystem::exists(ro->out)) throw Error("already exists; give a new folder", {ro->out});
                           const std::string tmp = ro->out + ".tmp";
                           if (std::filesystem::exists(tmp)) throw Error("a folder of that name is in the way; remove it first", {tmp});
                           io::make_dirs(tmp);
                           int64_t k = 0;
                           try {
                               std::string meta;
                               for (const auto& scene : scenes)
                                   for (int64_t i = 0; i < ro->per_scene; ++i, ++k) {
                                       const std::string name = strprintf("%05lld.png", static_cast<long long>(k));
                                       io::write_png(tmp + "/" + name, diffusion::render(scene, ro->size,
                                                                                         ro->seed * 1000003u + static_cast<uint64_t>(k)));
                                       meta += nlohmann::json{{"file_name", name}, {"text", diffusion::caption(scene)}}.dump() + "\n";
                                   }
                               io::write_file_atomically(tmp + "/metadata.jsonl", meta);
                               std::filesystem::rename(tmp, ro->out);
                           } catch (...) {
                               std::error_code ec;
                               std::filesystem::remove_all(tmp, ec);  // nothing half-written stays behind
                               throw;
                           }
                           log_info(strprintf("wrote %lld images to %s", static_cast<long long>(k), ro->out.c_str()));
                           return 0;
                       }};
    Command check_cmd{check, [co]() {
                          const std::string meta_path = io::file_in_folder(co->images, "metadata.jsonl");
                          std::ifstream in(meta_path);
                          std::string line;
                          int64_t line_no = 0;
                          diffusion::WorldScore score;
                          while (std::getline(in, line)) {
                              ++line_no;
                              if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
                              const auto j = io::parse_json(line, meta_path);
                              if (!j.is_object() || !j.contains("file_name") || !j.contains("text") || !j["file_name"].is_string() ||
                                  !j["text"].is_string())
                                  throw Error("each line needs file_name and text strings", {meta_path, "", line_no});
                              const std::string file = j["file_name"].get<std::string>();
                              if (file.empty() || file[0] == '/' || file.find("..") != std::string::npos)
                                  throw Error("file_name must name a file inside the folder: '" + file + "'", {meta_path, "", line_no});
                              const auto want = diffusion::parse_caption(j["text"].get<std::string>());
                              if (!want) throw Error("not a shape-world caption: " + j["text"].dump(), {meta_path, "", line_no});
                              const auto img = io::read_png((std::filesystem::path(co->images) / j["file_name"].get<std::string>()).string());
                              if (img.pixels.size(2) != 3)
                                  throw Error("expected an RGB image", {j["file_name"].get<std::string>()});
                              score.add(diffusion::check_image(img.pixels), *want);
                          }
                          if (score.images == 0) throw Error("no images listed", {meta_path});
                          std::printf("%s\n", world_score_json(score).dump().c_str());
                          return 0;
                      }};
    return {world, [render_cmd, check_cmd, eval_cmd]() {
                if (render_cmd.app->parsed()) return render_cmd.run();
                if (check_cmd.app->parsed()) return check_cmd.run();
                if (eval_cmd.app->parsed()) return eval_cmd.run();
                return 2;
            }};
}

}  // namespace

Command add_sd(CLI::App& app) {
    auto* sd = app.add_subcommand("sd", "Stable Diffusion: generate, convert, the shape world");
    sd->require_subcommand(1);
    const std::vector<Command> subs = {add_sd_generate(*sd), add_sd_convert(*sd), add_sd_world(*sd), add_sd_eval_subject(*sd),
                                       add_sd_eval_control(*sd)};
    // Listed for --help; main.cpp turns `sd train-subject` into `train --task dreambooth` before parsing.
    sd->add_subcommand("train-subject", "DreamBooth on a subject's photos: hra train --task dreambooth (see its options)");
    sd->add_subcommand("train-control", "hint encoder + adapters on condition/image pairs: hra train --task control (see its options)");
    return {sd, [subs]() {
                for (const auto& c : subs)
                    if (c.app->parsed()) return c.run();
                return 2;
            }};
}

}  // namespace hra::cli
