#include "models/llama.h"
#include "models/checkpoint.h"

#include <cmath>
#include <limits>
#include <unordered_set>

#include <torch/torch.h>

#include "common/error.h"
#include "common/torch_compat.h"
#include "models/rope.h"

namespace hra {

namespace {

// float32 for the half types (transformers' norm and softmax precision), else the dtype itself.
c10::ScalarType at_least_float(c10::ScalarType t) {
    return (t == torch::kDouble) ? torch::kDouble : torch::kFloat;
}

}  // namespace

// ---------------------------------------------------------------- RMSNorm, Embedding

RMSNormImpl::RMSNormImpl(int64_t size, double eps) : eps_(eps) {
    weight = register_parameter("weight", torch::ones({size}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) const {
    const auto in_type = x.scalar_type();
    auto h = x.to(at_least_float(in_type));
    auto variance = h.pow(2).mean(-1, /*keepdim=*/true);
    h = h * torch::rsqrt(variance + eps_);
    return weight * h.to(in_type);
}

EmbeddingImpl::EmbeddingImpl(int64_t count, int64_t dim) {
    weight = register_parameter("weight", torch::empty({count, dim}));
    if (!SkipInitGuard::active()) {
        torch::NoGradGuard ng;
        weight.normal_();
    }
}

torch::Tensor EmbeddingImpl::forward(const torch::Tensor& ids) const { return torch::embedding(weight, ids); }

// ---------------------------------------------------------------- KV cache

void KVCache::clear() {
    layers_.clear();
    length_ = 0;
}

std::pair<torch::Tensor, torch::Tensor> KVCache::append(size_t layer, const torch::Tensor& k, const torch::Tensor& v) {
    if (layers_.size() <= layer) layers_.resize(layer + 1);
    Layer& l = layers_[layer];
    const int64_t t = k.size(2), need = length_ + t;
    if (!l.k.defined() || l.k.size(2) < need) {
        int64_t cap = std::max<int64_t>(need, l.k.defined() ? 2 * l.k.size(2) : 64);
        auto nk = torch::empty({k.size(0), k.size(1), cap, k.size(3)}, k.options());
        auto nv = torch::empty({v.size(0), v.size(1), cap, v.size(3)}, v.options());
        if (length_ > 0) {
            nk.narrow(2, 0, length_).copy_(l.k.narrow(2, 0, length_));
            nv.narrow(2, 0, length_).copy_(l.v.narrow(2, 0, length_));
        }
        l.k = nk;
        l.v = nv;
    }
    l.k.narrow(2, length_, t).copy_(k);
    l.v.narrow(2, length_, t).copy_(v);
    return {l.k.narrow(2, 0, need), l.v.narrow(2, 0, need)};
}

torch::Tensor KVCache::keys(size_t layer) const { return layers_.at(layer).k.narrow(2, 0, length_); }
torch::Tensor KVCache::values(size_t layer) const { return layers_.at(layer).v.narrow(2, 0, length_); }

// ---------------------------------------------------------------- attention

LlamaAttentionImpl::LlamaAttentionImpl(const LlamaConfig& c)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
    q_proj = register_module("q_proj", Linear(c.hidden_size, c.q_dim(), c.qkv_bias));
    k_proj = register_module("k_proj", Linear(c.hidden_size, c.kv_dim(), c.qkv_bias));
    v_proj = register_module("v_proj", Linear(c.hidden_size, c.kv_dim(), c.qkv_bias));
    o_proj = register_module("o_proj", Linear(c.q_dim(), c.hidden_size, c.o_bias));
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, size_t layer) {
    const int64_t b = x.size(0), t = x.size(1);
    auto q = q_proj(x).view({b, t, heads_, head_dim_}).transpose(1, 2);
    auto k = k_proj(x).view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
    auto v = v_proj(x).view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
    q = apply_rope(q, ctx.cos, ctx.sin);
    k = apply_rope(k, ctx.cos, ctx.sin);
    if (ctx.cache) std::tie(k, v) = ctx.cache->append(layer, k, v);
    const int64_t s = k.size(2), rep = heads_ / kv_heads_;
    torch::Tensor out;  // [B, H, T, D]
#if HRA_TORCH_HAS_SDPA
    if (ctx.fused) {
        auto kr = rep > 1 ? k.repeat_interleave(rep, 1) : k;
        auto vr = rep > 1 ? v.repeat_interleave(rep, 1) : v;
        out = compat::fused_attention(q, kr, vr, ctx.mask.to(q.scalar_type()));
    }
#endif
    if (!out.defined()) {
        // Math path, transformers' eager order: (q·kᵀ)/√d + mask, softmax in float32
        // (float64 stays float64), then ·v. Query heads sharing a KV head are folded
        // into the rows instead of repeating K and V.
        auto qg = q.reshape({b, kv_heads_, rep * t, head_dim_});
        auto scores = torch::matmul(qg, k.transpose(2, 3)) / std::sqrt(static_cast<double>(head_dim_));
        scores = scores.view({b, kv_heads_, rep, t, s});
        const auto st = at_least_float(q.scalar_type());
        auto probs = torch::softmax(scores.to(st) + ctx.mask.unsqueeze(2).to(st), -1).to(q.scalar_type());
        out = torch::matmul(probs.view({b, kv_heads_, rep * t, s}), v).view({b, heads_, t, head_dim_});
    }
    return o_proj(out.transpose(1, 2).reshape({b, t, heads_ * head_dim_}));
}

LlamaMLPImpl::LlamaMLPImpl(const LlamaConfig& c) {
    gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
    up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, c.mlp_bias));
    down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, c.mlp_bias));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) {
    return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

LlamaDecoderLayerImpl::LlamaDecoderLayerImpl(const LlamaConfig& c) {
    self_attn = register_module("self_attn", LlamaAttention(c));
    mlp = register_module("mlp", LlamaMLP(c));
    input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
    post_attention_layernorm = register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor LlamaDecoderLayerImpl::forward(const torch::Tensor& x, const AttentionContext& ctx, size_t layer) {
    auto h = x + self_attn(input_layernorm(x), ctx, layer);
    return h + mlp(post_attention_layernorm(h));
}

LlamaModelImpl::LlamaModelImpl(const LlamaConfig& c) {
    embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(LlamaDecoderLayer(c));
    norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

// ---------------------------------------------------------------- causal LM

LlamaForCausalLMImpl::LlamaForCausalLMImpl(const LlamaConfig& c) : config_(c) {
    model = register_module("model", LlamaModel(c));
    lm_head = register_module("lm_head", c.tie_word_embeddings ? Linear(model->embed_tokens->weight)
                                                               : Linear(c.hidden_size, c.vocab_size, false));
}

torch::Tensor LlamaForCausalLMImpl::inv_freq(c10::ScalarType dtype, const torch::Device& device) {
    auto& cached = dtype == torch::kDouble ? inv_freq_f64_ : inv_freq_f32_;
    if (!cached.defined() || cached.device() != device)
        cached = rope_inv_freq(config_.head_dim, config_.rope_theta, config_.rope_scaling, dtype).to(device);
    return cached;
}

LlamaOutputs LlamaForCausalLMImpl::forward(const LlamaInputs& in) {
    torch::Tensor h;
    if (in.inputs_embeds.defined()) {
        if (in.inputs_embeds.dim() != 3) throw Error("inputs_embeds must be [batch, tokens, hidden]");
        h = in.inputs_embeds;
    } else {
        if (in.input_ids.dim() != 2) throw Error("input_ids must be [batch, tokens], got " + c10::str(in.input_ids.sizes()));
        h = model->embed_tokens(in.input_ids);
    }
    const int64_t b = h.size(0), t = h.size(1);
    const int64_t past = in.cache ? in.cache->length() : 0, total = past + t;
    const auto dtype = h.scalar_type();
    const auto device = h.device();

    AttentionContext ctx;
    ctx.cache = in.cache;
    ctx.fused = compat::has_fused_attention() && !force_math_attention;
    auto positions = in.position_ids.defined()
                         ? in.position_ids
                         : torch::arange(past, total, torch::TensorOptions().dtype(torch::kLong).device(device))
                               .unsqueeze(0)
                               .expand({b, t});
    // RoPE tables in float32 (float64 for float64 models), then cast, as transformers does.
    auto [cos, sin] = rope_cos_sin(inv_freq(at_least_float(dtype), device), positions);
    ctx.cos = cos.to(dtype);
    ctx.sin = sin.to(dtype);

    // Additive mask [B, 1, T, S]: key j is visible to query i (cache slot past+i)
    // iff j <= past+i, j is not padding, and (sliding window) j > past+i-window.
    const auto mtype = at_least_float(dtype);
    auto qpos = torch::arange(past, total, torch::TensorOptions().dtype(torch::kLong).device(device)).unsqueeze(1);
    auto kpos = torch::arange(0, total, torch::TensorOptions().dtype(torch::kLong).device(device)).unsqueeze(0);
    auto visible = (kpos <= qpos).unsqueeze(0).expand({b, t, total});
    if (config_.sliding_window) visible = visible.logical_and((kpos > qpos - *config_.sliding_window).unsqueeze(0));
    if (in.attention_mask.defined()) {
        if (in.attention_mask.dim() != 2 || in.attention_mask.size(0) != b || in.attention_mask.size(1) != total)
            throw Error("attention_mask must be [batch, past + tokens] = [" + std::to_string(b) + ", " +
                        std::to_string(total) + "], got " + c10::str(in.attention_mask.sizes()));
        visible = visible.logical_and(in.attention_mask.to(device).ne(0).unsqueeze(1));
    }
    const double lowest = mtype == torch::kDouble ? std::numeric_limits<double>::lowest()
                                                  : static_cast<double>(std::numeric_limits<float>::lowest());
    ctx.mask = torch::zeros({b, t, total}, torch::TensorOptions().dtype(mtype).device(device))
                   .masked_fill(visible.logical_not(), lowest)
                   .unsqueeze(1);

    LlamaOutputs out;
    if (in.output_hidden_states) out.hidden_states.push_back(h);
    const size_t n = model->layers->size();
    for (size_t i = 0; i < n; ++i) {
        auto layer = model->layers->ptr<LlamaDecoderLayerImpl>(i);
        if (gradient_checkpointing_ && is_training() && !in.cache)
            h = checkpointed([layer, ctx, i](const torch::Tensor& x) { return layer->forward(x, ctx, i); }, h);
        else
            h = layer->forward(h, ctx, i);
        if (in.output_hidden_states && i + 1 < n) out.hidden_states.push_back(h);
    }
    if (in.cache) in.cache->advance(t);
    h = model->norm(h);
    if (in.output_hidden_states) out.hidden_states.push_back(h);
    if (in.last_position_only) h = h.narrow(1, t - 1, 1);
    out.logits = lm_head(h);
    return out;
}

torch::Tensor LlamaForCausalLMImpl::forward(const torch::Tensor& input_ids) {
    LlamaInputs in;
    in.input_ids = input_ids;
    return forward(in).logits;
}

torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& labels) {
    const int64_t v = logits.size(-1);
    auto shifted = logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, v});
    auto targets = labels.narrow(1, 1, labels.size(1) - 1).reshape({-1}).to(logits.device());
    return torch::nn::functional::cross_entropy(
        shifted.to(at_least_float(logits.scalar_type())), targets,
        torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
}

}  // namespace hra
