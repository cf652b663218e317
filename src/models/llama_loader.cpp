#include "models/llama_loader.h"

#include <torch/torch.h>

#include "adapters/layers.h"
#include "common/error.h"
#include "common/strings.h"

namespace hra {

void load_llama_weights(LlamaForCausalLMImpl& model, const io::WeightStore& store) {
    const bool tied = model.config().tie_word_embeddings;
    load_named_weights(base_parameters(model), store, [&](const std::string& key) {
        return ends_with(key, "rotary_emb.inv_freq") || (tied && key == "lm_head.weight");
    });
}

LoadedModel load_llama(const std::string& dir, const LoadOptions& options) {
    LoadedModel out;
    out.dir = dir;
    out.config = read_llama_config(dir);
    {
        SkipInitGuard skip;  // every parameter is overwritten from the files
        out.model = LlamaForCausalLM(out.config);
    }
    out.model->to(torch::Device(options.device), options.dtype);
    out.model->eval();
    for (auto& p : out.model->parameters()) p.set_requires_grad(false);
    load_llama_weights(*out.model, io::WeightStore::open(dir));
    return out;
}

io::NamedTensors llama_state_dict(const LlamaForCausalLMImpl& model, c10::ScalarType dtype) {
    io::NamedTensors out;
    for (auto& [name, p] : base_parameters(model)) {
        if (model.config().tie_word_embeddings && name == "lm_head.weight") continue;
        out.emplace_back(name, p.detach().to(torch::kCPU, dtype));
    }
    return out;
}

std::vector<std::string> llama_default_targets(const std::string& model_type) {
    for (const char* t : {"llama", "mistral", "qwen2", "mixtral", "gemma", "phi3"})
        if (model_type == t) return {"q_proj", "v_proj"};
    return {};
}

InjectOptions llama_inject_options(const std::string& model_type) {
    InjectOptions o;
    o.model_type = model_type;
    o.default_targets = llama_default_targets(model_type);
    o.output_layers = {"lm_head"};
    return o;
}

}  // namespace hra
