// Tasks glue-<name>: fine-tuning DeBERTa-v2/v3 classifiers on GLUE with HRA or
// LoRA (the paper's NLU experiment), or the head alone as a baseline, as tasks
// of the training engine: per-task presets, dev-set metrics after every epoch,
// the best epoch kept by the task's main metric. Dev-set evaluation of a
// trained folder is eval/glue_model.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/glue.h"
#include "eval/glue_model.h"
#include "train/options.h"

namespace hra {

// The paper's targets (HRA.md §3: q/k/v, attention output, intermediate and
// output dense of every layer), written for PEFT's full-match regex; a plain
// `dense` suffix would also catch pooler.dense.
extern const char* const kGlueTargetRegex;

// The task defaults for the options not in `given`: the preset's lr, epochs,
// warmup and length, batch 32, evaluation batch 64, weight decay 0.01, eps 1e-6.
void glue_task_defaults(TrainOptions& options, const std::set<std::string>& given = {});

}  // namespace hra
