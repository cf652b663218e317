// The training engine: one loop for every task (train/task.h) and device.
// It owns AdamW (betas, eps, decay from the options), the schedule and warmup,
// gradient accumulation, clipping, the HRA orthogonality penalty, evaluation
// every N steps or epoch with the best checkpoint kept by the task's metric,
// atomic checkpoints that resume bit for bit (trainable state, optimizer,
// schedule position, the RNG of every device and process, data position),
// SIGINT -> checkpoint and `interrupted`, a non-finite loss or gradient ->
// hra::Error with the last checkpoint untouched, the per-step log line, the
// progress bar, metrics.jsonl, config.json, loss.svg and results.json.
//
// Data parallel: with WORLD_SIZE > 1 in the environment (torchrun's
// variables, or `hra train --nproc N`), each process reads its shard of every
// global batch and gradients are summed with bucketed all-reduce over c10d
// (Gloo on CPU) before clipping; rank 0 alone writes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>
#include <nlohmann/json.hpp>

#include "train/options.h"

namespace hra {

struct StepRecord {
    int64_t step;
    double loss, lr, grad_norm, ms, tokens_per_s;
    double gemm_efficiency;  // model FLOP/s over this machine's measured GEMM rate (not hardware peak)
    double peak_mem_mb;
    std::optional<double> val_loss;  // the evaluation's loss, when it ran at this step and has one
};

struct EvalRecord {
    int64_t step = 0, epoch = 0;  // epoch: 1-based, the epoch this evaluation ended or fell in
    double train_loss = 0;        // mean training loss since the previous evaluation
    nlohmann::json metrics;
    double score = 0;  // the main metric
    bool best = false;
};

struct TrainResult {
    int64_t steps = 0;
    std::vector<StepRecord> history;
    std::vector<EvalRecord> evals;
    std::optional<double> final_val_loss;
    std::string adapter_dir;  // the last checkpoint (a PEFT folder for adapter tasks)
    std::string best_dir;     // best/ (when evaluation ran)
    std::string main_metric;
    std::optional<double> best_score;
    int64_t best_step = 0;
    bool interrupted = false;  // stopped by SIGINT (a checkpoint was written)
    nlohmann::json result;     // what results.json holds
};

// Validates the options, then trains; throws hra::Error on bad input and on a
// non-finite loss (leaving the last checkpoint as it was).
TrainResult train(const TrainOptions& options);

// Peak resident memory of this process (CPU) or the CUDA allocator's peak, in MB.
double peak_memory_mb(const std::string& device);

}  // namespace hra
