#include "adapters/lora.h"

#include <cmath>

#include <torch/torch.h>

#include "common/error.h"

namespace hra {

LoraAdapterImpl::LoraAdapterImpl(const LayerShape& shape, const LoraOptions& o, const torch::TensorOptions& to)
    : AdapterImpl(shape), options_(o) {
    if (o.r <= 0)
        throw Error("`r` should be a positive integer value but the value passed is " + std::to_string(o.r));
    if (o.lora_dropout < 0 || o.lora_dropout >= 1)
        throw Error("lora_dropout must be in [0, 1), got " + std::to_string(o.lora_dropout));
    if (shape.kind == LayerShape::Kind::Conv2d && shape.groups != 1)
        throw Error("LoRA on grouped convolutions (groups=" + std::to_string(shape.groups) + ") is not supported");
    scaling_ = o.use_rslora ? o.lora_alpha / std::sqrt(static_cast<double>(o.r)) : o.lora_alpha / o.r;

    const bool conv = shape.kind == LayerShape::Kind::Conv2d;
    std::vector<int64_t> a_shape = conv ? std::vector<int64_t>{o.r, shape.in, shape.kernel[0], shape.kernel[1]}
                                        : std::vector<int64_t>{o.r, shape.in};
    std::vector<int64_t> b_shape = conv ? std::vector<int64_t>{shape.out, o.r, 1, 1} : std::vector<int64_t>{shape.out, o.r};
    torch::Tensor a = torch::empty(a_shape), b = torch::empty(b_shape);
    {
        // The random draws in PEFT's order: nn.Linear/Conv2d construction
        // initialises A then B; reset_lora_parameters re-draws A and zeroes B.
        torch::NoGradGuard no_grad;
        torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
        torch::nn::init::kaiming_uniform_(b, std::sqrt(5.0));
        if (o.init_lora_weights) {
            torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
            b.zero_();
        }
    }
    lora_A = register_parameter("lora_A", a.to(to), true);
    lora_B = register_parameter("lora_B", b.to(to), true);
}

torch::Tensor LoraAdapterImpl::delta_weight() const {
    const int64_t d = shape_.flat_in();
    return torch::mm(lora_B.reshape({shape_.out, options_.r}), lora_A.reshape({options_.r, d})) * scaling_;
}

torch::Tensor LoraAdapterImpl::merge_weight(const torch::Tensor& w_flat) const {
    return w_flat + delta_weight().to(w_flat.scalar_type());
}

torch::Tensor LoraAdapterImpl::unmerge_weight(const torch::Tensor& w_flat) const {
    return w_flat - delta_weight().to(w_flat.scalar_type());
}

torch::Tensor LoraAdapterImpl::output_delta(const torch::Tensor& x) const {
    auto h = x.to(dtype());
    if (options_.lora_dropout > 0) h = torch::dropout(h, options_.lora_dropout, is_training());
    if (shape_.kind == LayerShape::Kind::Linear) return torch::linear(torch::linear(h, lora_A), lora_B) * scaling_;
    h = torch::conv2d(h, lora_A, {}, shape_.stride, shape_.padding, shape_.dilation);
    return torch::conv2d(h, lora_B) * scaling_;
}

void LoraAdapterImpl::pretty_print(std::ostream& stream) const {
    stream << "hra::LoraAdapter(r=" << options_.r << ", lora_alpha=" << options_.lora_alpha
           << ", lora_dropout=" << options_.lora_dropout << ", scaling=" << scaling_ << ")";
}

}  // namespace hra
