#include "models/sd_checkpoint.h"

#include <algorithm>
#include <regex>

#include <torch/torch.h>

#include "common/error.h"
#include "common/strings.h"

namespace hra {

namespace {

const char* kUnetPrefix = "model.diffusion_model.";
const char* kVaePrefix = "first_stage_model.";
const char* kTextPrefix = "cond_stage_model.transformer.";

std::string replace_head(const std::string& rest, const std::vector<std::pair<const char*, const char*>>& map) {
    for (const auto& [from, to] : map)
        if (starts_with(rest, std::string(from) + ".")) return to + rest.substr(std::string(from).size());
    return rest;
}

std::string unet_resnet(const std::string& rest) {
    return replace_head(rest, {{"norm1", "in_layers.0"},
                               {"conv1", "in_layers.2"},
                               {"norm2", "out_layers.0"},
                               {"conv2", "out_layers.3"},
                               {"time_emb_proj", "emb_layers.1"},
                               {"conv_shortcut", "skip_connection"}});
}

std::string vae_resnet(const std::string& rest) { return replace_head(rest, {{"conv_shortcut", "nin_shortcut"}}); }

std::string unet_name(const std::string& n, const UNetConfig& c) {
    static const std::regex down_res(R"(^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$)");
    static const std::regex down_sample(R"(^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$)");
    static const std::regex up_res(R"(^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$)");
    static const std::regex up_sample(R"(^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$)");
    static const std::regex mid(R"(^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$)");
    const int64_t L = c.layers_per_block;
    std::smatch m;
    auto num = [&](int k) { return std::stoll(m[k].str()); };
    if (std::regex_match(n, m, down_res)) {
        const bool res = m[2] == "resnets";
        return "input_blocks." + std::to_string((L + 1) * num(1) + num(3) + 1) + (res ? ".0." + unet_resnet(m[4]) : ".1." + m[4].str());
    }
    if (std::regex_match(n, m, down_sample)) return "input_blocks." + std::to_string((L + 1) * (num(1) + 1)) + ".0.op." + m[2].str();
    if (std::regex_match(n, m, up_res)) {
        const bool res = m[2] == "resnets";
        return "output_blocks." + std::to_string((L + 1) * num(1) + num(3)) + (res ? ".0." + unet_resnet(m[4]) : ".1." + m[4].str());
    }
    if (std::regex_match(n, m, up_sample)) {
        const auto i = static_cast<size_t>(num(1));
        const bool attn = i < c.up_cross.size() && c.up_cross[i];
        return "output_blocks." + std::to_string((L + 1) * num(1) + L) + (attn ? ".2.conv." : ".1.conv.") + m[2].str();
    }
    if (std::regex_match(n, m, mid)) {
        if (m[1] == "attentions") return "middle_block.1." + m[3].str();
        return "middle_block." + std::to_string(2 * num(2)) + "." + unet_resnet(m[3]);
    }
    const std::string top = replace_head(n, {{"time_embedding.linear_1", "time_embed.0"},
                                             {"time_embedding.linear_2", "time_embed.2"},
                                             {"conv_in", "input_blocks.0.0"},
                                             {"conv_norm_out", "out.0"},
                                             {"conv_out", "out.2"}});
    if (top == n) throw Error("no single-file name for the UNet parameter '" + n + "'");
    return top;
}

std::string vae_name(const std::string& n, const VaeConfig& c) {
    static const std::regex enc_res(R"(^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$)");
    static const std::regex enc_sample(R"(^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)$)");
    static const std::regex dec_res(R"(^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$)");
    static const std::regex dec_sample(R"(^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)$)");
    static const std::regex mid_res(R"(^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)$)");
    static const std::regex mid_attn(R"(^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.+)$)");
    static const std::regex plain(R"(^(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(.+)$)");
    const int64_t levels = static_cast<int64_t>(c.block_out_channels.size());
    std::smatch m;
    auto num = [&](int k) { return std::stoll(m[k].str()); };
    if (std::regex_match(n, m, enc_res))
        return "encoder.down." + m[1].str() + ".block." + m[2].str() + "." + vae_resnet(m[3]);
    if (std::regex_match(n, m, enc_sample)) return "encoder.down." + m[1].str() + ".downsample." + m[2].str();
    if (std::regex_match(n, m, dec_res))
        return "decoder.up." + std::to_string(levels - 1 - num(1)) + ".block." + m[2].str() + "." + vae_resnet(m[3]);
    if (std::regex_match(n, m, dec_sample)) return "decoder.up." + std::to_string(levels - 1 - num(1)) + ".upsample." + m[2].str();
    if (std::regex_match(n, m, mid_res)) return m[1].str() + ".mid.block_" + std::to_string(num(2) + 1) + "." + vae_resnet(m[3]);
    if (std::regex_match(n, m, mid_attn)) {
        const std::string part = m[2] == "group_norm" ? "norm" : m[2] == "to_out.0" ? "proj_out" : m[2].str().substr(3);
        return m[1].str() + ".mid.attn_1." + part + "." + m[3].str();
    }
    if (std::regex_match(n, m, plain)) return m[1].str() + "." + (m[2] == "conv_norm_out" ? "norm_out" : m[2].str()) + "." + m[3].str();
    if (starts_with(n, "quant_conv.") || starts_with(n, "post_quant_conv.")) return n;
    throw Error("no single-file name for the VAE parameter '" + n + "'");
}

bool is_vae_attention(const std::string& single_file_name) {
    static const std::regex re(R"(^first_stage_model\.(encoder|decoder)\.mid\.attn_1\.(q|k|v|proj_out)\.(weight|bias)$)");
    return std::regex_match(single_file_name, re);
}

}  // namespace

std::string sd_single_file_name(SdComponent component, const std::string& n, const UNetConfig& unet, const VaeConfig& vae) {
    switch (component) {
        case SdComponent::Unet: return kUnetPrefix + unet_name(n, unet);
        case SdComponent::Vae: return kVaePrefix + vae_name(n, vae);
        case SdComponent::TextEncoder: return kTextPrefix + n;
    }
    return n;
}

std::string sd_ema_name(const std::string& name) {
    std::string rest = name.substr(std::string("model.").size());
    rest.erase(std::remove(rest.begin(), rest.end(), '.'), rest.end());
    return "model_ema." + rest;
}

void read_sd_single_file(const io::WeightStore& file, SdComponent component, const std::map<std::string, torch::Tensor>& params,
                         const UNetConfig& unet, const VaeConfig& vae, bool ema, std::set<std::string>* used,
                         std::vector<std::string>* problems) {
    torch::NoGradGuard ng;
    for (const auto& [name, p] : params) {
        std::string key = sd_single_file_name(component, name, unet, vae);
        if (ema && component == SdComponent::Unet) key = sd_ema_name(key);
        if (!file.contains(key)) {
            problems->push_back("missing " + key);
            continue;
        }
        used->insert(key);
        auto t = file.get(key);
        // ldm keeps the VAE attention as 1×1 convolutions ([C, C, 1, 1]); diffusers'
        // conversion script also writes their biases as [C, 1, 1].
        if (is_vae_attention(key) && t.dim() > p.dim() && t.numel() == p.numel() &&
            std::all_of(t.sizes().begin() + p.dim(), t.sizes().end(), [](int64_t d) { return d == 1; }))
            t = t.reshape(p.sizes());
        if (t.sizes() != p.sizes()) {
            problems->push_back(key + " is " + c10::str(t.sizes()) + ", expected " + c10::str(p.sizes()));
            continue;
        }
        p.copy_(t.to(p.scalar_type()));
    }
}

std::vector<std::string> sd_single_file_extras(const io::WeightStore& file, const std::set<std::string>& used) {
    static const std::set<std::string> schedule = {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "model_ema.decay",
        "model_ema.num_updates", "cond_stage_model.transformer.text_model.embeddings.position_ids"};
    // The UNet copy not read (EMA or not) is expected too.
    const bool read_ema = std::any_of(used.begin(), used.end(), [](const std::string& k) { return starts_with(k, "model_ema."); });
    std::vector<std::string> extra;
    for (const auto& k : file.keys()) {
        if (used.count(k) || schedule.count(k)) continue;
        if (read_ema ? starts_with(k, kUnetPrefix) : starts_with(k, "model_ema.")) continue;
        extra.push_back(k);
    }
    return extra;
}

std::vector<std::pair<std::string, torch::Tensor>> sd_to_single_file(const std::map<std::string, torch::Tensor>& unet_params,
                                                                     const std::map<std::string, torch::Tensor>& vae_params,
                                                                     const std::map<std::string, torch::Tensor>& text_params,
                                                                     const UNetConfig& unet, const VaeConfig& vae) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    std::set<std::string> seen;
    auto add = [&](SdComponent c, const std::map<std::string, torch::Tensor>& params) {
        for (const auto& [name, t] : params) {
            const std::string key = sd_single_file_name(c, name, unet, vae);
            if (!seen.insert(key).second) throw Error("two parameters map to the single-file name '" + key + "'");
            out.emplace_back(key, is_vae_attention(key) && t.dim() == 2 ? t.view({t.size(0), t.size(1), 1, 1}) : t);
        }
    };
    add(SdComponent::Unet, unet_params);
    add(SdComponent::Vae, vae_params);
    add(SdComponent::TextEncoder, text_params);
    return out;
}

std::string sd15_unet_config_json() {
    return R"({"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false, "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
  "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
)";
}

std::string sd15_vae_config_json() {
    return R"({"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
  "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
  "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
  "sample_size": 512, "scaling_factor": 0.18215,
  "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}
)";
}

std::string sd15_text_encoder_config_json() {
    return R"({"architectures": ["CLIPTextModel"], "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "quick_gelu",
  "hidden_size": 768, "intermediate_size": 3072, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
  "model_type": "clip_text_model", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
  "projection_dim": 768, "vocab_size": 49408}
)";
}

std::string sd15_scheduler_config_json() {
    return R"({"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
  "steps_offset": 1, "trained_betas": null}
)";
}

}  // namespace hra
