// What a training task gives the engine (train/engine.h): the model and what
// trains on it, the loss of a batch of example rows, evaluation with its
// metrics, and what a checkpoint holds. The engine owns everything else.
//
// Tasks are found by name in a registry (`hra train --task NAME`): causal-lm
// (the default), glue-<task> and mlm. A task lists the task-specific options
// it takes; any other task-specific option given is an error.
#pragma once

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "core/householder.h"
#include "train/options.h"

namespace hra {

// The loss of one micro-batch: a sum over `count` items (tokens, examples),
// so that the engine can average over the items of every process exactly.
struct BatchLoss {
    at::Tensor sum;      // scalar, float32 or wider
    double count = 0;    // what the sum runs over
    int64_t tokens = 0;  // input tokens processed (throughput)
    int64_t seq_len = 0;  // padded length (the FLOP estimate)
};

// Evaluation in fixed batches of `eval_batch_size` (else `batch_size`) rows
// 0..size-1, with a generator of its own seeded from `seed`, so that every
// evaluation draws the same masks or noise; returns the summed losses and
// their count.
struct EvalTotals {
    double sum = 0, count = 0;
    double mean() const { return count > 0 ? sum / count : 0.0; }
};
EvalTotals evaluate_in_batches(const TrainOptions& o, int64_t size,
                               const std::function<BatchLoss(const std::vector<int64_t>& rows, at::Generator* gen)>& loss);

class TrainTask {
public:
    virtual ~TrainTask() = default;
    // Loads the model, data and adapters on `device`: fresh, or with the
    // trainable state of checkpoint folder `resume_dir` when not empty.
    virtual void setup(const std::string& resume_dir) = 0;
    virtual int64_t train_size() const = 0;
    virtual int64_t eval_size() const { return 0; }
    virtual std::vector<at::Tensor> trainable_parameters() = 0;
    // Loss over training rows (indices into the training set); never empty.
    virtual BatchLoss loss(const std::vector<int64_t>& rows) = 0;
    // Σ of the HRA orthogonality penalty over the adapters (undefined: none).
    virtual at::Tensor orthogonality_penalty(core::PenaltyForm) const { return {}; }
    // Metrics on the evaluation set (empty object: the task has none);
    // `main_metric()` names the one that chooses the best checkpoint.
    virtual nlohmann::json evaluate() { return nlohmann::json::object(); }
    virtual std::string main_metric() const { return "loss"; }
    virtual bool higher_is_better() const { return false; }
    // Writes what a checkpoint, best/ or final folder holds of the model (a
    // PEFT adapter folder, a head, full weights) into existing folder `dir`.
    virtual void save(const std::string& dir) const = 0;
    virtual void set_training(bool on) = 0;
    // Matrix FLOPs per trained token at this padded length (0: unknown).
    virtual double flops_per_token(double seq_len) const { return 0; }
    // One line: what trains ("trainable params: ..."), for the log.
    virtual std::string summary() const = 0;
    // Task-specific part of config.json and of the final result.
    virtual nlohmann::json describe() const { return nlohmann::json::object(); }
};

struct TaskInfo {
    std::string name;
    std::string help;
    std::vector<std::string> options;     // task-specific options it takes (long names without --)
    std::vector<std::string> methods;     // allowed --method values; the first is the default
    bool grad_checkpoint = false;         // whether --grad-checkpoint applies
    // Fills task defaults (presets) for options not in `given`.
    std::function<void(TrainOptions&, const std::set<std::string>& given)> defaults;
    std::function<std::unique_ptr<TrainTask>(const TrainOptions&)> make;
};

// Every registered task, in --help order.
const std::vector<TaskInfo>& task_registry();
// hra::Error listing the tasks when `name` is unknown.
const TaskInfo& find_task(const std::string& name);
// Every option that some task takes and others do not.
std::set<std::string> task_specific_options();

// Registration (one call per task family, from train/tasks/*.cpp).
std::vector<TaskInfo> causal_lm_tasks();
std::vector<TaskInfo> glue_tasks();
std::vector<TaskInfo> mlm_tasks();
std::vector<TaskInfo> text_to_image_tasks();

}  // namespace hra
