#include "models/checkpoint.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/torch.h>

namespace hra {

namespace {

struct CheckpointBackward : torch::autograd::Node {
    std::function<at::Tensor(const at::Tensor&)> fn;
    at::Tensor input;      // detached
    at::Tensor rng_state;  // CPU generator state before the first run
    std::string name() const override { return "hra::CheckpointBackward"; }
    torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
        auto gen = at::detail::getDefaultCPUGenerator();
        at::Tensor now;
        {
            std::lock_guard<std::mutex> lock(gen.mutex());
            now = gen.get_state();
            gen.set_state(rng_state);
        }
        torch::AutoGradMode enable(true);
        auto x = input.detach().requires_grad_(true);
        auto y = fn(x);
        {
            std::lock_guard<std::mutex> lock(gen.mutex());
            gen.set_state(now);
        }
        torch::autograd::backward({y}, {grads[0]});
        auto g = x.grad();
        fn = nullptr;  // frees what the closure holds
        input.reset();
        return {g.defined() ? g : torch::zeros_like(x)};
    }
    void release_variables() override {
        input.reset();
        fn = nullptr;
    }
};

}  // namespace

at::Tensor checkpointed(std::function<at::Tensor(const at::Tensor&)> fn, const at::Tensor& x) {
    if (!torch::GradMode::is_enabled()) return fn(x);
    auto node = std::shared_ptr<CheckpointBackward>(new CheckpointBackward(), torch::autograd::deleteNode);
    node->rng_state = at::detail::getDefaultCPUGenerator().get_state();
    at::Tensor y;
    {
        torch::NoGradGuard ng;
        y = fn(x);
    }
    node->fn = std::move(fn);
    node->input = x.detach();
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::set_history(y, node);
    return y;
}

}  // namespace hra
