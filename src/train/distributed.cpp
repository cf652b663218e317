#include "train/distributed.h"

#include <cstdlib>
#include <map>
#include <string>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef HRA_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/torch.h>

#include "common/error.h"

namespace hra {

namespace {

int int_env(const char* name, int fallback, int lo, int hi) {
    const char* v = std::getenv(name);
    if (!v || !*v) return fallback;
    char* end = nullptr;
    const long x = std::strtol(v, &end, 10);
    if (*end || x < lo || x > hi)
        throw Error(std::string("environment variable ") + name + "='" + v + "' is not an integer in [" +
                    std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return static_cast<int>(x);
}

// The c10d calls differ little between process-group classes; one wrapper per class.
struct Backend {
    virtual ~Backend() = default;
    virtual void allreduce(std::vector<at::Tensor>& t, c10d::ReduceOp op) = 0;
    virtual void broadcast(std::vector<at::Tensor>& t) = 0;
    virtual void allgather(std::vector<std::vector<at::Tensor>>& out, std::vector<at::Tensor>& in) = 0;
    virtual void barrier() = 0;
};

template <class PG>
struct BackendOf : Backend {
    c10::intrusive_ptr<PG> pg;
    explicit BackendOf(c10::intrusive_ptr<PG> p) : pg(std::move(p)) {}
    void allreduce(std::vector<at::Tensor>& t, c10d::ReduceOp op) override {
        c10d::AllreduceOptions o;
        o.reduceOp = op;
        pg->allreduce(t, o)->wait();
    }
    void broadcast(std::vector<at::Tensor>& t) override { pg->broadcast(t, c10d::BroadcastOptions())->wait(); }
    void allgather(std::vector<std::vector<at::Tensor>>& out, std::vector<at::Tensor>& in) override {
        pg->allgather(out, in, c10d::AllgatherOptions())->wait();
    }
    void barrier() override { pg->barrier(c10d::BarrierOptions())->wait(); }
};

}  // namespace

struct Distributed::Group {
    c10::intrusive_ptr<c10d::Store> store;
    std::unique_ptr<Backend> backend;
    c10::Device device{c10::kCPU};  // where collectives' tensors must live (CUDA for NCCL)
};

namespace {
// A tensor on the collective's device, and back.
at::Tensor to_comm(const at::Tensor& t, const c10::Device& d) { return t.device() == d ? t : t.to(d); }
}  // namespace

DistEnv dist_env_from_environment() {
    DistEnv e;
    e.world_size = int_env("WORLD_SIZE", 1, 1, 65536);
    e.rank = int_env("RANK", 0, 0, e.world_size - 1);
    e.local_rank = int_env("LOCAL_RANK", e.rank, 0, 65535);
    if (const char* a = std::getenv("MASTER_ADDR"); a && *a) e.master_addr = a;
    e.master_port = int_env("MASTER_PORT", 29500, 1, 65535);
    return e;
}

Distributed::Distributed(const DistEnv& env, const std::string& device, std::chrono::milliseconds timeout) : env_(env) {
    if (env.world_size <= 1) return;
    group_ = std::make_unique<Group>();
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = timeout;
    try {
        group_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    } catch (const std::exception& e) {
        throw Error("rank " + std::to_string(env.rank) + ": cannot join the process group at " + env.master_addr + ":" +
                    std::to_string(env.master_port) + ": " + std::string(e.what()).substr(0, 200));
    }
    const bool cuda = device.rfind("cuda", 0) == 0;
#ifdef HRA_WITH_NCCL
    if (cuda) {
        group_->device = c10::Device(device);
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout;
        group_->backend = std::make_unique<BackendOf<c10d::ProcessGroupNCCL>>(
            c10::make_intrusive<c10d::ProcessGroupNCCL>(group_->store, env.rank, env.world_size, opts));
        return;
    }
#else
    if (cuda) throw Error("data parallel on CUDA needs a libtorch with NCCL (build with -DHRA_WITH_NCCL=ON)");
#endif
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    const bool loopback = env.master_addr == "127.0.0.1" || env.master_addr == "localhost";
    opts->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                     : c10d::ProcessGroupGloo::createDefaultDevice());
    group_->backend = std::make_unique<BackendOf<c10d::ProcessGroupGloo>>(
        c10::make_intrusive<c10d::ProcessGroupGloo>(group_->store, env.rank, env.world_size, opts));
}

Distributed::~Distributed() = default;

void Distributed::sum(at::Tensor& t) {
    if (!active()) return;
    std::vector<at::Tensor> v{to_comm(t, group_->device)};
    group_->backend->allreduce(v, c10d::ReduceOp::SUM);
    if (!v[0].is_same(t)) t.copy_(v[0]);
}

void Distributed::sum_grads(const std::vector<at::Tensor>& params, int64_t bucket_bytes) {
    if (!active()) return;
    // Buckets of consecutive parameters with the same dtype and device.
    size_t i = 0;
    while (i < params.size()) {
        std::vector<at::Tensor> grads;
        int64_t bytes = 0;
        const auto dtype = params[i].scalar_type();
        const auto device = params[i].device();
        while (i < params.size() && params[i].scalar_type() == dtype && params[i].device() == device) {
            auto& p = params[i];
            at::Tensor g = p.mutable_grad();
            if (!g.defined()) {
                g = torch::zeros_like(p);
                p.mutable_grad() = g;
            }
            const int64_t b = g.numel() * static_cast<int64_t>(g.element_size());
            if (!grads.empty() && bytes + b > bucket_bytes) break;
            grads.push_back(g);
            bytes += b;
            ++i;
        }
        std::vector<at::Tensor> flat{torch::cat([&] {
            std::vector<at::Tensor> v;
            for (auto& g : grads) v.push_back(g.reshape({-1}));
            return v;
        }())};
        group_->backend->allreduce(flat, c10d::ReduceOp::SUM);
        int64_t off = 0;
        for (auto& g : grads) {
            g.copy_(flat[0].narrow(0, off, g.numel()).view(g.sizes()));
            off += g.numel();
        }
    }
}

double Distributed::max(double v) {
    if (!active()) return v;
    std::vector<at::Tensor> t{torch::full({1}, v, torch::TensorOptions().dtype(torch::kDouble).device(group_->device))};
    group_->backend->allreduce(t, c10d::ReduceOp::MAX);
    return t[0].item<double>();
}

void Distributed::broadcast(const std::vector<at::Tensor>& tensors) {
    if (!active()) return;
    for (const auto& t : tensors) {
        std::vector<at::Tensor> v{to_comm(t.is_contiguous() ? t : t.contiguous(), group_->device)};
        group_->backend->broadcast(v);
        if (!v[0].is_same(t)) t.detach().copy_(v[0]);
    }
}

std::vector<at::Tensor> Distributed::all_gather(const at::Tensor& t) {
    if (!active()) return {t.clone()};
    std::vector<at::Tensor> in{to_comm(t.contiguous(), group_->device)};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < world_size(); ++r) out[0].push_back(torch::empty_like(in[0]));
    group_->backend->allgather(out, in);
    for (auto& x : out[0]) x = x.to(t.device());
    return out[0];
}

void Distributed::barrier() {
    if (active()) group_->backend->barrier();
}

}  // namespace hra
