// Data-parallel plumbing over torch's c10d (not a home-made transport): the
// process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
// MASTER_ADDR, MASTER_PORT), Gloo on CPU (NCCL with a CUDA libtorch built
// with HRA_WITH_NCCL), and the few collectives the engine needs. With no
// WORLD_SIZE (or 1) every call is a no-op on one process.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace hra {

struct DistEnv {
    int rank = 0, world_size = 1, local_rank = 0;
    std::string master_addr = "127.0.0.1";
    int master_port = 29500;
};

// Reads torchrun's variables; hra::Error on malformed or inconsistent values.
DistEnv dist_env_from_environment();

class Distributed {
public:
    // world_size 1: no process group. Otherwise joins the group (TCPStore on
    // MASTER_ADDR:MASTER_PORT, rank 0 serving) within `timeout`; collectives
    // that wait longer than `timeout` (e.g. a peer died) throw.
    Distributed(const DistEnv& env, const std::string& device, std::chrono::milliseconds timeout);
    ~Distributed();
    Distributed(const Distributed&) = delete;
    Distributed& operator=(const Distributed&) = delete;

    int rank() const { return env_.rank; }
    int world_size() const { return env_.world_size; }
    bool is_main() const { return env_.rank == 0; }
    bool active() const { return env_.world_size > 1; }

    // In-place sums across processes. Gradients go in buckets of at most
    // `bucket_bytes`, flattened per dtype and device.
    void sum(at::Tensor& t);
    void sum_grads(const std::vector<at::Tensor>& params, int64_t bucket_bytes = 25 << 20);
    double max(double v);
    // Rank 0's values everywhere (in place).
    void broadcast(const std::vector<at::Tensor>& tensors);
    // Every rank's copy of `t` (same shape and dtype on every rank), in rank order.
    std::vector<at::Tensor> all_gather(const at::Tensor& t);
    void barrier();

private:
    struct Group;
    DistEnv env_;
    std::unique_ptr<Group> group_;
};

}  // namespace hra
