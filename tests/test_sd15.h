// The SD 1.5-shaped UNet of the parameter-count tests (built without initialising
// its 860M weights) and HRA's parameter count on a placement of it.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "adapters/layers.h"
#include "adapters/peft_model.h"
#include "models/model_weights.h"
#include "models/unet_2d_condition.h"

namespace hra::test {

// SD 1.5's unet/config.json.
inline const std::string kSd15UnetConfig = R"({"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false, "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
        "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]})";

// HRA of rank r on `targets` of the SD 1.5 UNet: (adapted layers, parameters of U).
inline std::pair<size_t, int64_t> hra_on_sd15(const std::vector<std::string>& targets, int64_t r) {
    const auto c = parse_unet_config(kSd15UnetConfig, "sd15.json");
    SkipInitGuard skip;
    UNet2DConditionModel m(c);
    InjectOptions io;
    io.default_targets = targets;
    io.model_type = "UNet2DConditionModel";
    io.output_layers = {};
    PeftModel peft(m.ptr(), io);
    auto cfg = AdapterConfig::of("HRA");
    cfg.r = r;
    cfg.target_modules = ModuleSelector::of(targets);
    const size_t layers = peft.add_adapter("hra", cfg).size();
    int64_t n = 0;
    for (const auto& [name, p] : unique_named_parameters(*m))
        if (name.find(".adapters.hra.hra_u") != std::string::npos) n += p.numel();
    return {layers, n};
}

}  // namespace hra::test
