// Hugging Face model folders <-> LlamaForCausalLM (llama, mistral, qwen2, ...):
// strict weight loading, the state dict under HF names for writing merged
// models, and the family's default adapter targets.
#pragma once

#include <string>
#include <vector>

#include "adapters/peft_model.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/llama.h"
#include "models/model_weights.h"

namespace hra {

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

// Copies `store`'s tensors into the model (cast to each parameter's dtype).
// Ignored: a tied lm_head.weight, *.rotary_emb.inv_freq buffers.
void load_llama_weights(LlamaForCausalLMImpl& model, const io::WeightStore& store);

// The base model's parameters under HF names (adapters left out; a tied
// lm_head.weight dropped, as save_pretrained does), cast to `dtype`.
io::NamedTensors llama_state_dict(const LlamaForCausalLMImpl& model, c10::ScalarType dtype);

// PEFT's default target modules for this family's model types (q_proj and
// v_proj for llama, mistral, qwen2, mixtral, gemma, phi3; none for others).
std::vector<std::string> llama_default_targets(const std::string& model_type);
// Injection options for a LLaMA-family model: those defaults, lm_head left out of all-linear.
InjectOptions llama_inject_options(const std::string& model_type);

}  // namespace hra
