// Small models for the adapter tests, after PEFT's tests/test_custom_models.py:
// an MLP (lin0 10->20, lin1 20->2) and a conv net (conv 5->10 k3, lin0 10->2).
#pragma once

#include <torch/torch.h>

#include "adapters/layers.h"
#include "adapters/peft_model.h"

namespace hra::test {

struct TestModel : torch::nn::Module {
    virtual torch::Tensor forward(const torch::Tensor& x) = 0;
    virtual torch::Tensor example_input() const = 0;
};

struct Mlp : TestModel {
    Linear lin0{nullptr}, lin1{nullptr};
    Mlp() {
        lin0 = register_module("lin0", Linear(10, 20));
        lin1 = register_module("lin1", Linear(20, 2));
    }
    torch::Tensor forward(const torch::Tensor& x) override { return lin1(torch::relu(lin0(x))); }
    torch::Tensor example_input() const override {
        torch::manual_seed(100);
        return torch::randn({6, 10});
    }
};

struct ConvNet : TestModel {
    Conv2d conv{nullptr};
    Linear lin0{nullptr};
    ConvNet() {
        Conv2dOptions o;
        o.in_channels = 5;
        o.out_channels = 10;
        o.kernel = {3, 3};
        conv = register_module("conv", Conv2d(o));
        lin0 = register_module("lin0", Linear(10, 2));
    }
    torch::Tensor forward(const torch::Tensor& x) override {
        return lin0(torch::relu(conv(x)).flatten(1));
    }
    torch::Tensor example_input() const override {
        torch::manual_seed(101);
        return torch::randn({4, 5, 3, 3});
    }
};

// An Mlp (seeded) with HRA adapter "default" on `targets`; random (not
// identity) init unless `identity_init`.
struct AdaptedMlp {
    std::shared_ptr<Mlp> model;
    PeftModel peft;
};
inline AdaptedMlp mlp_with_hra(int64_t r, std::vector<std::string> targets, bool identity_init = false,
                               uint64_t seed = 0) {
    torch::manual_seed(seed);
    auto model = std::make_shared<Mlp>();
    AdaptedMlp out{model, PeftModel(model)};
    AdapterConfig c;
    c.r = r;
    c.set("init_weights", identity_init);
    c.target_modules = ModuleSelector::of(std::move(targets));
    out.peft.add_adapter("default", c);
    return out;
}

}  // namespace hra::test
