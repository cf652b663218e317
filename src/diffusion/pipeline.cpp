#include "diffusion/pipeline.h"

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/model_weights.h"
#include "models/sd_checkpoint.h"
#include "common/strings.h"
#include "adapters/layers.h"

namespace hra::diffusion {

namespace fs = std::filesystem;

namespace {

void check_parts(const StableDiffusion& sd, const std::string& where) {
    const int64_t text_dim = sd.text_encoder.config.hidden_size;
    if (text_dim != sd.unet.config.cross_attention_dim)
        throw Error("the text encoder's width " + std::to_string(text_dim) + " is not the UNet's cross_attention_dim " +
                        std::to_string(sd.unet.config.cross_attention_dim),
                    {where});
    if (!sd.has_vae()) {
        if (sd.unet.config.in_channels != 3 || sd.unet.config.out_channels != 3)
            throw Error("a pipeline without a VAE denoises pixels: its UNet needs 3 in and out channels, not " +
                            std::to_string(sd.unet.config.in_channels) + " and " + std::to_string(sd.unet.config.out_channels),
                        {where});
        return;
    }
    if (sd.vae.config.latent_channels != sd.unet.config.in_channels || sd.unet.config.out_channels != sd.unet.config.in_channels)
        throw Error("the VAE's latent_channels " + std::to_string(sd.vae.config.latent_channels) +
                        " do not match the UNet's in/out channels",
                    {where});
}

// Whether model_index.json names a VAE: a missing or null "vae" entry means a pixel-space pipeline.
bool index_has_vae(const nlohmann::json& index) {
    const auto it = index.find("vae");
    if (it == index.end() || it->is_null()) return false;
    return !(it->is_array() && !it->empty() && it->front().is_null());
}

// A component built from its config.json with random weights (the global generator).
template <class Loaded, class Model, class Parse>
Loaded random_component(const fs::path& folder, c10::ScalarType dtype, Parse parse) {
    Loaded out;
    out.dir = folder.string();
    const std::string cfg = io::file_in_folder(folder.string(), "config.json");
    out.config = parse(io::read_file(cfg), cfg);
    out.model = frozen(Model(out.config), dtype);
    return out;
}

StableDiffusion load_single_file(const std::string& path, c10::ScalarType dtype, const SdLoadOptions& o) {
    StableDiffusion sd;
    sd.dir = path;
    sd.dtype = dtype;
    const fs::path cfg(o.config_dir);
    auto config_text = [&](const char* part, const std::string& fallback, std::string* source) {
        if (o.config_dir.empty()) {
            *source = std::string("built-in SD 1.5 ") + part + " config";
            return fallback;
        }
        const bool scheduler = part == std::string("scheduler");
        if (scheduler && !fs::is_directory(cfg / part)) {
            *source = "built-in SD 1.5 scheduler config";
            return fallback;
        }
        *source = io::file_in_folder((cfg / part).string(), scheduler ? "scheduler_config.json" : "config.json");
        return io::read_file(*source);
    };
    std::string src;
    std::string text = config_text("unet", sd15_unet_config_json(), &src);
    sd.unet.config = parse_unet_config(text, src);
    text = config_text("vae", sd15_vae_config_json(), &src);
    sd.vae.config = parse_vae_config(text, src);
    text = config_text("text_encoder", sd15_text_encoder_config_json(), &src);
    sd.text_encoder.config = parse_clip_text_config(text, src);
    text = config_text("scheduler", sd15_scheduler_config_json(), &src);
    sd.schedule = parse_schedule_config(text, src);
    sd.tokenizer = !o.config_dir.empty() && fs::is_directory(cfg / "tokenizer") ? ClipTokenizer::from_folder((cfg / "tokenizer").string())
                                                                                 : ClipTokenizer::bundled();
    const auto file = io::WeightStore::open(path);
    for (const auto& k : file.keys())
        if (starts_with(k, "cond_stage_model.model."))
            throw Error("an SD 2.x single file (OpenCLIP text encoder names) is not supported; use its diffusers folder", {path});
    sd.text_encoder.config.with_projection = false;
    {
        SkipInitGuard skip;  // every parameter is read from the file
        sd.unet.model = frozen(UNet2DConditionModel(sd.unet.config), dtype);
        sd.vae.model = frozen(AutoencoderKL(sd.vae.config), dtype);
        sd.text_encoder.model = frozen(ClipTextModel(sd.text_encoder.config), dtype);
    }
    sd.unet.dir = sd.vae.dir = sd.text_encoder.dir = path;
    std::set<std::string> used;
    std::vector<std::string> problems;
    read_sd_single_file(file, SdComponent::Unet, base_parameters(*sd.unet.model), sd.unet.config, sd.vae.config, o.ema, &used, &problems);
    read_sd_single_file(file, SdComponent::Vae, base_parameters(*sd.vae.model), sd.unet.config, sd.vae.config, false, &used, &problems);
    read_sd_single_file(file, SdComponent::TextEncoder, base_parameters(*sd.text_encoder.model), sd.unet.config, sd.vae.config, false,
                        &used, &problems);
    for (const auto& e : sd_single_file_extras(file, used)) problems.push_back("unexpected " + e);
    if (!problems.empty())
        throw Error("not a single file of this model: " + std::to_string(problems.size()) + " problems: " + join_names(problems, 12),
                    {path});
    check_parts(sd, path);
    return sd;
}

}  // namespace

StableDiffusion load_stable_diffusion(const std::string& path, c10::ScalarType dtype, const SdLoadOptions& o) {
    if (fs::is_regular_file(path)) return load_single_file(path, dtype, o);
    const fs::path d(path);
    if (!fs::is_regular_file(d / "model_index.json"))
        throw Error("not a diffusers pipeline folder (no model_index.json) nor a single-file checkpoint", {path});
    const auto index = io::read_json_file((d / "model_index.json").string());
    if (!index.is_object()) throw Error("not a JSON object", {(d / "model_index.json").string()});
    const bool vae = index_has_vae(index);
    for (const char* part : {"tokenizer", "text_encoder", "unet", "vae", "scheduler"})
        if ((vae || part != std::string("vae")) && !fs::is_directory(d / part))
            throw Error(std::string("the pipeline has no ") + part + "/ folder", {path});
    StableDiffusion sd;
    sd.dir = path;
    sd.dtype = dtype;
    sd.tokenizer = ClipTokenizer::from_folder((d / "tokenizer").string());
    if (o.random_init) {
        sd.text_encoder = random_component<LoadedClipText, ClipTextModel>(d / "text_encoder", dtype, parse_clip_text_config);
        sd.unet = random_component<LoadedUNet, UNet2DConditionModel>(d / "unet", dtype, parse_unet_config);
        if (vae) sd.vae = random_component<LoadedVae, AutoencoderKL>(d / "vae", dtype, parse_vae_config);
    } else {
        sd.text_encoder = load_clip_text((d / "text_encoder").string(), dtype, o.variant);
        sd.unet = load_unet((d / "unet").string(), dtype, o.variant);
        if (vae) sd.vae = load_vae((d / "vae").string(), dtype, o.variant);
    }
    sd.schedule = read_schedule_config((d / "scheduler" / "scheduler_config.json").string());
    check_parts(sd, path);
    return sd;
}

std::vector<std::string> load_sd_adapters(StableDiffusion& sd, const std::string& dir, bool merge) {
    const fs::path d(dir);
    std::vector<std::pair<std::string, fs::path>> parts;
    if (fs::is_regular_file(d / "adapter_config.json")) {
        parts.emplace_back("unet", d);
    } else {
        for (const char* part : {"unet", "text_encoder"})
            if (fs::is_regular_file(d / part / "adapter_config.json")) parts.emplace_back(part, d / part);
    }
    if (parts.empty())
        throw Error("no PEFT adapter here: expected adapter_config.json, or unet/ or text_encoder/ holding one", {dir});
    std::vector<std::string> loaded;
    for (const auto& [part, path] : parts) {
        std::shared_ptr<torch::nn::Module> base =
            part == "unet" ? std::static_pointer_cast<torch::nn::Module>(sd.unet.model.ptr())
                           : std::static_pointer_cast<torch::nn::Module>(sd.text_encoder.model.ptr());
        auto peft = std::make_shared<PeftModel>(base);
        peft->load_adapter(path.string());
        if (merge) peft->merge_and_unload();
        sd.adapters.push_back(peft);
        loaded.push_back(part);
    }
    return loaded;
}

void save_stable_diffusion(const StableDiffusion& sd, const std::string& dir) {
    if (fs::exists(dir)) throw Error("already exists; give a new folder", {dir});
    const fs::path tmp = fs::path(dir).string() + ".tmp";
    if (fs::exists(tmp)) throw Error("a folder of that name is in the way; remove it first", {tmp.string()});
    try {
        io::make_dirs(tmp.string());
        write_stable_diffusion(sd, tmp.string());
        fs::rename(tmp, dir);
    } catch (...) {
        std::error_code ec;
        fs::remove_all(tmp, ec);  // nothing half-written stays behind
        throw;
    }
}

void write_stable_diffusion(const StableDiffusion& sd, const std::string& dir) {
    const fs::path tmp(dir);
    auto save_part = [&](const char* part, const std::string& file, const torch::nn::Module& m, const std::string& config) {
        io::make_dirs((tmp / part).string());
        io::NamedTensors tensors;
        for (auto& [name, p] : base_parameters(m)) tensors.emplace_back(name, p.detach().contiguous());
        io::save_safetensors((tmp / part / file).string(), tensors, {{"format", "pt"}});
        io::write_file_atomically((tmp / part / "config.json").string(), config);
    };
    save_part("unet", "diffusion_pytorch_model.safetensors", *sd.unet.model, unet_config_json(sd.unet.config));
    if (sd.has_vae()) save_part("vae", "diffusion_pytorch_model.safetensors", *sd.vae.model, vae_config_json(sd.vae.config));
    save_part("text_encoder", "model.safetensors", *sd.text_encoder.model, clip_text_config_json(sd.text_encoder.config));
    sd.tokenizer->save_folder((tmp / "tokenizer").string());
    io::make_dirs((tmp / "scheduler").string());
    io::write_file_atomically((tmp / "scheduler" / "scheduler_config.json").string(), schedule_config_json(sd.schedule));
    const nlohmann::ordered_json index = {{"_class_name", "StableDiffusionPipeline"},
                                          {"_diffusers_version", "0.25.1"},
                                          {"feature_extractor", {nullptr, nullptr}},
                                          {"safety_checker", {nullptr, nullptr}},
                                          {"scheduler", {"diffusers", "PNDMScheduler"}},
                                          {"text_encoder", {"transformers", "CLIPTextModel"}},
                                          {"tokenizer", {"transformers", "CLIPTokenizer"}},
                                          {"unet", {"diffusers", "UNet2DConditionModel"}},
                                          {"vae", sd.has_vae() ? nlohmann::ordered_json{"diffusers", "AutoencoderKL"}
                                                               : nlohmann::ordered_json{nullptr, nullptr}}};
    io::write_file_atomically((tmp / "model_index.json").string(), index.dump(2) + "\n");
}

void save_sd_single_file(const StableDiffusion& sd, const std::string& path) {
    if (!sd.has_vae()) throw Error("a pixel-space pipeline (no VAE) has no SD 1.x single-file layout", {sd.dir});
    if (sd.unet.config.use_linear_projection || sd.text_encoder.config.hidden_act != "quick_gelu")
        throw Error("only SD 1.x models convert to a single file (this one has SD 2.x's linear projections or text encoder)",
                    {sd.dir});
    auto tensors = sd_to_single_file(base_parameters(*sd.unet.model), base_parameters(*sd.vae.model),
                                     base_parameters(*sd.text_encoder.model), sd.unet.config, sd.vae.config);
    for (auto& [k, t] : tensors) t = t.detach().contiguous();
    io::save_safetensors(path, tensors, {{"format", "pt"}});
}

torch::Tensor encode_prompt(StableDiffusion& sd, const std::string& text, bool* truncated) {
    const ClipIds ids = sd.tokenizer->encode_padded(text);
    if (truncated) *truncated = ids.truncated;
    const int64_t vocab = sd.text_encoder.config.vocab_size;
    for (auto id : ids.ids)
        if (id < 0 || id >= vocab)
            throw Error("token id " + std::to_string(id) + " is outside the text encoder's vocabulary of " + std::to_string(vocab),
                        {sd.dir});
    torch::NoGradGuard ng;
    auto input = torch::tensor(ids.ids, torch::kLong).unsqueeze(0);
    return sd.text_encoder.model->forward(input).last_hidden_state;
}

torch::Tensor to_pixels(const torch::Tensor& image01) {
    return (image01.to(torch::kFloat) * 255).round().to(torch::kUInt8).permute({0, 2, 3, 1}).contiguous();
}

Generated generate(StableDiffusion& sd, const GenerateOptions& o) {
    const int64_t factor = sd.vae_scale_factor();
    const int64_t height = o.height ? o.height : sd.unet.config.sample_size * factor;
    const int64_t width = o.width ? o.width : sd.unet.config.sample_size * factor;
    if (height <= 0 || width <= 0 || height % 8 || width % 8)
        throw Error("width and height must be positive multiples of 8, got " + std::to_string(width) + "x" + std::to_string(height));
    if (o.steps < 1) throw Error("steps must be at least 1, got " + std::to_string(o.steps));
    if (o.num_images < 1) throw Error("num_images must be at least 1, got " + std::to_string(o.num_images));
    auto scheduler = make_scheduler(o.scheduler, sd.schedule);
    scheduler->set_timesteps(o.steps);
    sd.unet.model->set_attention_chunk(o.attention_chunk);
    torch::NoGradGuard ng;

    Generated g;
    const bool cfg = o.guidance > 1.0;
    const bool batch = !o.prompts.empty();  // one image per prompt
    const int64_t images = batch ? static_cast<int64_t>(o.prompts.size()) : o.num_images;
    bool truncated = false, neg_truncated = false;
    if (batch) {
        std::vector<torch::Tensor> embeds;
        for (const auto& p : o.prompts) {
            bool t = false;
            embeds.push_back(encode_prompt(sd, p, &t));
            truncated = truncated || t;
        }
        g.prompt_embeds = torch::cat(embeds);
    } else {
        g.prompt_embeds = encode_prompt(sd, o.prompt, &truncated);
    }
    const std::string keep = std::to_string(sd.tokenizer->max_length() - 2);
    if (truncated) log_warning("a prompt is longer than " + keep + " tokens; only the first " + keep + " are used");
    g.truncated = truncated;
    auto context = batch ? g.prompt_embeds : g.prompt_embeds.repeat({images, 1, 1});
    if (cfg) {
        g.negative_prompt_embeds = encode_prompt(sd, o.negative_prompt, &neg_truncated);
        if (neg_truncated) log_warning("the negative prompt is longer than " + keep + " tokens; only the first " + keep + " are used");
        context = torch::cat({g.negative_prompt_embeds.repeat({images, 1, 1}), context});
    }

    const std::vector<int64_t> shape = {images, sd.unet.config.in_channels, height / factor, width / factor};
    auto gen = at::detail::createCPUGenerator(o.seed);
    torch::Tensor latents;
    if (o.latents.defined()) {
        if (o.latents.sizes() != c10::IntArrayRef(shape))
            throw Error("initial latents must be " + c10::str(c10::IntArrayRef(shape)) + ", got " + c10::str(o.latents.sizes()));
        latents = o.latents.to(sd.dtype);
    } else {
        latents = torch::randn(shape, gen, torch::TensorOptions().dtype(sd.dtype));  // as diffusers' randn_tensor on the CPU
    }
    latents = latents * scheduler->init_noise_sigma();
    torch::Tensor residual;
    if (o.input_residual.defined()) {
        const auto& r = o.input_residual;
        if (r.dim() != 4 || (r.size(0) != 1 && r.size(0) != images) || r.size(2) != shape[2] || r.size(3) != shape[3])
            throw Error("the input residual must be [1 or " + std::to_string(images) + ", C, " + std::to_string(shape[2]) + ", " +
                        std::to_string(shape[3]) + "], got " + c10::str(r.sizes()));
        residual = r.to(sd.dtype).expand({images, r.size(1), r.size(2), r.size(3)});
        if (cfg) residual = torch::cat({residual, residual});
    }
    const auto& steps = scheduler->timesteps();
    for (size_t k = 0; k < steps.size(); ++k) {
        const int64_t t = steps[k];
        auto input = scheduler->scale_model_input(cfg ? torch::cat({latents, latents}) : latents, k);
        auto eps = sd.unet.model->forward(input, scheduler->model_timestep(k), context, residual);
        if (cfg) {
            auto parts = eps.chunk(2);
            eps = guidance(parts[0], parts[1], o.guidance);
        }
        torch::Tensor noise;
        if (scheduler->name() == "ddpm") noise = torch::randn(eps.sizes(), gen, eps.options());
        latents = scheduler->step(eps, t, latents, noise).prev_sample;
        if (o.on_step) o.on_step(static_cast<int64_t>(k), t, latents);
    }
    g.latents = latents;
    auto decoded = sd.has_vae() ? sd.vae.model->decode(latents / sd.vae.config.scaling_factor) : latents;
    g.image = (decoded / 2 + 0.5).clamp(0, 1);
    g.pixels = to_pixels(g.image);
    return g;
}

}  // namespace hra::diffusion
