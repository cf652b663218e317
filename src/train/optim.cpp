#include "train/optim.h"

#include <cmath>

#include <torch/torch.h>

#include "common/error.h"

namespace hra {

AdamW::AdamW(std::vector<at::Tensor> params, AdamWOptions options) : params_(std::move(params)), o_(options) {
    for (const auto& p : params_) {
        exp_avg_.push_back(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        exp_avg_sq_.push_back(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
    }
}

void AdamW::step(double lr) {
    torch::NoGradGuard ng;
    ++steps_;
    const double bc1 = 1 - std::pow(o_.beta1, static_cast<double>(steps_));
    const double bc2 = 1 - std::pow(o_.beta2, static_cast<double>(steps_));
    const double step_size = lr / bc1, bc2_sqrt = std::sqrt(bc2);
    for (size_t i = 0; i < params_.size(); ++i) {
        auto& p = params_[i];
        const auto& g = p.grad();
        if (!g.defined()) continue;
        p.mul_(1 - lr * o_.weight_decay);
        exp_avg_[i].lerp_(g, 1 - o_.beta1);
        exp_avg_sq_[i].mul_(o_.beta2).addcmul_(g, g, 1 - o_.beta2);
        auto denom = (exp_avg_sq_[i].sqrt() / bc2_sqrt).add_(o_.eps);
        p.addcdiv_(exp_avg_[i], denom, -step_size);
    }
}

void AdamW::zero_grad() {
    for (auto& p : params_) p.mutable_grad() = torch::Tensor();
}

io::NamedTensors AdamW::state() const {
    io::NamedTensors out;
    for (size_t i = 0; i < params_.size(); ++i) {
        out.emplace_back("exp_avg." + std::to_string(i), exp_avg_[i]);
        out.emplace_back("exp_avg_sq." + std::to_string(i), exp_avg_sq_[i]);
    }
    out.emplace_back("step", torch::tensor(steps_, torch::kLong));
    return out;
}

void AdamW::load_state(const io::SafetensorsFile& f) {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params_.size(); ++i) {
        for (auto* pair : {&exp_avg_, &exp_avg_sq_}) {
            const std::string key = (pair == &exp_avg_ ? "exp_avg." : "exp_avg_sq.") + std::to_string(i);
            auto t = f.tensor(key);
            if (t.sizes() != (*pair)[i].sizes())
                throw Error("optimizer state does not fit the adapter (" + c10::str(t.sizes()) + " vs " +
                                c10::str((*pair)[i].sizes()) + ")",
                            {f.path(), key});
            (*pair)[i].copy_(t);
        }
    }
    steps_ = f.tensor("step").item<int64_t>();
}

Ema::Ema(std::vector<at::Tensor> params, double decay) : params_(std::move(params)), decay_(decay) {
    torch::NoGradGuard ng;
    for (const auto& p : params_) shadow_.push_back(p.detach().clone());
}

void Ema::update(int64_t step) {
    torch::NoGradGuard ng;
    const double k = static_cast<double>(step);
    const double d = std::min(decay_, k / (9.0 + k));
    for (size_t i = 0; i < params_.size(); ++i) shadow_[i].sub_((1.0 - d) * (shadow_[i] - params_[i].detach()));
}

void Ema::swap() {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params_.size(); ++i) {
        auto held = params_[i].detach().clone();
        params_[i].detach().copy_(shadow_[i]);
        shadow_[i].copy_(held);
    }
}

io::NamedTensors Ema::raw_state() const {
    io::NamedTensors out;
    for (size_t i = 0; i < params_.size(); ++i) out.emplace_back("ema.raw." + std::to_string(i), params_[i].detach().cpu());
    return out;
}

void Ema::load_raw(const io::SafetensorsFile& f) {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < params_.size(); ++i) {
        const std::string key = "ema.raw." + std::to_string(i);
        if (!f.contains(key))
            throw Error("no raw weights beside the EMA: the checkpoint was written without --ema-decay", {f.path(), key});
        auto t = f.tensor(key);
        if (t.sizes() != params_[i].sizes())
            throw Error("raw weights do not fit (" + c10::str(t.sizes()) + " vs " + c10::str(params_[i].sizes()) + ")", {f.path(), key});
        params_[i].detach().copy_(t);
    }
}

Schedule parse_schedule(const std::string& name) {
    if (name == "constant") return Schedule::Constant;
    if (name == "linear") return Schedule::Linear;
    if (name == "cosine") return Schedule::Cosine;
    throw Error("unknown lr schedule '" + name + "' (expected constant, linear or cosine)");
}

double learning_rate(Schedule kind, double base_lr, int64_t step, int64_t total, int64_t warmup) {
    if (step < warmup) return base_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
    if (kind == Schedule::Constant) return base_lr;
    const double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
    if (kind == Schedule::Linear) return base_lr * std::max(0.0, 1.0 - progress);
    return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
    torch::NoGradGuard ng;
    std::vector<at::Tensor> norms;
    for (const auto& p : params)
        if (p.grad().defined()) norms.push_back(p.grad().norm(2).to(torch::kFloat));
    if (norms.empty()) return 0;
    const double total = torch::stack(norms).norm(2).item<double>();
    if (max_norm > 0) {
        const double coef = max_norm / (total + 1e-6);
        if (coef < 1)
            for (const auto& p : params)
                if (p.grad().defined()) p.grad().mul_(coef);
    }
    return total;
}

}  // namespace hra
