#include "models/unet_2d_condition.h"

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/torch_compat.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/json_value.h"
#include "models/config_bounds.h"
#include "io/weights.h"
#include "models/diffusion_layers.h"
#include "models/model_weights.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr double kTransformerGroupNormEps = 1e-6;  // Transformer2DModel's GroupNorm, whatever norm_eps says

// An int or a list with one entry per block.
std::vector<int64_t> per_block(const json& j, const char* key, std::vector<int64_t> fallback, size_t blocks,
                               const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    std::vector<int64_t> v;
    if (j[key].is_number()) {
        v.assign(blocks, io::json_get<int64_t>(j[key], key, source));
    } else {
        v = io::json_value_or<std::vector<int64_t>>(j, key, {}, source);
        if (v.size() != blocks)
            throw Error("one entry per block (" + std::to_string(blocks) + "), got " + std::to_string(v.size()), {source, key});
    }
    for (auto x : v)
        if (x <= 0) throw Error("entries must be positive", {source, key});
    return v;
}

// config.json keys of features this runtime does not implement, with the only
// value it accepts (null: absent or null).
const std::vector<std::pair<const char*, json>>& fixed_keys() {
    static const std::vector<std::pair<const char*, json>> keys = {
        {"act_fn", "silu"},
        {"addition_embed_type", nullptr},
        {"addition_time_embed_dim", nullptr},
        {"attention_type", "default"},
        {"class_embed_type", nullptr},
        {"class_embeddings_concat", false},
        {"cross_attention_norm", nullptr},
        {"dropout", 0.0},
        {"dual_cross_attention", false},
        {"encoder_hid_dim", nullptr},
        {"encoder_hid_dim_type", nullptr},
        {"mid_block_only_cross_attention", nullptr},
        {"num_class_embeds", nullptr},
        {"only_cross_attention", false},
        {"projection_class_embeddings_input_dim", nullptr},
        {"resnet_out_scale_factor", 1.0},
        {"resnet_skip_time_act", false},
        {"resnet_time_scale_shift", "default"},
        {"reverse_transformer_layers_per_block", nullptr},
        {"time_cond_proj_dim", nullptr},
        {"time_embedding_act_fn", nullptr},
        {"time_embedding_dim", nullptr},
        {"time_embedding_type", "positional"},
        {"timestep_post_act", nullptr},
    };
    return keys;
}

bool all_false(const json& v) {
    if (v.is_boolean()) return !v.get<bool>();
    if (!v.is_array()) return false;
    for (const auto& e : v)
        if (!e.is_boolean() || e.get<bool>()) return false;
    return true;
}

}  // namespace

UNetConfig parse_unet_config(const std::string& text, const std::string& source) {
    const json j = io::parse_json(text, source);
    if (!j.is_object()) throw Error("config is not a JSON object", {source});
    const std::string cls = io::json_value_or<std::string>(j, "_class_name", "UNet2DConditionModel", source);
    if (cls != "UNet2DConditionModel") throw Error("_class_name '" + cls + "' is not UNet2DConditionModel", {source, "_class_name"});
    for (const auto& [key, want] : fixed_keys()) {
        if (!j.contains(key) || j[key].is_null()) continue;
        const json& v = j[key];
        const bool ok = std::string(key) == "only_cross_attention" ? all_false(v) : v == want;
        if (!ok) throw Error("the value " + v.dump() + " is not supported (only " + want.dump() + ")", {source, key});
    }
    UNetConfig c;
    c.in_channels = io::json_value_or<int64_t>(j, "in_channels", c.in_channels, source);
    c.out_channels = io::json_value_or<int64_t>(j, "out_channels", c.out_channels, source);
    c.sample_size = io::json_value_or<int64_t>(j, "sample_size", c.sample_size, source);
    c.block_out_channels = io::json_value_or<std::vector<int64_t>>(j, "block_out_channels", c.block_out_channels, source);
    c.layers_per_block = io::json_value_or<int64_t>(j, "layers_per_block", c.layers_per_block, source);
    c.norm_num_groups = io::json_value_or<int64_t>(j, "norm_num_groups", c.norm_num_groups, source);
    c.norm_eps = io::json_value_or<double>(j, "norm_eps", c.norm_eps, source);
    c.use_linear_projection = io::json_value_or<bool>(j, "use_linear_projection", c.use_linear_projection, source);
    c.upcast_attention = io::json_value_or<bool>(j, "upcast_attention", c.upcast_attention, source);
    c.flip_sin_to_cos = io::json_value_or<bool>(j, "flip_sin_to_cos", c.flip_sin_to_cos, source);
    c.center_input_sample = io::json_value_or<bool>(j, "center_input_sample", c.center_input_sample, source);
    c.freq_shift = io::json_value_or<double>(j, "freq_shift", c.freq_shift, source);
    c.downsample_padding = io::json_value_or<int64_t>(j, "downsample_padding", c.downsample_padding, source);
    c.mid_block_scale_factor = io::json_value_or<double>(j, "mid_block_scale_factor", c.mid_block_scale_factor, source);
    c.conv_in_kernel = io::json_value_or<int64_t>(j, "conv_in_kernel", c.conv_in_kernel, source);
    c.conv_out_kernel = io::json_value_or<int64_t>(j, "conv_out_kernel", c.conv_out_kernel, source);
    if (j.contains("cross_attention_dim") && j["cross_attention_dim"].is_array())
        throw Error("a per-block cross_attention_dim is not supported", {source, "cross_attention_dim"});
    c.cross_attention_dim = io::json_value_or<int64_t>(j, "cross_attention_dim", c.cross_attention_dim, source);

    const size_t n = c.block_out_channels.size();
    if (n == 0) throw Error("must not be empty", {source, "block_out_channels"});
    if (c.norm_num_groups < 1) throw Error("must be positive", {source, "norm_num_groups"});
    for (auto ch : c.block_out_channels)
        if (ch <= 0 || ch % c.norm_num_groups != 0)
            throw Error("every entry must be a positive multiple of norm_num_groups (" + std::to_string(c.norm_num_groups) + ")",
                        {source, "block_out_channels"});
    auto block_types = [&](const char* key, const char* cross, const char* plain, std::vector<bool> fallback) {
        if (!j.contains(key) || j[key].is_null()) {
            if (fallback.size() != n) throw Error("required when block_out_channels has " + std::to_string(n) + " entries", {source, key});
            return fallback;
        }
        const auto types = io::json_value_or<std::vector<std::string>>(j, key, {}, source);
        if (types.size() != n) throw Error("one entry per block_out_channels entry", {source, key});
        std::vector<bool> out;
        for (const auto& t : types) {
            if (t != cross && t != plain)
                throw Error("block type '" + t + "' is not supported (" + cross + " or " + plain + ")", {source, key});
            out.push_back(t == cross);
        }
        return out;
    };
    c.down_cross = block_types("down_block_types", "CrossAttnDownBlock2D", "DownBlock2D", c.down_cross);
    c.up_cross = block_types("up_block_types", "CrossAttnUpBlock2D", "UpBlock2D", c.up_cross);
    const std::string mid = io::json_value_or<std::string>(j, "mid_block_type", "UNetMidBlock2DCrossAttn", source);
    if (j.contains("mid_block_type") && j["mid_block_type"].is_null()) {
        c.mid_block = false;
    } else if (mid != "UNetMidBlock2DCrossAttn") {
        throw Error("mid block type '" + mid + "' is not supported (UNetMidBlock2DCrossAttn or null)", {source, "mid_block_type"});
    }
    // diffusers: num_attention_heads = num_attention_heads or attention_head_dim.
    c.heads = per_block(j, "attention_head_dim", std::vector<int64_t>(n, 8), n, source);
    c.heads = per_block(j, "num_attention_heads", c.heads, n, source);
    c.transformer_layers = per_block(j, "transformer_layers_per_block", std::vector<int64_t>(n, 1), n, source);
    for (size_t i = 0; i < n; ++i) {
        const bool cross = c.down_cross[i] || c.up_cross[n - 1 - i] || (i + 1 == n && c.mid_block);
        if (cross && c.block_out_channels[i] % c.heads[i] != 0)
            throw Error("block " + std::to_string(i) + ": " + std::to_string(c.block_out_channels[i]) +
                            " channels do not split into " + std::to_string(c.heads[i]) + " heads",
                        {source, "attention_head_dim"});
    }
    if (c.layers_per_block < 1 || c.in_channels < 1 || c.out_channels < 1 || c.cross_attention_dim < 1)
        throw Error("channel and layer counts must be positive", {source});
    if (c.downsample_padding < 0 || c.downsample_padding > 1) throw Error("must be 0 or 1", {source, "downsample_padding"});
    for (auto [key, k] : {std::pair<const char*, int64_t>{"conv_in_kernel", c.conv_in_kernel}, {"conv_out_kernel", c.conv_out_kernel}})
        if (k < 1 || k % 2 == 0) throw Error("must be a positive odd number", {source, key});
    bounds::within(c.block_out_channels, 1, bounds::kMaxChannels, source, "block_out_channels");
    bounds::within(static_cast<int64_t>(n), 1, 16, source, "block_out_channels");
    bounds::within(c.layers_per_block, 1, bounds::kMaxBlockDepth, source, "layers_per_block");
    bounds::within(c.transformer_layers, 1, bounds::kMaxBlockDepth, source, "transformer_layers_per_block");
    bounds::within(c.heads, 1, 4096, source, "attention_head_dim");
    bounds::within(c.in_channels, 1, 4096, source, "in_channels");
    bounds::within(c.out_channels, 1, 4096, source, "out_channels");
    bounds::within(c.cross_attention_dim, 1, bounds::kMaxChannels, source, "cross_attention_dim");
    bounds::within(c.sample_size, 1, int64_t{1} << 16, source, "sample_size");
    bounds::within(c.conv_in_kernel, 1, 31, source, "conv_in_kernel");
    bounds::within(c.conv_out_kernel, 1, 31, source, "conv_out_kernel");
    bounds::parameter_budget(parameters_at_least(c), source);
    return c;
}

double parameters_at_least(const UNetConfig& c) {
    // Down blocks hold layers_per_block resnets (two 3x3 convolutions of ch^2 x 9 each), up blocks
    // one more (a down block's first resnet may take fewer channels in; the up blocks' skip
    // inputs add more than that back); a cross-attention block adds per resnet a transformer of
    // at least 12 ch^2 + 2 ch x cross weights, counted per direction.
    double params = 0;
    const size_t n = c.block_out_channels.size();
    const double per_block = static_cast<double>(2 * c.layers_per_block + 1);
    for (size_t i = 0; i < n; ++i) {
        const double ch = static_cast<double>(c.block_out_channels[i]);
        params += per_block * 18 * ch * ch;
        const double transformer = static_cast<double>(c.transformer_layers[i]) * (12 * ch * ch + 2 * ch * static_cast<double>(c.cross_attention_dim));
        if (c.down_cross[i]) params += static_cast<double>(c.layers_per_block) * transformer;
        if (c.up_cross[n - 1 - i]) params += static_cast<double>(c.layers_per_block + 1) * transformer;
    }
    return params;
}

// ---------------------------------------------------------------------------

UNetAttentionImpl::UNetAttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads_, bool upcast_)
    : heads(heads_), upcast(upcast_) {
    to_q = register_module("to_q", Linear(query_dim, query_dim, false));
    to_k = register_module("to_k", Linear(context_dim, query_dim, false));
    to_v = register_module("to_v", Linear(context_dim, query_dim, false));
    auto out = register_module("to_out", torch::nn::ModuleList());
    to_out = Linear(query_dim, query_dim);
    out->push_back(to_out);
    out->push_back(torch::nn::Dropout(0.0));  // diffusers' to_out.1 (no parameters)
}

torch::Tensor UNetAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
    const auto& src = context.defined() ? context : x;
    const int64_t b = x.size(0), n = x.size(1), c = to_q->weight.size(0), d = c / heads;
    auto split = [&](const torch::Tensor& t) {  // [B, N, C] → [B·heads, N, d]; channel c is in head c / d
        return t.reshape({b, t.size(1), heads, d}).permute({0, 2, 1, 3}).reshape({b * heads, t.size(1), d});
    };
    auto q = split(to_q(x)), k = split(to_k(src)), v = split(to_v(src));
    const auto dtype = q.scalar_type();
    const double scale = std::pow(static_cast<double>(d), -0.5);
    if (upcast) q = q.to(torch::kFloat), k = k.to(torch::kFloat);
    auto kt = k.transpose(-1, -2);
    auto rows = [&](const torch::Tensor& qs) {
        auto scores = compat::scaled_bmm(qs, kt, scale);
        return torch::bmm(scores.softmax(-1).to(dtype), v);
    };
    torch::Tensor o;
    if (query_chunk <= 0 || query_chunk >= n) {
        o = rows(q);
    } else {
        std::vector<torch::Tensor> parts;
        for (int64_t r = 0; r < n; r += query_chunk) parts.push_back(rows(q.slice(1, r, std::min(n, r + query_chunk))));
        o = torch::cat(parts, 1);
    }
    o = o.reshape({b, heads, n, d}).permute({0, 2, 1, 3}).reshape({b, n, c});
    return to_out(o);
}

GegluFeedForwardImpl::GegluFeedForwardImpl(int64_t dim) {
    auto net = register_module("net", torch::nn::ModuleList());
    auto geglu = std::make_shared<torch::nn::Module>();
    proj = geglu->register_module("proj", Linear(dim, 8 * dim));
    net->push_back(geglu);
    net->push_back(torch::nn::Dropout(0.0));
    out = Linear(4 * dim, dim);
    net->push_back(out);
}

torch::Tensor GegluFeedForwardImpl::forward(const torch::Tensor& x) {
    auto parts = proj(x).chunk(2, -1);
    return out(parts[0] * torch::gelu(parts[1]));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t context_dim, int64_t heads, bool upcast) {
    auto ln = [&] { return torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(1e-5)); };
    norm1 = register_module("norm1", ln());
    attn1 = register_module("attn1", UNetAttention(dim, dim, heads, upcast));
    norm2 = register_module("norm2", ln());
    attn2 = register_module("attn2", UNetAttention(dim, context_dim, heads, upcast));
    norm3 = register_module("norm3", ln());
    ff = register_module("ff", GegluFeedForward(dim));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
    auto h = attn1(norm1(x)) + x;
    h = attn2(norm2(h), context) + h;
    return ff(norm3(h)) + h;
}

Transformer2DImpl::Transformer2DImpl(const UNetConfig& c, int64_t channels, int64_t heads, int64_t layers) {
    norm = register_module("norm", diffusion_group_norm(c.norm_num_groups, channels, kTransformerGroupNormEps));
    if (c.use_linear_projection)
        proj_in_linear = register_module("proj_in", Linear(channels, channels));
    else
        proj_in_conv = register_module("proj_in", diffusion_conv(channels, channels, 1));
    transformer_blocks = register_module("transformer_blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < layers; ++i)
        transformer_blocks->push_back(BasicTransformerBlock(channels, c.cross_attention_dim, heads, c.upcast_attention));
    if (c.use_linear_projection)
        proj_out_linear = register_module("proj_out", Linear(channels, channels));
    else
        proj_out_conv = register_module("proj_out", diffusion_conv(channels, channels, 1));
}

torch::Tensor Transformer2DImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
    const int64_t b = x.size(0), c = x.size(1), hh = x.size(2), ww = x.size(3);
    auto h = norm(x);
    auto to_tokens = [&](const torch::Tensor& t) { return t.permute({0, 2, 3, 1}).reshape({b, hh * ww, c}); };
    auto to_image = [&](const torch::Tensor& t) { return t.reshape({b, hh, ww, c}).permute({0, 3, 1, 2}).contiguous(); };
    h = proj_in_conv ? to_tokens(proj_in_conv(h)) : proj_in_linear(to_tokens(h));
    for (const auto& blk : *transformer_blocks) h = blk->as<BasicTransformerBlock>()->forward(h, context);
    h = proj_out_conv ? proj_out_conv(to_image(h)) : to_image(proj_out_linear(h));
    return h + x;
}

UNetResnetImpl::UNetResnetImpl(int64_t in, int64_t out, int64_t temb, int64_t groups, double eps, double scale)
    : output_scale(scale) {
    norm1 = register_module("norm1", diffusion_group_norm(groups, in, eps));
    conv1 = register_module("conv1", diffusion_conv(in, out, 3, 1, 1));
    time_emb_proj = register_module("time_emb_proj", Linear(temb, out));
    norm2 = register_module("norm2", diffusion_group_norm(groups, out, eps));
    conv2 = register_module("conv2", diffusion_conv(out, out, 3, 1, 1));
    if (in != out) conv_shortcut = register_module("conv_shortcut", diffusion_conv(in, out, 1));
}

torch::Tensor UNetResnetImpl::forward(const torch::Tensor& x, const torch::Tensor& emb) {
    auto h = conv1(torch::silu(norm1(x)));
    h = h + time_emb_proj(torch::silu(emb)).unsqueeze(-1).unsqueeze(-1);
    h = conv2(torch::silu(norm2(h)));
    auto out = (conv_shortcut ? conv_shortcut(x) : x) + h;
    return output_scale == 1.0 ? out : out / output_scale;
}

UNetBlockImpl::UNetBlockImpl(const UNetConfig& c, Kind kind, int64_t i) : kind_(kind), downsample_padding_(c.downsample_padding) {
    const auto& ch = c.block_out_channels;
    const int64_t n = static_cast<int64_t>(ch.size()), temb = c.time_embed_dim(), g = c.norm_num_groups;
    auto at = [](const std::vector<int64_t>& v, int64_t k) { return v[static_cast<size_t>(k)]; };
    resnets = register_module("resnets", torch::nn::ModuleList());
    attentions = torch::nn::ModuleList();
    int64_t out = 0, heads = 0, layers = 0;
    bool cross = false, resample = false;
    if (kind == Kind::Mid) {
        out = ch.back(), heads = c.heads.back(), layers = c.transformer_layers.back(), cross = true;
        register_module("attentions", attentions);
        resnets->push_back(UNetResnet(out, out, temb, g, c.norm_eps, c.mid_block_scale_factor));
        attentions->push_back(Transformer2D(c, out, heads, layers));
        resnets->push_back(UNetResnet(out, out, temb, g, c.norm_eps, c.mid_block_scale_factor));
        return;
    }
    if (kind == Kind::Down) {
        const int64_t in = i == 0 ? ch.front() : at(ch, i - 1);
        out = at(ch, i), heads = at(c.heads, i), layers = at(c.transformer_layers, i);
        cross = c.down_cross[static_cast<size_t>(i)], resample = i + 1 < n;
        for (int64_t k = 0; k < c.layers_per_block; ++k)
            resnets->push_back(UNetResnet(k == 0 ? in : out, out, temb, g, c.norm_eps, 1.0));
    } else {
        const int64_t r = n - 1 - i;  // the down level this up block mirrors
        const int64_t prev = i == 0 ? ch.back() : at(ch, r + 1);
        const int64_t skip_in = at(ch, std::max<int64_t>(r - 1, 0));
        out = at(ch, r), heads = at(c.heads, r), layers = at(c.transformer_layers, r);
        cross = c.up_cross[static_cast<size_t>(i)], resample = i + 1 < n;
        const int64_t count = c.layers_per_block + 1;
        for (int64_t k = 0; k < count; ++k) {
            const int64_t skip = k == count - 1 ? skip_in : out;
            resnets->push_back(UNetResnet((k == 0 ? prev : out) + skip, out, temb, g, c.norm_eps, 1.0));
        }
    }
    if (cross) {
        register_module("attentions", attentions);
        for (size_t k = 0; k < resnets->size(); ++k) attentions->push_back(Transformer2D(c, out, heads, layers));
    }
    if (resample) {
        auto list = register_module(kind == Kind::Down ? "downsamplers" : "upsamplers", torch::nn::ModuleList());
        auto holder = std::make_shared<torch::nn::Module>();
        resample_conv = holder->register_module(
            "conv", kind == Kind::Down ? diffusion_conv(out, out, 3, 2, c.downsample_padding) : diffusion_conv(out, out, 3, 1, 1));
        list->push_back(holder);
    }
}

torch::Tensor UNetBlockImpl::forward(torch::Tensor h, const torch::Tensor& emb, const torch::Tensor& context,
                                     std::vector<torch::Tensor>* skips, c10::IntArrayRef upsample_size) {
    const bool cross = !attentions->is_empty();
    for (size_t k = 0; k < resnets->size(); ++k) {
        if (kind_ == Kind::Up) {
            TORCH_CHECK(!skips->empty(), "UNet: no skip connection left");
            h = torch::cat({h, skips->back()}, 1);
            skips->pop_back();
        }
        if (kind_ == Kind::Mid && k == 1) h = attentions[0]->as<Transformer2D>()->forward(h, context);
        h = resnets[k]->as<UNetResnet>()->forward(h, emb);
        if (cross && kind_ != Kind::Mid) h = attentions[k]->as<Transformer2D>()->forward(h, context);
        if (kind_ == Kind::Down) skips->push_back(h);
    }
    if (!resample_conv) return h;
    if (kind_ == Kind::Down) {
        if (downsample_padding_ == 0) h = torch::constant_pad_nd(h, {0, 1, 0, 1}, 0);  // diffusers: right and bottom
        h = resample_conv(h);
        skips->push_back(h);
        return h;
    }
    namespace F = torch::nn::functional;
    auto opts = F::InterpolateFuncOptions().mode(torch::kNearest);
    if (upsample_size.size() == 2)
        opts.size(std::vector<int64_t>(upsample_size.begin(), upsample_size.end()));
    else
        opts.scale_factor(std::vector<double>{2.0, 2.0});
    return resample_conv(F::interpolate(h, opts));
}

UNet2DConditionModelImpl::UNet2DConditionModelImpl(const UNetConfig& c) : c_(c) {
    const auto& ch = c.block_out_channels;
    const int64_t n = static_cast<int64_t>(ch.size());
    conv_in = register_module("conv_in", diffusion_conv(c.in_channels, ch.front(), c.conv_in_kernel, 1, (c.conv_in_kernel - 1) / 2));
    auto te = register_module("time_embedding", std::make_shared<torch::nn::Module>());
    time_linear_1 = te->register_module("linear_1", Linear(ch.front(), c.time_embed_dim()));
    time_linear_2 = te->register_module("linear_2", Linear(c.time_embed_dim(), c.time_embed_dim()));
    down_blocks = register_module("down_blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < n; ++i) down_blocks->push_back(UNetBlock(c, UNetBlockImpl::Kind::Down, i));
    up_blocks = register_module("up_blocks", torch::nn::ModuleList());
    for (int64_t i = 0; i < n; ++i) up_blocks->push_back(UNetBlock(c, UNetBlockImpl::Kind::Up, i));
    if (c.mid_block) mid_block = register_module("mid_block", UNetBlock(c, UNetBlockImpl::Kind::Mid, n - 1));
    conv_norm_out = register_module("conv_norm_out", diffusion_group_norm(c.norm_num_groups, ch.front(), c.norm_eps));
    conv_out = register_module("conv_out", diffusion_conv(ch.front(), c.out_channels, c.conv_out_kernel, 1, (c.conv_out_kernel - 1) / 2));
}

torch::Tensor UNet2DConditionModelImpl::time_proj(const torch::Tensor& timestep) const {
    // diffusers' get_timestep_embedding, all in float32 whatever the model's dtype.
    const int64_t dim = c_.block_out_channels.front(), half = dim / 2;
    auto exponent = torch::arange(0, half, timestep.options().dtype(torch::kFloat)) * (-std::log(10000.0));
    exponent = exponent / (static_cast<double>(half) - c_.freq_shift);
    auto arg = timestep.to(torch::kFloat).unsqueeze(1) * torch::exp(exponent).unsqueeze(0);
    auto emb = c_.flip_sin_to_cos ? torch::cat({torch::cos(arg), torch::sin(arg)}, -1) : torch::cat({torch::sin(arg), torch::cos(arg)}, -1);
    if (dim % 2) emb = torch::constant_pad_nd(emb, {0, 1}, 0);
    return emb;
}

void UNet2DConditionModelImpl::set_attention_chunk(int64_t rows) {
    for (auto& m : modules(false))
        if (auto* a = dynamic_cast<UNetAttentionImpl*>(m.get())) a->query_chunk = rows;
}

torch::Tensor UNet2DConditionModelImpl::forward(const torch::Tensor& sample_in, const torch::Tensor& timestep,
                                                const torch::Tensor& context, const torch::Tensor& input_residual,
                                                std::map<std::string, torch::Tensor>* acts) {
    if (sample_in.dim() != 4 || sample_in.size(1) != c_.in_channels)
        throw Error("the UNet denoises [B, " + std::to_string(c_.in_channels) + ", h, w], got " + c10::str(sample_in.sizes()));
    const int64_t b = sample_in.size(0);
    if (context.dim() != 3 || context.size(0) != b || context.size(2) != c_.cross_attention_dim)
        throw Error("the UNet's context must be [" + std::to_string(b) + ", tokens, " + std::to_string(c_.cross_attention_dim) +
                    "], got " + c10::str(context.sizes()));
    if (timestep.dim() > 1 || (timestep.dim() == 1 && timestep.size(0) != b && timestep.size(0) != 1))
        throw Error("the UNet takes one timestep or one per sample, got " + c10::str(timestep.sizes()));
    auto keep = [&](const std::string& name, const torch::Tensor& t) {
        if (acts) (*acts)[name] = t;
    };
    auto sample = c_.center_input_sample ? 2 * sample_in - 1.0 : sample_in;
    auto t_emb = time_proj(timestep.reshape({-1}).expand({b}));
    keep("time_proj", t_emb);
    auto emb = time_linear_2(torch::silu(time_linear_1(t_emb.to(sample.scalar_type()))));
    keep("time_embedding", emb);

    auto h = conv_in(sample);
    if (input_residual.defined()) {
        if (input_residual.sizes() != h.sizes())
            throw Error("the UNet's input residual must be " + c10::str(h.sizes()) + ", got " + c10::str(input_residual.sizes()));
        h = h + input_residual;
    }
    keep("conv_in", h);
    std::vector<torch::Tensor> skips{h};
    for (size_t i = 0; i < down_blocks->size(); ++i) {
        h = down_blocks[i]->as<UNetBlock>()->forward(h, emb, context, &skips);
        keep("down_blocks." + std::to_string(i), h);
    }
    if (mid_block) {
        h = mid_block->forward(h, emb, context, nullptr);
        keep("mid_block", h);
    }
    for (size_t i = 0; i < up_blocks->size(); ++i) {
        auto blk = up_blocks[i]->as<UNetBlock>();
        std::vector<int64_t> size;
        if (i + 1 < up_blocks->size()) {
            const size_t left = skips.size() - static_cast<size_t>(blk->layers());
            if (left >= 1 && left <= skips.size()) size = skips[left - 1].sizes().slice(2).vec();
        }
        h = blk->forward(h, emb, context, &skips, size);
        keep("up_blocks." + std::to_string(i), h);
    }
    h = conv_norm_out(h);
    keep("conv_norm_out", h);
    return conv_out(torch::silu(h));
}

LoadedUNet load_unet(const std::string& dir, c10::ScalarType dtype, const std::string& variant) {
    const fs::path d(component_folder(dir, "unet"));
    LoadedUNet out;
    out.dir = d.string();
    const std::string cfg = io::file_in_folder(d.string(), "config.json");
    out.config = parse_unet_config(io::read_file(cfg), cfg);
    {
        SkipInitGuard skip;  // every parameter is read from the file
        out.model = frozen(UNet2DConditionModel(out.config), dtype);
    }
    const auto store = io::WeightStore::open(d.string(), variant);
    load_named_weights(base_parameters(*out.model), store);
    return out;
}


std::string unet_config_json(const UNetConfig& c) {
    std::vector<std::string> down, up;
    for (bool x : c.down_cross) down.push_back(x ? "CrossAttnDownBlock2D" : "DownBlock2D");
    for (bool x : c.up_cross) up.push_back(x ? "CrossAttnUpBlock2D" : "UpBlock2D");
    nlohmann::ordered_json j = {{"_class_name", "UNet2DConditionModel"},
                                {"act_fn", "silu"},
                                {"attention_head_dim", c.heads},
                                {"block_out_channels", c.block_out_channels},
                                {"center_input_sample", c.center_input_sample},
                                {"conv_in_kernel", c.conv_in_kernel},
                                {"conv_out_kernel", c.conv_out_kernel},
                                {"cross_attention_dim", c.cross_attention_dim},
                                {"down_block_types", down},
                                {"downsample_padding", c.downsample_padding},
                                {"flip_sin_to_cos", c.flip_sin_to_cos},
                                {"freq_shift", c.freq_shift},
                                {"in_channels", c.in_channels},
                                {"layers_per_block", c.layers_per_block},
                                {"mid_block_scale_factor", c.mid_block_scale_factor},
                                {"mid_block_type", c.mid_block ? nlohmann::ordered_json("UNetMidBlock2DCrossAttn") : nullptr},
                                {"norm_eps", c.norm_eps},
                                {"norm_num_groups", c.norm_num_groups},
                                {"out_channels", c.out_channels},
                                {"sample_size", c.sample_size},
                                {"transformer_layers_per_block", c.transformer_layers},
                                {"up_block_types", up},
                                {"upcast_attention", c.upcast_attention},
                                {"use_linear_projection", c.use_linear_projection}};
    return j.dump(2) + "\n";
}

}  // namespace hra
