#include "models/checkpoint.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/torch.h>

namespace hra {

namespace {

struct CheckpointBackward : torch::autograd::Node {
    std::function<at::Tensor(const at::Tensor&)> fn;
    at::Tensor input;      // detached
    at::Tensor rng_state;   // CPU generator state before the first run
    at::Tensor cuda_state;  // and the input device's generator on CUDA (dropout there draws from it)
    c10::Device device{c10::kCPU};
    std::string name() const override { return "hra::CheckpointBackward"; }
    torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
        auto gen = at::detail::getDefaultCPUGenerator();
        at::Tensor now, cuda_now;
        {
            std::lock_guard<std::mutex> lock(gen.mutex());
            now = gen.get_state();
            gen.set_state(rng_state);
        }
        if (device.is_cuda()) {
            auto g = at::globalContext().defaultGenerator(device);
            std::lock_guard<std::mutex> lock(g.mutex());
            cuda_now = g.get_state();
            g.set_state(cuda_state);
        }
        torch::AutoGradMode enable(true);
        auto x = input.detach().requires_grad_(true);
        auto y = fn(x);
        {
            std::lock_guard<std::mutex> lock(gen.mutex());
            gen.set_state(now);
        }
        if (device.is_cuda()) {
            auto g = at::globalContext().defaultGenerator(device);
            std::lock_guard<std::mutex> lock(g.mutex());
            g.set_state(cuda_now);
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
    node->device = x.device();
    if (x.is_cuda()) node->cuda_state = at::globalContext().defaultGenerator(x.device()).get_state();
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
