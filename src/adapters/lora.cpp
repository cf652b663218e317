#include "adapters/lora.h"

#include <cmath>

#include <torch/torch.h>

#include "adapters/method.h"
#include "common/error.h"

namespace hra {

namespace {

using json = nlohmann::json;

// LoRA options hra does not implement: loading a file that uses them must fail,
// not silently compute something else. Values equal to these defaults are fine.
const std::vector<std::pair<const char*, json>>& unsupported_options() {
    static const std::vector<std::pair<const char*, json>> opts = {
        {"use_dora", false},           {"fan_in_fan_out", false},       {"rank_pattern", json::object()},
        {"alpha_pattern", json::object()}, {"lora_bias", false},        {"target_parameters", nullptr},
        {"layer_replication", nullptr}, {"trainable_token_indices", nullptr}, {"use_qalora", false},
    };
    return opts;
}

bool is_default(const json& v, const json& def) {
    if (v.is_null()) return true;
    if (def.is_object()) return v.is_object() && v.empty();
    return v == def;
}

}  // namespace

LoraOptions lora_options(const AdapterConfig& c) {
    LoraOptions o;
    o.r = c.r;
    o.lora_alpha = c.get<double>("lora_alpha");
    o.lora_dropout = c.get<double>("lora_dropout");
    o.init_lora_weights = c.get<bool>("init_lora_weights");
    o.use_rslora = c.get<bool>("use_rslora");
    return o;
}

// The registry entry (adapters/method.h): PEFT's LoraConfig keys hra implements.
AdapterMethod lora_method() {
    AdapterMethod m;
    m.name = "lora";
    m.peft_type = "LORA";
    m.defaults = {{"lora_alpha", 8}, {"lora_dropout", 0.0}, {"init_lora_weights", true}, {"use_rslora", false}};
    m.config_flags = {{"lora-alpha", "lora_alpha", "alpha (scaling alpha/r; PEFT's default 8)", false, {}},
                      {"lora-dropout", "lora_dropout", "dropout on the adapter's input", false, {}}};
    m.parse = [](const json& j, AdapterConfig&, std::set<std::string>& set_aside, const std::string& source) {
        // A named initialisation (gaussian, pissa, ...) only matters for fresh adapters: kept as the file has it.
        if (j.contains("init_lora_weights") && j["init_lora_weights"].is_string()) set_aside.insert("init_lora_weights");
        for (const auto& [key, def] : unsupported_options())
            if (j.contains(key) && !is_default(j[key], def))
                throw Error("LoRA option not supported by hra: " + j[key].dump(), {source, key});
    };
    m.write = [](const AdapterConfig& c, json& out) {
        // PEFT writes lora_alpha as an integer when it is one.
        const double alpha = c.get<double>("lora_alpha");
        if (std::floor(alpha) == alpha && std::abs(alpha) < 1e15) out["lora_alpha"] = static_cast<int64_t>(alpha);
        for (const auto& [key, def] : unsupported_options())
            if (!out.contains(key)) out[key] = def;
    };
    m.validate = [](const AdapterConfig& c) {
        const double p = c.get<double>("lora_dropout");
        if (p < 0 || p >= 1) throw Error("lora_dropout must be in [0, 1)", {"", "lora_dropout"});
    };
    m.make = [](const LayerShape& shape, const AdapterConfig& c, const torch::TensorOptions& options) {
        return std::make_shared<LoraAdapterImpl>(shape, lora_options(c), options);
    };
    return m;
}

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

double LoraAdapterImpl::row_cost() const {
    // A then B: r·d + out·r multiply-adds per row (a conv's A sees d = in·kh·kw per output pixel).
    return static_cast<double>(options_.r) * static_cast<double>(shape_.flat_in() + shape_.out);
}

void LoraAdapterImpl::pretty_print(std::ostream& stream) const {
    stream << "hra::LoraAdapter(r=" << options_.r << ", lora_alpha=" << options_.lora_alpha
           << ", lora_dropout=" << options_.lora_dropout << ", scaling=" << scaling_ << ")";
}

}  // namespace hra
