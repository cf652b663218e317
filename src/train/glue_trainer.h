// Fine-tuning DeBERTa-v2/v3 classifiers on GLUE with HRA or LoRA (the paper's
// NLU experiment), or the head alone as a baseline: per-task presets,
// evaluation on the dev set after every epoch, the best epoch's adapter kept,
// results as JSON.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/config.h"
#include "eval/glue.h"

namespace hra {

class DebertaForSequenceClassificationImpl;
class PairEncoder;

// The paper's targets (HRA.md §3: q/k/v, attention output, intermediate and
// output dense of every layer), written for PEFT's full-match regex; a plain
// `dense` suffix would also catch pooler.dense.
extern const char* const kGlueTargetRegex;

struct GluePreset {
    double lr;
    int64_t epochs, warmup_steps, max_length;
};
// "seed": the seed repository's current scripts (HRA.md §3, first table);
// "paper": Table 5's epochs and learning rates with the seed's warmup and
// lengths. WNLI has no published setting and gets RTE's. STS-B's "default"
// length is 128 here. hra::Error for an unknown preset.
GluePreset glue_preset(const glue::Task& task, const std::string& preset);

struct GlueTrainOptions {
    std::string model;     // HF folder: config.json, weights, spm.model
    std::string task;      // glue-sst2, sst2, ...
    std::string data_dir;  // glue_data layout; or train_file / dev_file
    std::string train_file, dev_file;
    std::string out;       // run folder
    std::string method = "hra";  // hra, lora, head (pooler + classifier only)
    AdapterConfig adapter;       // r, apply_GS, lora_alpha ...; targets default to kGlueTargetRegex
    bool adapters_only = false;  // no modules_to_save: the seed's run.py trains hra_u alone
    std::string preset = "seed";
    // Negative: from the preset.
    double lr = -1;
    int64_t epochs = -1, warmup_steps = -1, max_length = -1;
    int64_t batch_size = 32, eval_batch_size = 64;
    double weight_decay = 0.01, adam_eps = 1e-6, max_grad_norm = 1.0, ortho_lambda = 0;
    std::string schedule = "linear", dtype = "float32", strategy = "auto";
    uint64_t seed = 0;
    int64_t max_train_examples = 0, max_eval_examples = 0;  // 0: all
    bool overwrite = false, quiet = false;
};

struct GlueEpoch {
    int64_t epoch = 0;
    double train_loss = 0, seconds = 0, examples_per_s = 0;
    nlohmann::json metrics;
};

struct GlueTrainResult {
    std::vector<GlueEpoch> epochs;
    int64_t best_epoch = 0;
    double best_score = 0;
    std::string main_metric;
    int64_t adapter_params = 0, trainable_params = 0, total_params = 0;
    std::string best_dir;
    nlohmann::json results;  // what results.json holds
};

GlueTrainResult train_glue(const GlueTrainOptions& options);

// Predictions (class ids, or scores for regression) in the examples' order.
std::vector<double> predict_glue(DebertaForSequenceClassificationImpl& model, const PairEncoder& encoder,
                                 const std::vector<glue::Example>& examples, int64_t max_length, int64_t batch_size);

// hra eval --task glue-* --model DIR [--adapter PEFT] : dev-set metrics.
nlohmann::json evaluate_glue(const std::string& model, const std::vector<std::string>& adapters, const std::string& task,
                             const std::string& data_dir, const std::string& dev_file, int64_t max_length,
                             int64_t limit, const std::string& dtype, const std::string& output);

}  // namespace hra
