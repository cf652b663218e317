// Hugging Face model folders <-> LlamaForCausalLM: strict weight loading
// (missing, unexpected and mis-shaped keys are one error naming them) and the
// state dict under HF names for writing merged models.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/weights.h"
#include "models/llama.h"

namespace hra {

// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16", "float64"; "auto" and ""
// give `fallback`. hra::Error otherwise.
c10::ScalarType parse_dtype(const std::string& name, c10::ScalarType fallback = c10::ScalarType::Float);
std::string dtype_label(c10::ScalarType t);  // "float32", "bfloat16", ...

struct LoadOptions {
    c10::ScalarType dtype = c10::ScalarType::Float;  // compute dtype of the base model
    std::string device = "cpu";
};

struct LoadedModel {
    std::string dir;
    LlamaConfig config;
    LlamaForCausalLM model{nullptr};
};

// config.json + weights (model.safetensors or sharded with an index).
LoadedModel load_llama(const std::string& dir, const LoadOptions& options = {});

// Parameters by HF name, adapter parameters (".adapters.") left out.
std::map<std::string, torch::Tensor> base_parameters(const torch::nn::Module& model);

struct StrictLoadReport {
    std::vector<std::string> ignored;      // keys in the file that `ignore` accepted
    std::vector<std::string> not_in_file;  // parameters that `may_be_missing` accepted (left as they were)
};

// Copies every tensor of `store` into the parameter of the same name (cast to
// its dtype). Keys without a parameter, parameters without a key and shape or
// dtype mismatches are one hra::Error naming them, except for the keys and
// parameters the two predicates accept.
StrictLoadReport load_named_weights(const std::map<std::string, torch::Tensor>& params, const io::WeightStore& store,
                                    const std::function<bool(const std::string&)>& ignore = {},
                                    const std::function<bool(const std::string&)>& may_be_missing = {});

// Copies `store`'s tensors into the model (cast to each parameter's dtype).
// Ignored: a tied lm_head.weight, *.rotary_emb.inv_freq buffers.
void load_llama_weights(LlamaForCausalLMImpl& model, const io::WeightStore& store);

// The base model's parameters under HF names (adapters left out; a tied
// lm_head.weight dropped, as save_pretrained does), cast to `dtype`.
io::NamedTensors llama_state_dict(const LlamaForCausalLMImpl& model, c10::ScalarType dtype);

}  // namespace hra
