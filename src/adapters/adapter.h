// The adapter interface: what every method (HRA, LoRA) provides to the
// adaptable layers that host it. Methods are registered in adapters/method.h.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include "core/householder.h"

namespace hra {

// Geometry of a host layer, as the adapters see it.
struct LayerShape {
    enum class Kind { Linear, Conv2d };
    Kind kind = Kind::Linear;
    int64_t in = 0;   // in_features or in_channels
    int64_t out = 0;  // out_features or out_channels
    std::array<int64_t, 2> kernel{1, 1}, stride{1, 1}, padding{0, 0}, dilation{1, 1};
    int64_t groups = 1;

    // Width of the flattened weight [out, d]: in, or (in/groups)·kh·kw for Conv2d.
    int64_t flat_in() const { return kind == Kind::Linear ? in : (in / groups) * kernel[0] * kernel[1]; }
    std::string describe() const;
};

class AdapterImpl : public torch::nn::Module {
public:
    explicit AdapterImpl(LayerShape shape) : shape_(shape) {}

    virtual const char* peft_type() const = 0;  // "HRA", "LORA"
    // true: the adapter right-multiplies the weight (W·H);
    // false: it adds to it (W + ΔW) and contributes output_delta().
    virtual bool multiplicative() const = 0;
    // dtype in which the adapter computes.
    virtual c10::ScalarType dtype() const = 0;

    // W_flat [out, d] with this adapter merged in, and the inverse.
    virtual torch::Tensor merge_weight(const torch::Tensor& w_flat) const = 0;
    virtual torch::Tensor unmerge_weight(const torch::Tensor& w_flat) const = 0;

    // Multiplicative adapters: rows [..., d] ↦ rows·Hᵀ, and PEFT's materialised
    // H (reverse: its loop run backwards, which gives Hᵀ, for unmerge).
    virtual torch::Tensor transform_rows(const torch::Tensor& rows) const;
    virtual torch::Tensor reference_matrix(bool reverse = false) const;
    // Additive adapters: the output added to the base layer's, for input x.
    virtual torch::Tensor output_delta(const torch::Tensor& x) const;

    // Multiply-adds per input row: of one transform_rows call (multiplicative
    // adapters; the layer's path choice uses it) or of output_delta (additive).
    // FLOP counts (GEMM efficiency) use it for every adapter.
    virtual double row_cost() const { return 0; }
    // A penalty the method adds to the loss (HRA's Σ‖I − ÛᵀÛ‖²), undefined when it has none.
    virtual torch::Tensor orthogonality_penalty(core::PenaltyForm) const { return {}; }

    // The adapter's tensors under PEFT's key names relative to the host layer
    // (e.g. "hra_u", "lora_A.weight"), in a fixed order.
    virtual std::vector<std::pair<std::string, torch::Tensor>> peft_tensors() const = 0;

    const LayerShape& shape() const { return shape_; }

protected:
    LayerShape shape_;
};

}  // namespace hra
