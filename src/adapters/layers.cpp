#include "adapters/layers.h"

#include <cmath>
#include <sstream>

#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"

namespace hra {

std::string LayerShape::describe() const {
    std::ostringstream s;
    if (kind == Kind::Linear) {
        s << "Linear(" << in << " -> " << out << ")";
    } else {
        s << "Conv2d(" << in << " -> " << out << ", kernel " << kernel[0] << "x" << kernel[1] << ", stride "
          << stride[0] << "x" << stride[1] << ", padding " << padding[0] << "x" << padding[1] << ", dilation "
          << dilation[0] << "x" << dilation[1] << ", groups " << groups << ")";
    }
    return s.str();
}

torch::Tensor AdapterImpl::transform_rows(const torch::Tensor&) const {
    throw Error(std::string(peft_type()) + " adapters do not transform inputs");
}
torch::Tensor AdapterImpl::reference_matrix(bool) const {
    throw Error(std::string(peft_type()) + " adapters have no reference matrix");
}
torch::Tensor AdapterImpl::output_delta(const torch::Tensor&) const {
    throw Error(std::string(peft_type()) + " adapters do not add to the output");
}

// ---------------------------------------------------------------- AdaptableLayer

namespace {
thread_local bool skip_init = false;
}

SkipInitGuard::SkipInitGuard() : previous_(skip_init) { skip_init = true; }
SkipInitGuard::~SkipInitGuard() { skip_init = previous_; }
bool SkipInitGuard::active() { return skip_init; }

AdaptableLayer::AdaptableLayer(LayerShape shape) : shape_(shape) {}

void AdaptableLayer::init_parameters(bool with_bias) {
    std::vector<int64_t> wshape = {shape_.out, shape_.in};
    if (shape_.kind == LayerShape::Kind::Conv2d)
        wshape = {shape_.out, shape_.in / shape_.groups, shape_.kernel[0], shape_.kernel[1]};
    weight = register_parameter("weight", torch::empty(wshape), /*requires_grad=*/true);
    if (with_bias) bias = register_parameter("bias", torch::empty({shape_.out}), true);
    if (SkipInitGuard::active()) return;
    // torch.nn's default initialisation, so that randomly initialised models match.
    torch::NoGradGuard no_grad;
    torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
    if (with_bias) {
        const double bound = 1.0 / std::sqrt(static_cast<double>(shape_.flat_in()));
        bias.uniform_(-bound, bound);
    }
}

std::string AdaptableLayer::adapters_summary() const {
    if (names_.empty()) return "";
    std::string s = ", adapters=[";
    for (size_t i = 0; i < names_.size(); ++i)
        s += (i ? ", " : "") + names_[i] + ":" + adapters_[i]->peft_type();
    return s + "]";
}

std::string AdaptableLayer::where() const { return qualified_name_.empty() ? shape_.describe() : qualified_name_; }

void AdaptableLayer::add_adapter(const std::string& name, std::shared_ptr<AdapterImpl> adapter) {
    if (name.empty() || name.find('.') != std::string::npos)
        throw Error("adapter names must be non-empty and contain no '.'", {"", name});
    if (has_adapter(name)) throw Error("layer already has an adapter named '" + name + "'", {"", where()});
    if (!container_) container_ = register_module("adapters", std::make_shared<torch::nn::Module>());
    container_->register_module(name, adapter);
    names_.push_back(name);
    adapters_.push_back(std::move(adapter));
}

void AdaptableLayer::delete_adapter(const std::string& name) {
    auto it = std::find(names_.begin(), names_.end(), name);
    if (it == names_.end()) throw Error("no adapter named '" + name + "'", {"", where()});
    if (std::find(merged_.begin(), merged_.end(), name) != merged_.end())
        throw Error("adapter '" + name + "' is merged; unmerge before deleting it", {"", where()});
    container_->unregister_module(name);
    adapters_.erase(adapters_.begin() + (it - names_.begin()));
    names_.erase(it);
    active_.erase(std::remove(active_.begin(), active_.end(), name), active_.end());
    if (names_.empty()) {
        unregister_module("adapters");
        container_.reset();
    }
}

bool AdaptableLayer::has_adapter(const std::string& name) const {
    return std::find(names_.begin(), names_.end(), name) != names_.end();
}

std::shared_ptr<AdapterImpl> AdaptableLayer::adapter(const std::string& name) const {
    auto it = std::find(names_.begin(), names_.end(), name);
    if (it == names_.end()) throw Error("no adapter named '" + name + "'", {"", where()});
    return adapters_[it - names_.begin()];
}

void AdaptableLayer::set_active(const std::vector<std::string>& names) { active_ = names; }

std::vector<std::string> AdaptableLayer::active() const {
    std::vector<std::string> out;
    for (const auto& n : active_)
        if (has_adapter(n)) out.push_back(n);
    return out;
}

std::vector<std::shared_ptr<AdapterImpl>> AdaptableLayer::active_adapters() const {
    std::vector<std::shared_ptr<AdapterImpl>> out;
    for (const auto& n : active_)
        if (has_adapter(n)) out.push_back(adapter(n));
    return out;
}

void AdaptableLayer::enable_adapters(bool on) {
    if (!on && !merged_.empty()) unmerge();
    enabled_ = on;
}

torch::Tensor AdaptableLayer::merged_weight(const AdapterImpl& a, const torch::Tensor& w_flat, bool undo) const {
    if (strategy == MultiplyPath::Reference && a.multiplicative()) {
        // PEFT: W.to(H.dtype) @ H, with H from the loop (run backwards to unmerge).
        auto h = a.reference_matrix(undo);
        return torch::mm(w_flat.to(h.scalar_type()), h);
    }
    auto w = w_flat.to(a.dtype());
    return undo ? a.unmerge_weight(w) : a.merge_weight(w);
}

std::vector<std::string> AdaptableLayer::to_merge(const std::vector<std::string>& names) const {
    std::vector<std::string> todo;
    for (const auto& n : names.empty() ? active() : names) {
        adapter(n);  // throws for an unknown name
        if (std::find(merged_.begin(), merged_.end(), n) != merged_.end()) {
            warn_once("adapter '" + n + "' is already merged into " + where() + "; skipping it");
            continue;
        }
        todo.push_back(n);
    }
    // Multiplicative adapters first, so that the merged weight is (W·H_a·H_b + ΣΔW),
    // what forward() computes unmerged.
    std::stable_partition(todo.begin(), todo.end(), [&](const std::string& n) { return adapter(n)->multiplicative(); });
    return todo;
}

torch::Tensor AdaptableLayer::merge_result(const std::vector<std::string>& todo, bool safe) const {
    torch::NoGradGuard no_grad;
    torch::Tensor w = flat_weight();
    for (const auto& n : todo) {
        // Rounded to the weight's dtype after each adapter, as PEFT merges one at a time.
        auto merged = merged_weight(*adapter(n), w, false);
        if (safe && !torch::isfinite(merged).all().item<bool>())
            throw Error("NaNs detected in the merged weights. The adapter " + n + " seems to be broken",
                        {"", where()});
        w = merged.to(weight.scalar_type());
    }
    return w;
}

void AdaptableLayer::check_merge(bool safe, const std::vector<std::string>& names) const {
    if (safe) merge_result(to_merge(names), true);
}

void AdaptableLayer::merge(bool safe, const std::vector<std::string>& names) {
    const auto todo = to_merge(names);
    if (todo.empty()) return;
    // Nothing is written unless every adapter merged cleanly.
    auto w = merge_result(todo, safe);
    torch::NoGradGuard no_grad;
    weight.copy_(w.view_as(weight));
    merged_.insert(merged_.end(), todo.begin(), todo.end());
}

void AdaptableLayer::unmerge() {
    if (merged_.empty()) {
        warn_once("already unmerged; nothing to do");
        return;
    }
    torch::NoGradGuard no_grad;
    while (!merged_.empty()) {
        auto a = adapter(merged_.back());
        auto w = merged_weight(*a, flat_weight(), true);
        weight.copy_(w.to(weight.scalar_type()).view_as(weight));
        merged_.pop_back();
    }
}

void AdaptableLayer::unload() {
    if (container_) unregister_module("adapters");
    container_.reset();
    names_.clear();
    adapters_.clear();
    active_.clear();
    merged_.clear();
    enabled_ = true;
}

MultiplyPath AdaptableLayer::resolve_strategy(const torch::Tensor& x) const {
    if (strategy != MultiplyPath::Auto) return strategy;
    double row_cost = 0;
    bool grad = false;
    for (const auto& a : active_adapters()) {
        if (!a->multiplicative()) continue;
        row_cost += a->row_cost();
        if (torch::GradMode::is_enabled())
            for (const auto& p : a->parameters()) grad = grad || p.requires_grad();
    }
    // Multiply-adds. Input side: T rows through the reflections (3x with backward:
    // the input gradient and the adapter gradient), plus the unfold for a k×k conv.
    // Weight side: `out` rows of W through them, plus, with backward, the weight
    // gradient of the base op (T·out·d), which the input side never needs.
    const double t = static_cast<double>(rows_of(x));
    const double out = static_cast<double>(shape_.out), d = static_cast<double>(shape_.flat_in());
    const double k = grad ? 3.0 : 1.0;
    const bool unfold = shape_.kind == LayerShape::Kind::Conv2d &&
                        !(shape_.kernel[0] == 1 && shape_.kernel[1] == 1 && shape_.stride[0] == 1 &&
                          shape_.stride[1] == 1 && shape_.padding[0] == 0 && shape_.padding[1] == 0);
    const double input_cost = t * row_cost * k + (unfold ? t * d * (grad ? 2.0 : 1.0) : 0.0);
    const double weight_cost = out * row_cost * k + (grad ? t * out * d : 0.0);
    return input_cost <= weight_cost ? MultiplyPath::Input : MultiplyPath::Weight;
}

torch::Tensor AdaptableLayer::forward(const torch::Tensor& x) {
    if (!enabled_ && !merged_.empty()) unmerge();
    if (!enabled_ || !merged_.empty()) return base_forward(x, flat_weight(), bias);
    std::vector<std::shared_ptr<AdapterImpl>> mult, add;
    for (auto& a : active_adapters()) (a->multiplicative() ? mult : add).push_back(a);
    torch::Tensor y;
    if (mult.empty()) {
        y = base_forward(x, flat_weight(), bias);
    } else {
        const auto dtype = mult.front()->dtype();
        switch (resolve_strategy(x)) {
            case MultiplyPath::Reference: {
                // PEFT's forward: an fp32 identity times each materialised H, then
                // W·H, with weight, bias and input cast to H's dtype.
                auto h = torch::eye(shape_.flat_in(), x.options().dtype(torch::kFloat));
                for (const auto& a : mult) {
                    auto delta = a->reference_matrix();
                    h = torch::mm(h.to(delta.scalar_type()), delta);
                }
                auto w = torch::mm(flat_weight().to(h.scalar_type()), h);
                auto b = bias.defined() ? bias.to(h.scalar_type()) : bias;
                y = base_forward(x.to(h.scalar_type()), w, b);
                break;
            }
            case MultiplyPath::Weight: {
                auto w = flat_weight().to(dtype);
                for (const auto& a : mult) w = a->merge_weight(w);
                auto b = bias.defined() ? bias.to(dtype) : bias;
                y = base_forward(x.to(dtype), w, b);
                break;
            }
            case MultiplyPath::Input:
            case MultiplyPath::Auto: {
                // x·(H_a·H_b)ᵀ = (x·H_bᵀ)·H_aᵀ: the last adapter acts first.
                auto rows = to_rows(x).to(dtype);
                for (auto it = mult.rbegin(); it != mult.rend(); ++it) rows = (*it)->transform_rows(rows);
                y = from_rows(torch::linear(rows.to(weight.scalar_type()), flat_weight(), bias), x);
                break;
            }
        }
    }
    if (!add.empty()) {
        const auto result_dtype = y.scalar_type();
        for (const auto& a : add) y = (y + a->output_delta(x)).to(result_dtype);
    }
    return y.to(x.scalar_type());
}

// ---------------------------------------------------------------- Linear

static LayerShape linear_shape(int64_t in, int64_t out) {
    if (in <= 0 || out <= 0)
        throw Error("Linear needs positive sizes, got in=" + std::to_string(in) + " out=" + std::to_string(out));
    LayerShape s;
    s.kind = LayerShape::Kind::Linear;
    s.in = in;
    s.out = out;
    return s;
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features, bool with_bias)
    : AdaptableLayer(linear_shape(in_features, out_features)) {
    init_parameters(with_bias);
}

LinearImpl::LinearImpl(const torch::Tensor& shared_weight)
    : AdaptableLayer(linear_shape(shared_weight.size(1), shared_weight.size(0))) {
    weight = register_parameter("weight", shared_weight, shared_weight.requires_grad());
}

torch::Tensor LinearImpl::base_forward(const torch::Tensor& x, const torch::Tensor& w_flat,
                                       const torch::Tensor& b) const {
    return torch::linear(x, w_flat, b);
}

int64_t LinearImpl::rows_of(const torch::Tensor& x) const { return x.numel() / shape().in; }

void LinearImpl::pretty_print(std::ostream& stream) const {
    stream << "hra::Linear(in_features=" << shape().in << ", out_features=" << shape().out
           << ", bias=" << (bias.defined() ? "true" : "false");
    stream << adapters_summary() << ")";
}

// ---------------------------------------------------------------- Conv2d

static LayerShape conv_shape(const Conv2dOptions& o) {
    LayerShape s;
    s.kind = LayerShape::Kind::Conv2d;
    s.in = o.in_channels;
    s.out = o.out_channels;
    s.kernel = o.kernel;
    s.stride = o.stride;
    s.padding = o.padding;
    s.dilation = o.dilation;
    s.groups = o.groups;
    bool ok = s.in > 0 && s.out > 0 && s.groups > 0 && s.in % s.groups == 0 && s.out % s.groups == 0;
    for (int i = 0; i < 2; ++i)
        ok = ok && s.kernel[i] > 0 && s.stride[i] > 0 && s.padding[i] >= 0 && s.dilation[i] > 0;
    if (!ok) throw Error("invalid Conv2d geometry: " + s.describe());
    return s;
}

Conv2dImpl::Conv2dImpl(const Conv2dOptions& o) : AdaptableLayer(conv_shape(o)) { init_parameters(o.bias); }

bool Conv2dImpl::pointwise() const {
    const auto& s = shape();
    return s.kernel[0] == 1 && s.kernel[1] == 1 && s.stride[0] == 1 && s.stride[1] == 1 && s.padding[0] == 0 &&
           s.padding[1] == 0;
}

std::array<int64_t, 2> Conv2dImpl::output_size(const torch::Tensor& x) const {
    const auto& s = shape();
    std::array<int64_t, 2> o{};
    for (int i = 0; i < 2; ++i)
        o[i] = (x.size(2 + i) + 2 * s.padding[i] - s.dilation[i] * (s.kernel[i] - 1) - 1) / s.stride[i] + 1;
    return o;
}

torch::Tensor Conv2dImpl::base_forward(const torch::Tensor& x, const torch::Tensor& w_flat,
                                       const torch::Tensor& b) const {
    const auto& s = shape();
    auto w = w_flat.reshape({s.out, s.in / s.groups, s.kernel[0], s.kernel[1]});
    return torch::conv2d(x, w, b, s.stride, s.padding, s.dilation, s.groups);
}

torch::Tensor Conv2dImpl::to_rows(const torch::Tensor& x) const {
    if (x.dim() != 4) throw Error("adapted Conv2d layers need a 4-D input [N, C, H, W]", {"", qualified_name()});
    if (pointwise()) return x.permute({0, 2, 3, 1});
    const auto& s = shape();
    return torch::im2col(x, s.kernel, s.dilation, s.padding, s.stride).transpose(1, 2);
}

torch::Tensor Conv2dImpl::from_rows(const torch::Tensor& y, const torch::Tensor& x) const {
    if (pointwise()) return y.permute({0, 3, 1, 2});
    auto o = output_size(x);
    return y.transpose(1, 2).reshape({x.size(0), shape().out, o[0], o[1]});
}

int64_t Conv2dImpl::rows_of(const torch::Tensor& x) const {
    if (x.dim() != 4) return x.numel() / shape().in;
    if (pointwise()) return x.size(0) * x.size(2) * x.size(3);
    auto o = output_size(x);
    return x.size(0) * o[0] * o[1];
}

void Conv2dImpl::pretty_print(std::ostream& stream) const {
    stream << "hra::" << shape().describe() << adapters_summary();
}

}  // namespace hra
