// GLUE with a DeBERTa-v2/v3 classifier: encoding a task's examples, batched
// prediction, the seed's per-task settings, and dev-set evaluation of a model
// folder with adapters (hra eval --task glue-*). The training task
// (train/tasks/glue.cpp) uses the same pieces.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/peft_model.h"
#include "data/batch.h"
#include "eval/glue.h"
#include "io/records.h"
#include "models/deberta_loader.h"
#include "text/pair_encoder.h"

namespace hra {

struct GluePreset {
    double lr;
    int64_t epochs, warmup_steps, max_length;
};
// "seed": the seed repository's current scripts (HRA.md §3, first table);
// "paper": Table 5's epochs and learning rates with the seed's warmup and
// lengths. WNLI has no published setting and gets RTE's. STS-B's "default"
// length is 128 here. hra::Error for an unknown preset.
GluePreset glue_preset(const glue::Task& task, const std::string& preset);

namespace glue {

// A task's examples as token ids, segment ids and labels.
struct Encoded {
    std::vector<std::vector<int64_t>> ids, types;
    std::vector<double> labels;
};
Encoded encode_all(const PairEncoder& encoder, const std::vector<Example>& examples, int64_t max_length);
// Rows of `data` padded into one batch.
PaddedBatch collate(const Encoded& data, const std::vector<int64_t>& rows, int64_t pad);
// Predictions (class ids, or scores for regression) in the data's order, in eval mode.
std::vector<double> predict_encoded(DebertaForSequenceClassificationImpl& model, const Encoded& data, int64_t pad,
                                    int64_t batch_size, const std::string& device = "cpu");
// The load options of a classifier for this task (label count, problem type, head init seed).
DebertaLoadOptions classifier_load_options(const Task& task, c10::ScalarType dtype, uint64_t seed);
// Injection options of a classifier: DeBERTa's defaults, `classifier` left out of all-linear.
InjectOptions classifier_inject_options();
// The first `limit` examples (all when limit <= 0).
std::vector<Example> limited(std::vector<Example> examples, int64_t limit);

}  // namespace glue

// Predictions (class ids, or scores for regression) in the examples' order.
std::vector<double> predict_glue(DebertaForSequenceClassificationImpl& model, const PairEncoder& encoder,
                                 const std::vector<glue::Example>& examples, int64_t max_length, int64_t batch_size);

struct GlueEvalOptions {
    std::string model;                  // DeBERTa folder
    std::vector<std::string> adapters;  // PEFT folders (a run's best/), applied together
    std::string task;                   // "wnli", "glue-wnli", ...
    std::string data_dir;               // the glue_data folder, or
    std::string dev_file;               // a dev TSV
    int64_t max_length = 0;             // 0: the seed preset's
    int64_t limit = 0;                  // first N examples (0: all)
    c10::ScalarType dtype = c10::ScalarType::Float;
    int64_t batch_size = 64;
    std::string output;                 // predictions JSONL (optional)
    io::OnBadRecord on_bad_record = io::OnBadRecord::Fail;
};

// Dev-set metrics (glue::metrics) of a model folder with adapters.
nlohmann::json evaluate_glue(const GlueEvalOptions& options);

}  // namespace hra
