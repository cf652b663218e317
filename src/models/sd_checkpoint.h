// Stable Diffusion 1.x single-file checkpoints (v1-5-pruned.safetensors /
// .ckpt: the original CompVis ldm names) against diffusers' names, both ways,
// as diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py maps
// them (checked by sd_parity against that script's output; DIFFUSION.md §1):
//   model.diffusion_model.*            the UNet (input_blocks, middle_block, output_blocks, ...)
//   first_stage_model.*                the VAE (encoder.down.i.block.j, mid.attn_1 as 1×1 convs, ...)
//   cond_stage_model.transformer.*     the CLIP text encoder (transformers' names)
// plus the flattened EMA copy of the UNet (model_ema.diffusion_modelinput_blocks00weight).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include <torch/types.h>

#include "io/weights.h"
#include "models/autoencoder_kl.h"
#include "models/unet_2d_condition.h"

namespace hra {

enum class SdComponent { Unet, Vae, TextEncoder };

// The single-file name of a diffusers parameter name of one component (with
// its prefix). hra::Error for a name the map does not know.
std::string sd_single_file_name(SdComponent component, const std::string& diffusers_name, const UNetConfig& unet,
                                const VaeConfig& vae);
// The EMA name of a UNet single-file name: model_ema. + the name after
// "model." without dots.
std::string sd_ema_name(const std::string& single_file_name);

// Reads the tensors of `params` (diffusers names → tensors whose shapes and
// dtypes to fill) of one component from a single file, reshaping the VAE's 1×1
// attention convolutions to Linear weights. `ema` reads the UNet from its EMA
// copy. Names read are added to `used`; missing and mis-shaped tensors are
// appended to `problems`.
void read_sd_single_file(const io::WeightStore& file, SdComponent component, const std::map<std::string, torch::Tensor>& params,
                         const UNetConfig& unet, const VaeConfig& vae, bool ema, std::set<std::string>* used,
                         std::vector<std::string>* problems);
// The file's names outside `used` that are neither the other UNet copy nor
// ldm's schedule buffers (betas, alphas_cumprod, ...): tensors a loader would
// silently drop.
std::vector<std::string> sd_single_file_extras(const io::WeightStore& file, const std::set<std::string>& used);

// One single-file state dict from the three components' diffusers-named tensors.
std::vector<std::pair<std::string, torch::Tensor>> sd_to_single_file(const std::map<std::string, torch::Tensor>& unet_params,
                                                                     const std::map<std::string, torch::Tensor>& vae_params,
                                                                     const std::map<std::string, torch::Tensor>& text_params,
                                                                     const UNetConfig& unet, const VaeConfig& vae);

// SD 1.5's configs: for a single file without a config folder.
std::string sd15_unet_config_json();
std::string sd15_vae_config_json();
std::string sd15_text_encoder_config_json();
std::string sd15_scheduler_config_json();

}  // namespace hra
