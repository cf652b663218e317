#include "models/deberta.h"

#include <cmath>

#include <torch/torch.h>

#include "common/error.h"

namespace hra {

namespace {

torch::nn::LayerNorm layer_norm(const DebertaConfig& c, int64_t size) {
    return torch::nn::LayerNorm(torch::nn::LayerNormOptions({size}).eps(c.layer_norm_eps));
}

// sqrt(head_size * factor) computed in float32, as transformers does.
double attention_scale(int64_t head_size, int factor) {
    return static_cast<double>(std::sqrt(static_cast<float>(head_size) * static_cast<float>(factor)));
}

}  // namespace

PaddedEmbeddingImpl::PaddedEmbeddingImpl(int64_t count, int64_t dim, int64_t padding_idx) : padding_idx_(padding_idx) {
    weight = register_parameter("weight", torch::empty({count, dim}));
    if (!SkipInitGuard::active()) {
        torch::NoGradGuard ng;
        weight.normal_();
    }
}

torch::Tensor PaddedEmbeddingImpl::forward(const torch::Tensor& ids) const {
    return torch::embedding(weight, ids, padding_idx_);
}

torch::Tensor deberta_relative_positions(int64_t q, int64_t k, int64_t buckets, int64_t max_position) {
    auto opts = torch::TensorOptions().dtype(torch::kLong);
    auto rel = torch::arange(q, opts).unsqueeze(1) - torch::arange(k, opts).unsqueeze(0);
    if (buckets <= 0 || max_position <= 0) return rel;
    // make_log_bucket_position, in float32 like the original.
    const int64_t mid = buckets / 2;
    auto sign = torch::sign(rel);
    auto abs_pos = torch::where(rel.lt(mid).logical_and(rel.gt(-mid)), torch::full_like(rel, mid - 1), rel.abs());
    auto ratio = torch::log(torch::tensor(static_cast<float>(static_cast<double>(max_position - 1) / mid)));
    auto log_pos = torch::ceil(torch::log(abs_pos.to(torch::kFloat) / mid) / ratio * (mid - 1)) + mid;
    auto bucket = torch::where(abs_pos.le(mid), rel.to(torch::kFloat), log_pos * sign);
    return bucket.to(torch::kLong);
}

// ---------------------------------------------------------------- embeddings

DebertaEmbeddingsImpl::DebertaEmbeddingsImpl(const DebertaConfig& c) : c_(c) {
    word_embeddings = register_module("word_embeddings", PaddedEmbedding(c.vocab_size, c.embedding_size, c.pad_token_id));
    if (c.position_biased_input)
        position_embeddings = register_module("position_embeddings", PaddedEmbedding(c.max_position_embeddings, c.embedding_size));
    if (c.type_vocab_size > 0)
        token_type_embeddings = register_module("token_type_embeddings", PaddedEmbedding(c.type_vocab_size, c.embedding_size));
    if (c.embedding_size != c.hidden_size) embed_proj = register_module("embed_proj", Linear(c.embedding_size, c.hidden_size, false));
    LayerNorm = register_module("LayerNorm", layer_norm(c, c.hidden_size));
}

torch::Tensor DebertaEmbeddingsImpl::forward(const torch::Tensor& ids, const torch::Tensor& mask, const torch::Tensor& types) {
    auto e = word_embeddings(ids);
    if (position_embeddings) {
        auto pos = torch::arange(ids.size(1), torch::TensorOptions().dtype(torch::kLong).device(ids.device())).unsqueeze(0);
        e = e + position_embeddings(pos);
    }
    if (token_type_embeddings) e = e + token_type_embeddings(types.defined() ? types : torch::zeros_like(ids));
    if (embed_proj) e = embed_proj(e);
    e = LayerNorm(e);
    e = e * mask.unsqueeze(2).to(e.scalar_type());
    return torch::dropout(e, c_.hidden_dropout_prob, is_training());
}

// ---------------------------------------------------------------- attention

DisentangledSelfAttentionImpl::DisentangledSelfAttentionImpl(const DebertaConfig& c) : c_(c) {
    const int64_t all = c.num_attention_heads * c.attention_head_size;
    query_proj = register_module("query_proj", Linear(c.hidden_size, all, true));
    key_proj = register_module("key_proj", Linear(c.hidden_size, all, true));
    value_proj = register_module("value_proj", Linear(c.hidden_size, all, true));
    if (c.relative_attention && !c.share_att_key) {
        if (c.c2p) pos_key_proj = register_module("pos_key_proj", Linear(c.hidden_size, all, true));
        if (c.p2c) pos_query_proj = register_module("pos_query_proj", Linear(c.hidden_size, all, true));
    }
}

torch::Tensor DisentangledSelfAttentionImpl::heads(const torch::Tensor& x) const {
    const int64_t b = x.size(0), t = x.size(1), h = c_.num_attention_heads;
    return x.view({b, t, h, -1}).permute({0, 2, 1, 3}).contiguous().view({b * h, t, -1});
}

std::pair<torch::Tensor, torch::Tensor> DisentangledSelfAttentionImpl::forward(const torch::Tensor& hs, const torch::Tensor& mask4,
                                                                               const torch::Tensor& relative_pos,
                                                                               const torch::Tensor& rel_embeddings_in) {
    const int64_t b = hs.size(0), t = hs.size(1), h = c_.num_attention_heads;
    auto q = heads(query_proj(hs)), k = heads(key_proj(hs)), v = heads(value_proj(hs));
    const int factor = 1 + (c_.c2p ? 1 : 0) + (c_.p2c ? 1 : 0);
    const double scale = attention_scale(q.size(-1), factor);
    auto scores = torch::bmm(q, k.transpose(-1, -2) / scale);
    if (c_.relative_attention) {
        auto rel = torch::dropout(rel_embeddings_in, c_.hidden_dropout_prob, is_training());
        const int64_t span = c_.att_span();
        rel = rel.narrow(0, 0, std::min<int64_t>(2 * span, rel.size(0))).unsqueeze(0);
        auto repeat = [&](const torch::Tensor& x) { return x.repeat({b, 1, 1}); };
        torch::Tensor pos_q, pos_k;
        if (c_.share_att_key) {
            pos_q = repeat(heads(query_proj(rel)));
            pos_k = repeat(heads(key_proj(rel)));
        } else {
            if (c_.c2p) pos_k = repeat(heads(pos_key_proj(rel)));
            if (c_.p2c) pos_q = repeat(heads(pos_query_proj(rel)));
        }
        torch::Tensor bias;
        if (c_.c2p) {
            auto c2p = torch::bmm(q, pos_k.transpose(-1, -2));
            auto idx = torch::clamp(relative_pos + span, 0, 2 * span - 1).unsqueeze(0).expand({b * h, t, t});
            c2p = torch::gather(c2p, -1, idx);
            bias = c2p / attention_scale(pos_k.size(-1), factor);
        }
        if (c_.p2c) {
            auto p2c = torch::bmm(k, pos_q.transpose(-1, -2));
            auto idx = torch::clamp(-relative_pos + span, 0, 2 * span - 1).unsqueeze(0).expand({b * h, t, t});
            p2c = torch::gather(p2c, -1, idx).transpose(-1, -2);
            auto term = p2c / attention_scale(pos_q.size(-1), factor);
            bias = bias.defined() ? bias + term : term;
        }
        if (bias.defined()) scores = scores + bias;
    }
    scores = scores.view({b, h, t, t});
    // XSoftmax: masked entries at the dtype's lowest value, softmax, then zeroed.
    auto hidden = mask4.logical_not();
    const double lowest = scores.scalar_type() == torch::kDouble ? std::numeric_limits<double>::lowest()
                                                                : static_cast<double>(std::numeric_limits<float>::lowest());
    auto probs = torch::softmax(scores.masked_fill(hidden, lowest), -1).masked_fill(hidden, 0);
    auto dropped = torch::dropout(probs, c_.attention_probs_dropout_prob, is_training());
    auto ctx = torch::bmm(dropped.view({b * h, t, t}), v);
    ctx = ctx.view({b, h, t, -1}).permute({0, 2, 1, 3}).contiguous().view({b, t, -1});
    return {ctx, probs};
}

DebertaAttentionImpl::DebertaAttentionImpl(const DebertaConfig& c) {
    self = register_module("self", DisentangledSelfAttention(c));
    output = register_module("output", std::make_shared<torch::nn::Module>());
    output_dense = output->register_module("dense", Linear(c.num_attention_heads * c.attention_head_size, c.hidden_size, true));
    output_norm = output->register_module("LayerNorm", layer_norm(c, c.hidden_size));
}

DebertaLayerImpl::DebertaLayerImpl(const DebertaConfig& c) : dropout_(c.hidden_dropout_prob) {
    attention = register_module("attention", DebertaAttention(c));
    auto intermediate = register_module("intermediate", std::make_shared<torch::nn::Module>());
    intermediate_dense = intermediate->register_module("dense", Linear(c.hidden_size, c.intermediate_size, true));
    auto out = register_module("output", std::make_shared<torch::nn::Module>());
    output_dense = out->register_module("dense", Linear(c.intermediate_size, c.hidden_size, true));
    output_norm = out->register_module("LayerNorm", layer_norm(c, c.hidden_size));
}

std::pair<torch::Tensor, torch::Tensor> DebertaLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& mask4,
                                                                  const torch::Tensor& relative_pos,
                                                                  const torch::Tensor& rel_embeddings) {
    auto [ctx, probs] = attention->self->forward(h, mask4, relative_pos, rel_embeddings);
    auto a = attention->output_norm(torch::dropout(attention->output_dense(ctx), dropout_, is_training()) + h);
    auto mid = torch::gelu(intermediate_dense(a));
    auto out = output_norm(torch::dropout(output_dense(mid), dropout_, is_training()) + a);
    return {out, probs};
}

// ---------------------------------------------------------------- model

DebertaModelImpl::DebertaModelImpl(const DebertaConfig& c) : c_(c) {
    embeddings = register_module("embeddings", DebertaEmbeddings(c));
    encoder = register_module("encoder", std::make_shared<torch::nn::Module>());
    layer = encoder->register_module("layer", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layer->push_back(DebertaLayer(c));
    if (c.relative_attention) {
        rel_embeddings = encoder->register_module("rel_embeddings", PaddedEmbedding(2 * c.att_span(), c.hidden_size));
        if (c.norm_rel_ebd_layer_norm) encoder_norm = encoder->register_module("LayerNorm", layer_norm(c, c.hidden_size));
    }
}

DebertaOutputs DebertaModelImpl::forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                                         const torch::Tensor& token_type_ids) {
    if (ids.dim() != 2) throw Error("input_ids must be [batch, tokens], got " + c10::str(ids.sizes()));
    DebertaOutputs out;
    auto mask = attention_mask.defined() ? attention_mask.to(ids.device()) : torch::ones_like(ids);
    auto h = embeddings->forward(ids, mask, token_type_ids);
    out.hidden_states.push_back(h);
    auto m = mask.unsqueeze(1).unsqueeze(2);  // [B, 1, 1, T]
    auto mask4 = (m * m.squeeze(-2).unsqueeze(-1)).to(torch::kBool);
    const int64_t t = ids.size(1);
    if (c_.relative_attention) {
        out.relative_pos = deberta_relative_positions(t, t, c_.position_buckets, c_.max_relative_positions).to(ids.device());
        out.rel_embeddings = encoder_norm ? encoder_norm(rel_embeddings->weight) : rel_embeddings->weight;
    }
    for (size_t i = 0; i < layer->size(); ++i) {
        auto [next, probs] = layer->ptr<DebertaLayerImpl>(i)->forward(h, mask4, out.relative_pos, out.rel_embeddings);
        h = next;
        out.hidden_states.push_back(h);
        out.attentions.push_back(probs);
    }
    out.last_hidden_state = h;
    return out;
}

DebertaForSequenceClassificationImpl::DebertaForSequenceClassificationImpl(const DebertaConfig& c) : c_(c) {
    deberta = register_module("deberta", DebertaModel(c));
    pooler = register_module("pooler", std::make_shared<torch::nn::Module>());
    pooler_dense = pooler->register_module("dense", Linear(c.pooler_hidden_size, c.pooler_hidden_size, true));
    classifier = register_module("classifier", Linear(c.pooler_hidden_size, c.num_labels, true));
}

DebertaOutputs DebertaForSequenceClassificationImpl::forward(const torch::Tensor& ids, const torch::Tensor& mask,
                                                             const torch::Tensor& token_type_ids) {
    auto out = deberta->forward(ids, mask, token_type_ids);
    auto first = torch::dropout(out.last_hidden_state.select(1, 0), c_.pooler_dropout, is_training());
    out.pooled_output = torch::gelu(pooler_dense(first));
    out.logits = classifier(torch::dropout(out.pooled_output, c_.cls_dropout, is_training()));
    return out;
}

DebertaForMaskedLMImpl::DebertaForMaskedLMImpl(const DebertaConfig& c) : c_(c) {
    deberta = register_module("deberta", DebertaModel(c));
    auto cls = register_module("cls", std::make_shared<torch::nn::Module>());
    auto predictions = cls->register_module("predictions", std::make_shared<torch::nn::Module>());
    auto transform = predictions->register_module("transform", std::make_shared<torch::nn::Module>());
    transform_dense = transform->register_module("dense", Linear(c.hidden_size, c.embedding_size, true));
    transform_norm = transform->register_module("LayerNorm", layer_norm(c, c.embedding_size));
    output_bias = predictions->register_parameter("bias", torch::zeros({c.vocab_size}));
}

DebertaOutputs DebertaForMaskedLMImpl::forward(const torch::Tensor& ids, const torch::Tensor& mask) {
    auto out = deberta->forward(ids, mask);
    auto x = transform_norm(torch::gelu(transform_dense(out.last_hidden_state)));
    out.logits = torch::linear(x, deberta->embeddings->word_embeddings->weight, output_bias);
    return out;
}

torch::Tensor deberta_classification_loss(const DebertaConfig& c, const torch::Tensor& logits, const torch::Tensor& labels) {
    namespace F = torch::nn::functional;
    const bool regression = c.problem_type == "regression" || (c.problem_type.empty() && c.num_labels == 1);
    if (regression) return F::mse_loss(logits.view({-1}), labels.view({-1}).to(logits.scalar_type()));
    auto targets = labels.view({-1}).to(torch::kLong);
    if (c.problem_type.empty()) {
        // transformers: rows with a negative label are left out, the loss in float32 or wider.
        auto keep = targets.ge(0);
        if (!keep.any().item<bool>()) return torch::zeros({}, logits.options());
        auto l = logits.index({keep});
        return F::cross_entropy(logits.scalar_type() == torch::kDouble ? l : l.to(torch::kFloat), targets.index({keep}));
    }
    return F::cross_entropy(logits.view({-1, c.num_labels}), targets);
}

}  // namespace hra
