// Fine-tuning loop: adapters (HRA or LoRA) on a frozen LLaMA-family model,
// AdamW with a schedule, accumulation, clipping, the HRA orthogonality
// penalty, validation, per-step logs and metrics, atomic checkpoints that
// resume bit for bit, SIGINT handling and a NaN guard.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>

#include "adapters/config.h"
#include "data/dataset.h"

namespace hra {

struct TrainOptions {
    std::string model;     // HF model folder
    std::string data;      // training records (JSON / JSONL)
    std::string val_data;  // optional validation records
    std::string out;       // run folder
    DataOptions data_options;
    double val_split = 0;  // fraction (< 1) or count (>= 1) of the training data, when no val_data

    AdapterConfig adapter;  // method, r, targets, ... (PEFT names)
    std::string strategy = "auto";

    double lr = 1e-4;
    std::string schedule = "linear";
    int64_t warmup_steps = 0;
    double warmup_ratio = 0;  // used when warmup_steps is 0
    double weight_decay = 0;
    double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
    int64_t batch_size = 8;
    int64_t grad_accum = 1;
    double max_grad_norm = 1.0;
    int64_t epochs = 1;
    int64_t max_steps = 0;  // > 0 overrides epochs
    double ortho_lambda = 0;
    std::string ortho_form = "squared";
    std::string dtype = "float32";  // base weights; adapters and optimizer state stay float32
    uint64_t seed = 0;
    bool shuffle = true;

    int64_t eval_every = 0;  // steps; 0: only at the end
    int64_t save_every = 0;  // steps; 0: only at the end
    int64_t log_every = 1;
    bool resume = false;
    bool overwrite = false;  // allow a non-empty run folder when not resuming
    bool quiet = false;      // no per-step lines (metrics are still written)

    // Test hooks: raise SIGINT after this step / make this step's loss NaN.
    int64_t inject_sigint_at_step = 0;
    int64_t inject_nan_at_step = 0;
};

struct StepRecord {
    int64_t step;
    double loss, lr, grad_norm, ms, tokens_per_s, mfu;
    double peak_mem_mb;
    std::optional<double> val_loss;
};

struct TrainResult {
    int64_t steps = 0;
    std::vector<StepRecord> history;
    std::optional<double> final_val_loss;
    std::string adapter_dir;  // PEFT folder of the final adapter
    bool interrupted = false;  // stopped by SIGINT (a checkpoint was written)
};

// Measured matmul rate (FLOP/s) of this machine in `dtype` (1024^3, best of
// 3), the peak that MFU is reported against. Draws no random numbers.
double matmul_rate(c10::ScalarType dtype);

// Runs training; throws hra::Error on bad input and on a non-finite loss
// (leaving the last checkpoint as it was).
TrainResult train(const TrainOptions& options);

// Mean token loss (and its count) of a model with adapters over examples, in batches.
struct LossSum {
    double loss_sum = 0;
    int64_t tokens = 0;
    double mean() const { return tokens ? loss_sum / static_cast<double>(tokens) : 0; }
};

}  // namespace hra
