// Stable Diffusion text-to-image as diffusers' StableDiffusionPipeline runs it
// (checked against diffusers v0.25.1 by sd_parity's tiny pipeline): CLIP
// prompt embeddings (77 tokens; the negative prompt, "" by default, for
// classifier-free guidance when guidance > 1), initial latents from a seeded
// CPU generator (the numbers torch.Generator().manual_seed(seed) gives on the
// CPU), the scheduler loop, the VAE decoder and diffusers' uint8 conversion.
// A pipeline without a VAE (model_index.json's "vae" null or no vae/ folder)
// denoises pixels directly, as a pixel-space model (the UNet takes 3 channels).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

#include "adapters/peft_model.h"
#include "diffusion/schedulers.h"
#include "models/autoencoder_kl.h"
#include "models/clip_text.h"
#include "models/unet_2d_condition.h"
#include "text/clip_tokenizer.h"

namespace hra::diffusion {

struct StableDiffusion {
    std::string dir;
    std::unique_ptr<ClipTokenizer> tokenizer;
    LoadedClipText text_encoder;
    LoadedUNet unet;
    LoadedVae vae;
    ScheduleConfig schedule;
    c10::ScalarType dtype = c10::ScalarType::Float;
    std::vector<std::shared_ptr<PeftModel>> adapters;  // loaded with load_sd_adapters
    bool has_vae() const { return !vae.model.is_empty(); }
    // Pixels per latent cell: 2^(VAE levels - 1), or 1 for a pixel-space pipeline.
    int64_t vae_scale_factor() const {
        return has_vae() ? int64_t{1} << (vae.config.block_out_channels.size() - 1) : 1;
    }
};

struct SdLoadOptions {
    std::string variant;  // weight files such as model.fp16.safetensors (diffusers folders)
    // Single files: a diffusers folder whose configs (unet/, vae/,
    // text_encoder/ config.json), tokenizer/ and scheduler/ describe the file
    // (default: SD 1.5's, with the bundled CLIP tokenizer).
    std::string config_dir;
    bool ema = false;  // single files: the EMA copy of the UNet (model_ema.*)
    // diffusers folders: build the models from their config.json files with
    // seeded random weights (the global generator) instead of reading weights
    // (training from scratch); weight files are not needed.
    bool random_init = false;
};

// A diffusers pipeline folder (model_index.json, tokenizer/, text_encoder/,
// unet/, vae/, scheduler/) or an SD 1.x single file (.safetensors, or a .ckpt
// through the restricted unpickler). Weights of any float dtype are cast to
// `dtype`. Missing, extra or mis-shaped tensors of a single file are one error
// listing them.
StableDiffusion load_stable_diffusion(const std::string& path, c10::ScalarType dtype = c10::ScalarType::Float,
                                      const SdLoadOptions& options = {});
// PEFT adapter folders (HRA, LoRA, ...) for the UNet and/or the text encoder:
// `dir` holds adapter_config.json (a UNet adapter) or unet/ and/or
// text_encoder/ subfolders holding one each. `merge` folds them into the
// weights (no adapter cost per step); otherwise they run as adapters. Returns
// "unet", "text_encoder" for what was loaded; an error when `dir` has neither.
std::vector<std::string> load_sd_adapters(StableDiffusion& sd, const std::string& dir, bool merge);
// Writes `sd` as a diffusers folder (a new folder; safetensors weights in their current dtype).
void save_stable_diffusion(const StableDiffusion& sd, const std::string& dir);
// The same into existing folder `dir` (each file written atomically).
void write_stable_diffusion(const StableDiffusion& sd, const std::string& dir);
// Writes `sd` as one single-file .safetensors (ldm names).
void save_sd_single_file(const StableDiffusion& sd, const std::string& path);

struct GenerateOptions {
    std::string prompt, negative_prompt;
    // One image per prompt, in one batch (instead of `prompt` × num_images).
    std::vector<std::string> prompts;
    int64_t steps = 25;
    double guidance = 7.5;
    std::string scheduler = "dpm++2m";
    int64_t width = 0, height = 0;  // 0: the UNet's sample_size × the VAE factor
    int64_t num_images = 1;
    uint64_t seed = 0;
    torch::Tensor latents;  // optional initial latents [images, in_channels, h, w] (instead of the seed's)
    int64_t attention_chunk = 0;  // query rows per attention chunk (0: all)
    // Added to the UNet after conv_in at every step (the control experiments'
    // encoded hint): [1 or images, C, h, w] with the latents' h, w; the
    // unconditional pass of guidance gets the same residual, as the seed's.
    torch::Tensor input_residual;
    // Called after every denoising step with the step index, its timestep and the latents.
    std::function<void(int64_t step, int64_t timestep, const torch::Tensor& latents)> on_step;
};

struct Generated {
    torch::Tensor prompt_embeds, negative_prompt_embeds;  // [1 or N prompts, 77, D] (negative undefined without guidance)
    torch::Tensor latents;                                // final latents [N, 4, h, w]
    torch::Tensor image;                                  // decoded, (x/2 + 0.5) clamped to [0, 1], [N, 3, H, W]
    torch::Tensor pixels;                                 // uint8 [N, H, W, 3]
    bool truncated = false;                               // a prompt had more tokens than the tokenizer keeps (75 for SD)
};

// [1, L, D] last hidden state of the text encoder for `text`, padded or cut to the tokenizer's length L (77 for SD).
torch::Tensor encode_prompt(StableDiffusion& sd, const std::string& text, bool* truncated = nullptr);
Generated generate(StableDiffusion& sd, const GenerateOptions& options);
// diffusers' postprocess: float32, ×255, round half to even, uint8, [N, H, W, 3].
torch::Tensor to_pixels(const torch::Tensor& image01);

}  // namespace hra::diffusion
