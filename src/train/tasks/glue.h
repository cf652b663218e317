// Tasks glue-<name>: fine-tuning DeBERTa-v2/v3 classifiers on GLUE with HRA or
// LoRA (the paper's NLU experiment), or the head alone as a baseline, as tasks
// of the training engine: per-task presets, dev-set metrics after every epoch,
// the best epoch kept by the task's main metric. Also dev-set evaluation of a
// trained folder (hra eval --task glue-*).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/glue.h"
#include "train/options.h"

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

// The task defaults for the options not in `given`: the preset's lr, epochs,
// warmup and length, batch 32, evaluation batch 64, weight decay 0.01, eps 1e-6.
void glue_task_defaults(TrainOptions& options, const std::set<std::string>& given = {});

// Predictions (class ids, or scores for regression) in the examples' order.
std::vector<double> predict_glue(DebertaForSequenceClassificationImpl& model, const PairEncoder& encoder,
                                 const std::vector<glue::Example>& examples, int64_t max_length, int64_t batch_size);

// hra eval --task glue-* --model DIR [--adapter PEFT] : dev-set metrics.
nlohmann::json evaluate_glue(const std::string& model, const std::vector<std::string>& adapters, const std::string& task,
                             const std::string& data_dir, const std::string& dev_file, int64_t max_length,
                             int64_t limit, const std::string& dtype, const std::string& output);

}  // namespace hra
