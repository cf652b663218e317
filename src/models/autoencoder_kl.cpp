#include "models/autoencoder_kl.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/torch_compat.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/json_value.h"
#include "io/weights.h"
#include "models/config_bounds.h"
#include "models/diffusion_layers.h"
#include "models/model_weights.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr double kVaeEps = 1e-6;

Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1, int64_t padding = 0) {
    return diffusion_conv(in, out, k, stride, padding);
}

torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels) { return diffusion_group_norm(groups, channels, kVaeEps); }

}  // namespace

VaeConfig parse_vae_config(const std::string& text, const std::string& source) {
    const json j = io::parse_json(text, source);
    if (!j.is_object()) throw Error("config is not a JSON object", {source});
    VaeConfig c;
    c.in_channels = io::json_value_or<int64_t>(j, "in_channels", c.in_channels, source);
    c.out_channels = io::json_value_or<int64_t>(j, "out_channels", c.out_channels, source);
    c.latent_channels = io::json_value_or<int64_t>(j, "latent_channels", c.latent_channels, source);
    c.block_out_channels = io::json_value_or<std::vector<int64_t>>(j, "block_out_channels", c.block_out_channels, source);
    c.layers_per_block = io::json_value_or<int64_t>(j, "layers_per_block", c.layers_per_block, source);
    c.norm_num_groups = io::json_value_or<int64_t>(j, "norm_num_groups", c.norm_num_groups, source);
    c.scaling_factor = io::json_value_or<double>(j, "scaling_factor", c.scaling_factor, source);
    const std::string act = io::json_value_or<std::string>(j, "act_fn", "silu", source);
    if (act != "silu") throw Error("act_fn '" + act + "' is not supported (silu)", {source, "act_fn"});
    if (c.block_out_channels.empty()) throw Error("must not be empty", {source, "block_out_channels"});
    if (c.norm_num_groups < 1) throw Error("must be positive", {source, "norm_num_groups"});
    for (auto ch : c.block_out_channels)
        if (ch <= 0 || ch % c.norm_num_groups != 0)
            throw Error("every entry must be a positive multiple of norm_num_groups (" + std::to_string(c.norm_num_groups) + ")",
                        {source, "block_out_channels"});
    for (const char* key : {"down_block_types", "up_block_types"}) {
        const auto types = io::json_value_or<std::vector<std::string>>(j, key, {}, source);
        const std::string want = std::string(key) == "down_block_types" ? "DownEncoderBlock2D" : "UpDecoderBlock2D";
        if (!types.empty() && types.size() != c.block_out_channels.size())
            throw Error("one entry per block_out_channels entry", {source, key});
        for (const auto& t : types)
            if (t != want) throw Error("block type '" + t + "' is not supported (" + want + ")", {source, key});
    }
    if (c.layers_per_block < 1 || c.in_channels < 1 || c.out_channels < 1 || c.latent_channels < 1)
        throw Error("channel and layer counts must be positive", {source});
    bounds::within(c.block_out_channels, 1, bounds::kMaxChannels, source, "block_out_channels");
    bounds::within(static_cast<int64_t>(c.block_out_channels.size()), 1, 16, source, "block_out_channels");
    bounds::within(c.layers_per_block, 1, bounds::kMaxBlockDepth, source, "layers_per_block");
    bounds::within(c.in_channels, 1, 4096, source, "in_channels");
    bounds::within(c.out_channels, 1, 4096, source, "out_channels");
    bounds::within(c.latent_channels, 1, 4096, source, "latent_channels");
    bounds::parameter_budget(parameters_at_least(c), source);
    return c;
}

double parameters_at_least(const VaeConfig& c) {
    // Encoder and decoder: layers_per_block and one more resnets per block, two 3x3 convolutions each.
    double params = 0;
    for (auto ch : c.block_out_channels)
        params += static_cast<double>(2 * c.layers_per_block + 1) * 18 * static_cast<double>(ch) * static_cast<double>(ch);
    return params;
}

VaeResnetImpl::VaeResnetImpl(int64_t in, int64_t out, int64_t groups) {
    norm1 = register_module("norm1", group_norm(groups, in));
    conv1 = register_module("conv1", conv(in, out, 3, 1, 1));
    norm2 = register_module("norm2", group_norm(groups, out));
    conv2 = register_module("conv2", conv(out, out, 3, 1, 1));
    if (in != out) conv_shortcut = register_module("conv_shortcut", conv(in, out, 1));
}

torch::Tensor VaeResnetImpl::forward(const torch::Tensor& x) {
    auto h = conv1(torch::silu(norm1(x)));
    h = conv2(torch::silu(norm2(h)));
    return (conv_shortcut ? conv_shortcut(x) : x) + h;
}

VaeAttentionImpl::VaeAttentionImpl(int64_t channels, int64_t groups) {
    group_norm = register_module("group_norm", hra::group_norm(groups, channels));
    to_q = register_module("to_q", Linear(channels, channels));
    to_k = register_module("to_k", Linear(channels, channels));
    to_v = register_module("to_v", Linear(channels, channels));
    auto out = register_module("to_out", torch::nn::ModuleList());
    to_out = Linear(channels, channels);
    out->push_back(to_out);
}

torch::Tensor VaeAttentionImpl::forward(const torch::Tensor& x) {
    const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
    // diffusers' AttnProcessor: tokens [B, HW, C], group norm over channels, one head.
    auto tokens = x.view({b, c, h * w}).transpose(1, 2);
    auto normed = group_norm(tokens.transpose(1, 2)).transpose(1, 2);
    auto q = to_q(normed), k = to_k(normed), v = to_v(normed);
    const double scale = 1.0 / std::sqrt(static_cast<double>(c));
    auto scores = compat::scaled_bmm(q, k.transpose(-1, -2), scale);
    auto probs = scores.to(torch::kFloat).softmax(-1).to(q.scalar_type());  // upcast_softmax: float32, as diffusers
    auto out = to_out(torch::bmm(probs, v));
    return out.transpose(-1, -2).reshape({b, c, h, w}) + x;
}

VaeMidBlockImpl::VaeMidBlockImpl(int64_t channels, int64_t groups) {
    resnets = register_module("resnets", torch::nn::ModuleList());
    attentions = register_module("attentions", torch::nn::ModuleList());
    resnets->push_back(VaeResnet(channels, channels, groups));
    attentions->push_back(VaeAttention(channels, groups));
    resnets->push_back(VaeResnet(channels, channels, groups));
}

torch::Tensor VaeMidBlockImpl::forward(const torch::Tensor& x) {
    auto h = resnets[0]->as<VaeResnet>()->forward(x);
    h = attentions[0]->as<VaeAttention>()->forward(h);
    return resnets[1]->as<VaeResnet>()->forward(h);
}

VaeBlockImpl::VaeBlockImpl(Kind kind, int64_t in, int64_t out, int64_t n, int64_t groups, bool resample) : kind_(kind) {
    resnets = register_module("resnets", torch::nn::ModuleList());
    for (int64_t i = 0; i < n; ++i) resnets->push_back(VaeResnet(i == 0 ? in : out, out, groups));
    if (resample) {
        auto list = register_module(kind == Kind::Down ? "downsamplers" : "upsamplers", torch::nn::ModuleList());
        auto holder = std::make_shared<torch::nn::Module>();
        resample_conv = holder->register_module("conv", kind == Kind::Down ? conv(out, out, 3, 2, 0) : conv(out, out, 3, 1, 1));
        list->push_back(holder);
    }
}

torch::Tensor VaeBlockImpl::forward(const torch::Tensor& x) {
    auto h = x;
    for (const auto& r : *resnets) h = r->as<VaeResnet>()->forward(h);
    if (!resample_conv) return h;
    if (kind_ == Kind::Down) return resample_conv(torch::constant_pad_nd(h, {0, 1, 0, 1}, 0));  // right and bottom
    namespace F = torch::nn::functional;
    auto up = F::interpolate(h, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
    return resample_conv(up);
}

VaeCoderImpl::VaeCoderImpl(const VaeConfig& c, bool encoder) : encoder_(encoder) {
    const auto& ch = c.block_out_channels;
    const int64_t g = c.norm_num_groups, levels = static_cast<int64_t>(ch.size());
    conv_in = register_module("conv_in", conv(encoder ? c.in_channels : c.latent_channels, encoder ? ch.front() : ch.back(), 3, 1, 1));
    blocks = register_module(encoder ? "down_blocks" : "up_blocks", torch::nn::ModuleList());
    if (encoder) {
        int64_t prev = ch.front();
        for (int64_t i = 0; i < levels; ++i) {
            const int64_t out = ch[static_cast<size_t>(i)];
            blocks->push_back(VaeBlock(VaeBlockImpl::Kind::Down, prev, out, c.layers_per_block, g, i + 1 < levels));
            prev = out;
        }
    }
    mid_block = register_module("mid_block", VaeMidBlock(ch.back(), g));
    if (!encoder) {
        int64_t prev = ch.back();
        for (int64_t i = 0; i < levels; ++i) {
            const int64_t out = ch[static_cast<size_t>(levels - 1 - i)];
            blocks->push_back(VaeBlock(VaeBlockImpl::Kind::Up, prev, out, c.layers_per_block + 1, g, i + 1 < levels));
            prev = out;
        }
    }
    const int64_t last = encoder ? ch.back() : ch.front();
    conv_norm_out = register_module("conv_norm_out", group_norm(g, last));
    conv_out = register_module("conv_out", conv(last, encoder ? 2 * c.latent_channels : c.out_channels, 3, 1, 1));
}

torch::Tensor VaeCoderImpl::forward(const torch::Tensor& x, std::map<std::string, torch::Tensor>* acts) {
    auto keep = [&](const std::string& name, const torch::Tensor& t) {
        if (acts) (*acts)[name] = t;
    };
    auto h = conv_in(x);
    keep("conv_in", h);
    const std::string blocks_name = encoder_ ? "down_blocks." : "up_blocks.";
    if (!encoder_) {
        h = mid_block(h);
        keep("mid_block", h);
    }
    for (size_t i = 0; i < blocks->size(); ++i) {
        h = blocks[i]->as<VaeBlock>()->forward(h);
        keep(blocks_name + std::to_string(i), h);
    }
    if (encoder_) {
        h = mid_block(h);
        keep("mid_block", h);
    }
    h = conv_out(torch::silu(conv_norm_out(h)));
    keep("conv_out", h);
    return h;
}

AutoencoderKLImpl::AutoencoderKLImpl(const VaeConfig& c) : c_(c) {
    encoder = register_module("encoder", VaeCoder(c, true));
    decoder = register_module("decoder", VaeCoder(c, false));
    quant_conv = register_module("quant_conv", conv(2 * c.latent_channels, 2 * c.latent_channels, 1));
    post_quant_conv = register_module("post_quant_conv", conv(c.latent_channels, c.latent_channels, 1));
}

LatentDistribution AutoencoderKLImpl::encode(const torch::Tensor& image, std::map<std::string, torch::Tensor>* acts) {
    const int64_t factor = int64_t{1} << (c_.block_out_channels.size() - 1);
    if (image.dim() != 4 || image.size(1) != c_.in_channels || image.size(2) % factor || image.size(3) % factor)
        throw Error("the VAE encodes [B, " + std::to_string(c_.in_channels) + ", H, W] with H and W multiples of " +
                    std::to_string(factor) + ", got " + c10::str(image.sizes()));
    std::map<std::string, torch::Tensor> enc;
    auto h = encoder(image, acts ? &enc : nullptr);
    auto moments = quant_conv(h);
    if (acts) {
        for (auto& [k, v] : enc) (*acts)["encoder." + k] = v;
        (*acts)["quant_conv"] = moments;
    }
    auto parts = moments.chunk(2, 1);
    LatentDistribution d;
    d.mean = parts[0];
    d.logvar = torch::clamp(parts[1], -30.0, 20.0);
    d.std = torch::exp(0.5 * d.logvar);
    return d;
}

torch::Tensor AutoencoderKLImpl::decode(const torch::Tensor& z, std::map<std::string, torch::Tensor>* acts) {
    if (z.dim() != 4 || z.size(1) != c_.latent_channels)
        throw Error("the VAE decodes [B, " + std::to_string(c_.latent_channels) + ", h, w], got " + c10::str(z.sizes()));
    auto h = post_quant_conv(z);
    std::map<std::string, torch::Tensor> dec;
    auto out = decoder(h, acts ? &dec : nullptr);
    if (acts) {
        (*acts)["post_quant_conv"] = h;
        for (auto& [k, v] : dec) (*acts)["decoder." + k] = v;
    }
    return out;
}

LoadedVae load_vae(const std::string& dir, c10::ScalarType dtype, const std::string& variant) {
    const fs::path d(component_folder(dir, "vae"));
    LoadedVae out;
    out.dir = d.string();
    const std::string cfg = io::file_in_folder(d.string(), "config.json");
    out.config = parse_vae_config(io::read_file(cfg), cfg);
    {
        SkipInitGuard skip;  // every parameter is read from the file
        out.model = frozen(AutoencoderKL(out.config), dtype);
    }
    const auto store = io::WeightStore::open(d.string(), variant);
    // Older diffusers attention names, as ModelMixin._convert_deprecated_attention_blocks reads them.
    std::map<std::string, torch::Tensor> params;
    for (auto& [name, p] : base_parameters(*out.model)) {
        std::string file_name = name;
        if (!store.contains(name)) {
            for (auto [now, old] : {std::pair<const char*, const char*>{".to_q.", ".query."}, {".to_k.", ".key."},
                                    {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}}) {
                const auto at = name.find(now);
                if (at == std::string::npos) continue;
                const std::string alt = name.substr(0, at) + old + name.substr(at + std::string(now).size());
                if (store.contains(alt)) file_name = alt;
            }
        }
        params.emplace(file_name, p);
    }
    load_named_weights(params, store);
    return out;
}


std::string vae_config_json(const VaeConfig& c) {
    const size_t n = c.block_out_channels.size();
    nlohmann::ordered_json j = {{"_class_name", "AutoencoderKL"},
                                {"act_fn", "silu"},
                                {"block_out_channels", c.block_out_channels},
                                {"down_block_types", std::vector<std::string>(n, "DownEncoderBlock2D")},
                                {"in_channels", c.in_channels},
                                {"latent_channels", c.latent_channels},
                                {"layers_per_block", c.layers_per_block},
                                {"norm_num_groups", c.norm_num_groups},
                                {"out_channels", c.out_channels},
                                {"scaling_factor", c.scaling_factor},
                                {"up_block_types", std::vector<std::string>(n, "UpDecoderBlock2D")}};
    return j.dump(2) + "\n";
}

}  // namespace hra
