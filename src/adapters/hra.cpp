#include "adapters/hra.h"

#include <cmath>

#include <torch/torch.h>

#include "adapters/config.h"
#include "adapters/method.h"
#include "common/error.h"
#include "common/log.h"

namespace hra {

MultiplyPath parse_hra_strategy(const std::string& name) {
    if (name == "auto") return MultiplyPath::Auto;
    if (name == "wy_input") return MultiplyPath::Input;
    if (name == "wy_weight") return MultiplyPath::Weight;
    if (name == "reference") return MultiplyPath::Reference;
    throw Error("unknown strategy '" + name + "' (expected auto, wy_input, wy_weight or reference)");
}

const char* hra_strategy_name(MultiplyPath path) {
    switch (path) {
        case MultiplyPath::Auto: return "auto";
        case MultiplyPath::Input: return "wy_input";
        case MultiplyPath::Weight: return "wy_weight";
        case MultiplyPath::Reference: return "reference";
    }
    return "?";
}

// The registry entry (adapters/method.h): PEFT's HRAConfig keys and defaults.
AdapterMethod hra_method() {
    AdapterMethod m;
    m.name = "hra";
    m.peft_type = "HRA";
    m.defaults = {{"apply_GS", false}, {"init_weights", true}};
    m.config_flags = {{"apply-GS", "apply_GS", "Gram-Schmidt orthogonalisation (lambda = infinity)", true, {"apply-gs"}},
                      {"init-weights", "init_weights", "paired init so H = I at start", false, {}}};
    m.cli_flags = {"strategy", "ortho-lambda", "ortho-form"};
    m.make = [](const LayerShape& shape, const AdapterConfig& c, const torch::TensorOptions& options) {
        return std::make_shared<HraAdapterImpl>(shape, c.r, c.get<bool>("apply_GS"), c.get<bool>("init_weights"), options);
    };
    return m;
}

HraAdapterImpl::HraAdapterImpl(const LayerShape& shape, int64_t r, bool apply_gs, bool init_weights,
                               const torch::TensorOptions& options)
    : AdapterImpl(shape), r_(r), apply_gs_(apply_gs) {
    if (r <= 0) throw Error("`r` should be a positive integer value but the value passed is " + std::to_string(r));
    if (shape.kind == LayerShape::Kind::Conv2d && shape.groups != 1)
        throw Error("HRA does not support grouped convolutions (groups=" + std::to_string(shape.groups) +
                    "): the reflections would mix channels across groups");
    const int64_t d = shape.flat_in();
    // More reflections than dimensions cannot be independent (and allocate r × d for nothing).
    if (r > d) throw Error("r " + std::to_string(r) + " exceeds the layer's input size " + std::to_string(d));
    torch::Tensor u;
    {
        torch::NoGradGuard no_grad;
        if (init_weights && r % 2 == 0) {
            auto half = torch::zeros({d, r / 2});
            torch::nn::init::kaiming_uniform_(half, std::sqrt(5.0));
            u = torch::repeat_interleave(half, 2, 1);
        } else {
            if (init_weights) warn_once("The symmetric initialization can NOT be performed when r is odd!");
            u = torch::empty({d, r});
            torch::nn::init::kaiming_uniform_(u, std::sqrt(5.0));
        }
        u = u.to(options);
    }
    hra_u = register_parameter("hra_u", u, true);
}

torch::Tensor HraAdapterImpl::merge_weight(const torch::Tensor& w_flat) const {
    return core::apply_to_weight(w_flat, reflector(), false);
}

torch::Tensor HraAdapterImpl::unmerge_weight(const torch::Tensor& w_flat) const {
    return core::apply_to_weight(w_flat, reflector(), true);
}

torch::Tensor HraAdapterImpl::transform_rows(const torch::Tensor& rows) const {
    if (!apply_gs_) return core::apply_householder_rows(rows, hra_u, false);
    return core::apply_to_rows(rows, reflector(), false);
}

torch::Tensor HraAdapterImpl::reference_matrix(bool reverse) const {
    return core::reference_matrix(hra_u, apply_gs_, reverse);
}

double HraAdapterImpl::row_cost() const {
    const double d = static_cast<double>(hra_u.size(0)), r = static_cast<double>(r_);
    return 2 * d * r + r * r;
}

torch::Tensor HraAdapterImpl::orthogonality_penalty(core::PenaltyForm form) const {
    return core::orthogonality_penalty(hra_u, form);
}

void HraAdapterImpl::pretty_print(std::ostream& stream) const {
    stream << "hra::HraAdapter(d=" << hra_u.size(0) << ", r=" << r_ << ", apply_GS=" << (apply_gs_ ? "true" : "false")
           << ", dtype=" << hra_u.scalar_type() << ")";
}

}  // namespace hra
