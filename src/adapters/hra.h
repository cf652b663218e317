// The HRA adapter: r Householder vectors U [d, r] acting as W·H.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "adapters/adapter.h"
#include "adapters/layers.h"
#include "core/householder.h"

namespace hra {

// HRA's names for the layer's multiplicative paths (the compact WY form on the
// input or on the weight): "auto", "wy_input", "wy_weight", "reference".
MultiplyPath parse_hra_strategy(const std::string& name);
const char* hra_strategy_name(MultiplyPath path);

class HraAdapterImpl : public AdapterImpl {
public:
    // PEFT's initialisation on the CPU in float32, then moved to `options`:
    // init_weights with even r: kaiming-uniform(a=√5) on [d, r/2], each column
    // repeated twice, so H = I up to rounding; odd r warns and falls back to
    // kaiming on [d, r] (not the identity), as does init_weights = false.
    // Grouped convolutions are refused.
    HraAdapterImpl(const LayerShape& shape, int64_t r, bool apply_gs, bool init_weights,
                   const torch::TensorOptions& options);

    torch::Tensor hra_u;  // [d, r]

    int64_t r() const { return r_; }
    bool apply_gs() const { return apply_gs_; }
    core::Reflector reflector() const { return core::make_reflector(hra_u, apply_gs_); }

    const char* peft_type() const override { return "HRA"; }
    bool multiplicative() const override { return true; }
    c10::ScalarType dtype() const override { return hra_u.scalar_type(); }
    torch::Tensor merge_weight(const torch::Tensor& w_flat) const override;
    torch::Tensor unmerge_weight(const torch::Tensor& w_flat) const override;
    torch::Tensor transform_rows(const torch::Tensor& rows) const override;
    torch::Tensor reference_matrix(bool reverse = false) const override;
    double row_cost() const override;
    torch::Tensor orthogonality_penalty(core::PenaltyForm form) const override;
    std::vector<std::pair<std::string, torch::Tensor>> peft_tensors() const override { return {{"hra_u", hra_u}}; }
    void pretty_print(std::ostream& stream) const override;

private:
    int64_t r_;
    bool apply_gs_;
};
TORCH_MODULE(HraAdapter);

}  // namespace hra
