// LLaMA-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM...), modules named
// exactly as Hugging Face checkpoints: model.embed_tokens,
// model.layers.N.self_attn.{q,k,v,o}_proj, model.layers.N.mlp.{gate,up,down}_proj,
// model.layers.N.{input,post_attention}_layernorm, model.norm, lm_head.
// Every projection is an hra::Linear, so adapters attach by those names.
#pragma once

#include <memory>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include "adapters/layers.h"
#include "models/llama_config.h"

namespace hra {

// y = weight · x / sqrt(mean(x²) + eps), normalised in float32 (float64 stays
// float64), scaled in the input dtype, as transformers does.
class RMSNormImpl : public torch::nn::Module {
public:
    RMSNormImpl(int64_t size, double eps);
    torch::Tensor forward(const torch::Tensor& x) const;
    torch::Tensor weight;

private:
    double eps_;
};
TORCH_MODULE(RMSNorm);

class EmbeddingImpl : public torch::nn::Module {
public:
    EmbeddingImpl(int64_t count, int64_t dim);
    torch::Tensor forward(const torch::Tensor& ids) const;
    torch::Tensor weight;  // [count, dim]
};
TORCH_MODULE(Embedding);

// Keys (after RoPE) and values per layer, [B, n_kv, capacity, D]; grows by doubling.
class KVCache {
public:
    int64_t length() const { return length_; }
    void clear();
    // Appends [B, n_kv, T, D] at `layer` and returns the cached keys and values so far.
    std::pair<torch::Tensor, torch::Tensor> append(size_t layer, const torch::Tensor& k, const torch::Tensor& v);
    // Called once per forward, after every layer appended its T new entries.
    void advance(int64_t t) { length_ += t; }
    // Cached keys/values of a layer, [B, n_kv, length, D].
    torch::Tensor keys(size_t layer) const;
    torch::Tensor values(size_t layer) const;

private:
    struct Layer {
        torch::Tensor k, v;
    };
    std::vector<Layer> layers_;
    int64_t length_ = 0;
};

// What every layer of one forward pass shares.
struct AttentionContext {
    torch::Tensor cos, sin;  // [B, T, D] in the compute dtype
    torch::Tensor mask;      // additive [B, 1, T, S], float32 or wider
    KVCache* cache = nullptr;
    bool fused = false;      // libtorch's fused attention (libtorch >= 2)
};

class LlamaAttentionImpl : public torch::nn::Module {
public:
    explicit LlamaAttentionImpl(const LlamaConfig& c);
    // x [B, T, hidden] -> [B, T, hidden]
    torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, size_t layer);
    Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

private:
    int64_t heads_, kv_heads_, head_dim_;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
public:
    explicit LlamaMLPImpl(const LlamaConfig& c);
    torch::Tensor forward(const torch::Tensor& x);
    Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaDecoderLayerImpl : public torch::nn::Module {
public:
    explicit LlamaDecoderLayerImpl(const LlamaConfig& c);
    torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, size_t layer);
    LlamaAttention self_attn{nullptr};
    LlamaMLP mlp{nullptr};
    RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(LlamaDecoderLayer);

class LlamaModelImpl : public torch::nn::Module {
public:
    explicit LlamaModelImpl(const LlamaConfig& c);
    Embedding embed_tokens{nullptr};
    torch::nn::ModuleList layers{nullptr};
    RMSNorm norm{nullptr};
};
TORCH_MODULE(LlamaModel);

struct LlamaInputs {
    torch::Tensor input_ids;       // [B, T] int64
    torch::Tensor inputs_embeds;   // [B, T, hidden]: used instead of embedding input_ids when defined
    torch::Tensor attention_mask;  // [B, past + T], 1 = token, 0 = padding; undefined = all tokens
    torch::Tensor position_ids;    // [B, T]; undefined = past + 0..T-1
    KVCache* cache = nullptr;      // incremental decoding when given
    bool output_hidden_states = false;
    bool last_position_only = false;  // logits for the last position only ([B, 1, V])
};

struct LlamaOutputs {
    torch::Tensor logits;  // [B, T, V] in the compute dtype
    // embeddings, outputs of layers 0..L-2, then model.norm of the last layer's output
    std::vector<torch::Tensor> hidden_states;
};

class LlamaForCausalLMImpl : public torch::nn::Module {
public:
    explicit LlamaForCausalLMImpl(const LlamaConfig& c);
    LlamaOutputs forward(const LlamaInputs& in);
    torch::Tensor forward(const torch::Tensor& input_ids);  // logits

    const LlamaConfig& config() const { return config_; }
    LlamaModel model{nullptr};
    Linear lm_head{nullptr};

    // Force the math attention path even where the fused op exists (tests).
    bool force_math_attention = false;
    // Activation checkpointing in training: each decoder layer is recomputed in backward.
    void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
    bool gradient_checkpointing() const { return gradient_checkpointing_; }

private:
    torch::Tensor inv_freq(c10::ScalarType dtype, const torch::Device& device);
    LlamaConfig config_;
    bool gradient_checkpointing_ = false;
    torch::Tensor inv_freq_f32_, inv_freq_f64_;
};
TORCH_MODULE(LlamaForCausalLM);

// Mean cross-entropy of logits[:, :-1] against labels[:, 1:], ignoring -100
// (the shift is done here, as transformers does); float32 or wider.
torch::Tensor causal_lm_loss(const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace hra
