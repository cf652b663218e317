// The LoRA baseline with PEFT's semantics: W + scaling·B·A, scaling = lora_alpha/r
// (lora_alpha/√r with use_rslora), dropout on the adapter's input, B = 0 at init.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "adapters/adapter.h"
#include "adapters/config.h"

namespace hra {

struct LoraOptions {
    int64_t r = 8;
    double lora_alpha = 8;
    double lora_dropout = 0;
    bool init_lora_weights = true;  // false: B random too (not the identity), as PEFT
    bool use_rslora = false;
};

// The options of a LoRA configuration (its method keys, PEFT's defaults filled in).
LoraOptions lora_options(const AdapterConfig& config);

class LoraAdapterImpl : public AdapterImpl {
public:
    LoraAdapterImpl(const LayerShape& shape, const LoraOptions& options, const torch::TensorOptions& tensor_options);

    // Linear: A [r, in], B [out, r]. Conv2d: A [r, in, kh, kw] (same stride,
    // padding, dilation as the layer), B [out, r, 1, 1].
    torch::Tensor lora_A, lora_B;

    double scaling() const { return scaling_; }
    int64_t r() const { return options_.r; }
    const LoraOptions& options() const { return options_; }
    // scaling·B·A as [out, d].
    torch::Tensor delta_weight() const;

    const char* peft_type() const override { return "LORA"; }
    bool multiplicative() const override { return false; }
    c10::ScalarType dtype() const override { return lora_A.scalar_type(); }
    torch::Tensor merge_weight(const torch::Tensor& w_flat) const override;
    torch::Tensor unmerge_weight(const torch::Tensor& w_flat) const override;
    torch::Tensor output_delta(const torch::Tensor& x) const override;
    double row_cost() const override;
    std::vector<std::pair<std::string, torch::Tensor>> peft_tensors() const override {
        return {{"lora_A.weight", lora_A}, {"lora_B.weight", lora_B}};
    }
    void pretty_print(std::ostream& stream) const override;

private:
    LoraOptions options_;
    double scaling_;
};
TORCH_MODULE(LoraAdapter);

}  // namespace hra
