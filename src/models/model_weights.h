// Generic weight loading for every model family: dtype names, parameters by
// Hugging Face name, and the strict copy of a weight file into a model
// (missing, unexpected and mis-shaped keys are one error naming them).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/ScalarType.h>
#include <torch/nn/module.h>

#include "io/weights.h"

namespace hra {

// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16", "float64"; "auto" and ""
// give `fallback`. hra::Error otherwise.
c10::ScalarType parse_dtype(const std::string& name, c10::ScalarType fallback = c10::ScalarType::Float);

// Parameters without duplicates (a tied head shares the embedding), by name.
std::vector<std::pair<std::string, torch::Tensor>> unique_named_parameters(const torch::nn::Module& m);

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

// A component folder: `dir` itself when it holds config.json, else dir/<sub>
// when that does (a diffusers pipeline folder and its unet/, vae/, ...).
std::string component_folder(const std::string& dir, const std::string& sub);

// A loaded model for inference: cast to `dtype`, eval mode, no gradients.
template <class Holder>
Holder frozen(Holder model, c10::ScalarType dtype) {
    model->to(dtype);
    model->eval();
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    return model;
}

}  // namespace hra
