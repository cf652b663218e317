// DeBERTa-v2/v3 encoder (Hugging Face's deberta-v2 architecture): embeddings,
// disentangled self-attention with log-bucketed relative positions (c2p, p2c,
// shared attention key), post-LN blocks, the sequence-classification head
// (ContextPooler + classifier) and the masked-LM head. Module names are the HF
// state-dict names; every Linear is an hra::Linear.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include "adapters/layers.h"
#include "models/deberta_config.h"

namespace hra {

// An embedding table; gradients of the padding row stay zero.
class PaddedEmbeddingImpl : public torch::nn::Module {
public:
    PaddedEmbeddingImpl(int64_t count, int64_t dim, int64_t padding_idx = -1);
    torch::Tensor forward(const torch::Tensor& ids) const;
    torch::Tensor weight;

private:
    int64_t padding_idx_;
};
TORCH_MODULE(PaddedEmbedding);

// HF's build_relative_position with make_log_bucket_position: [T, T] int64.
torch::Tensor deberta_relative_positions(int64_t query_len, int64_t key_len, int64_t buckets, int64_t max_position);

class DebertaEmbeddingsImpl : public torch::nn::Module {
public:
    explicit DebertaEmbeddingsImpl(const DebertaConfig& c);
    torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& token_type_ids);
    PaddedEmbedding word_embeddings{nullptr}, position_embeddings{nullptr}, token_type_embeddings{nullptr};
    Linear embed_proj{nullptr};
    torch::nn::LayerNorm LayerNorm{nullptr};

private:
    DebertaConfig c_;
};
TORCH_MODULE(DebertaEmbeddings);

class DisentangledSelfAttentionImpl : public torch::nn::Module {
public:
    explicit DisentangledSelfAttentionImpl(const DebertaConfig& c);
    // h [B, T, hidden]; mask4 [B, 1, T, T] (1 = visible); returns context and probabilities.
    std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& h, const torch::Tensor& mask4,
                                                    const torch::Tensor& relative_pos, const torch::Tensor& rel_embeddings);
    Linear query_proj{nullptr}, key_proj{nullptr}, value_proj{nullptr}, pos_key_proj{nullptr}, pos_query_proj{nullptr};

private:
    torch::Tensor heads(const torch::Tensor& x) const;  // [B, T, H*d] -> [B*H, T, d]
    DebertaConfig c_;
};
TORCH_MODULE(DisentangledSelfAttention);

// attention.self / attention.output (dense, LayerNorm)
class DebertaAttentionImpl : public torch::nn::Module {
public:
    explicit DebertaAttentionImpl(const DebertaConfig& c);
    DisentangledSelfAttention self{nullptr};
    std::shared_ptr<torch::nn::Module> output;
    Linear output_dense{nullptr};
    torch::nn::LayerNorm output_norm{nullptr};
};
TORCH_MODULE(DebertaAttention);

class DebertaLayerImpl : public torch::nn::Module {
public:
    explicit DebertaLayerImpl(const DebertaConfig& c);
    std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& h, const torch::Tensor& mask4,
                                                    const torch::Tensor& relative_pos, const torch::Tensor& rel_embeddings);
    DebertaAttention attention{nullptr};
    Linear intermediate_dense{nullptr}, output_dense{nullptr};
    torch::nn::LayerNorm output_norm{nullptr};

private:
    double dropout_;
};
TORCH_MODULE(DebertaLayer);

struct DebertaOutputs {
    torch::Tensor last_hidden_state;            // [B, T, hidden]
    std::vector<torch::Tensor> hidden_states;   // embeddings, then each layer's output
    std::vector<torch::Tensor> attentions;      // [B, H, T, T] per layer
    torch::Tensor relative_pos;                 // [T, T]
    torch::Tensor rel_embeddings;               // normalised relative embeddings
    torch::Tensor pooled_output;                // classification models
    torch::Tensor logits;                       // [B, num_labels] or [B, T, vocab] (MLM)
};

// deberta.embeddings / deberta.encoder
class DebertaModelImpl : public torch::nn::Module {
public:
    explicit DebertaModelImpl(const DebertaConfig& c);
    DebertaOutputs forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                           const torch::Tensor& token_type_ids = {});
    DebertaEmbeddings embeddings{nullptr};
    std::shared_ptr<torch::nn::Module> encoder;
    torch::nn::ModuleList layer{nullptr};
    PaddedEmbedding rel_embeddings{nullptr};
    torch::nn::LayerNorm encoder_norm{nullptr};

private:
    DebertaConfig c_;
};
TORCH_MODULE(DebertaModel);

// DebertaV2ForSequenceClassification: the encoder, ContextPooler and classifier.
class DebertaForSequenceClassificationImpl : public torch::nn::Module {
public:
    explicit DebertaForSequenceClassificationImpl(const DebertaConfig& c);
    DebertaOutputs forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                           const torch::Tensor& token_type_ids = {});
    const DebertaConfig& config() const { return c_; }
    DebertaModel deberta{nullptr};
    std::shared_ptr<torch::nn::Module> pooler;
    Linear pooler_dense{nullptr}, classifier{nullptr};

private:
    DebertaConfig c_;
};
TORCH_MODULE(DebertaForSequenceClassification);

// DebertaV2ForMaskedLM: the encoder and the masked-LM head (transform, tied decoder).
class DebertaForMaskedLMImpl : public torch::nn::Module {
public:
    explicit DebertaForMaskedLMImpl(const DebertaConfig& c);
    DebertaOutputs forward(const torch::Tensor& ids, const torch::Tensor& attention_mask);
    const DebertaConfig& config() const { return c_; }
    DebertaModel deberta{nullptr};
    Linear transform_dense{nullptr};
    torch::nn::LayerNorm transform_norm{nullptr};
    torch::Tensor output_bias;  // cls.predictions.bias; the decoder is tied to the word embeddings

private:
    DebertaConfig c_;
};
TORCH_MODULE(DebertaForMaskedLM);

// HF's losses: mean cross-entropy (labels < 0 ignored when problem_type is
// unset), or mean squared error for regression (num_labels 1 or problem_type).
torch::Tensor deberta_classification_loss(const DebertaConfig& c, const torch::Tensor& logits, const torch::Tensor& labels);

}  // namespace hra
