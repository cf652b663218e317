// GLUE: the official TSV files of the 9 tasks (as download_glue_data.py writes
// them), labels in Hugging Face's order, and the metrics with sklearn's and
// scipy's conventions.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "io/records.h"

namespace hra::glue {

struct Task {
    std::string name;                 // cola, sst2, mrpc, stsb, qqp, mnli, mnli-mm, qnli, rte, wnli
    std::string folder;               // CoLA, SST-2, ...
    std::string dev_file;             // dev.tsv, dev_matched.tsv, dev_mismatched.tsv
    std::vector<std::string> labels;  // label names by id (HF order); empty for STS-B (regression)
    bool pair = true;
    int64_t num_labels() const { return labels.empty() ? 1 : static_cast<int64_t>(labels.size()); }
    bool regression() const { return labels.empty(); }
};

// "cola", "glue-cola", "sst-2", "sts-b", "mnli-mm" ... ; hra::Error listing the tasks otherwise.
Task task(const std::string& name);
const std::vector<std::string>& task_names();

struct Example {
    std::string a, b;  // b empty for single-sentence tasks
    double label = 0;  // class id, or the STS-B score; -1 when the file has no labels (test sets)
    int64_t line = 0;  // 1-based line in the file
};

// Reads a task's TSV (train.tsv, dev*.tsv or test*.tsv). Columns are found by
// the header's names (CoLA: fixed columns, no header); a UTF-8 BOM is skipped.
// Rows with the wrong number of fields, unknown labels or unparsable scores
// are errors naming the file and line, or skipped with a counted warning, as
// `on_bad_record` says; a file without examples is an error.
std::vector<Example> read_tsv(const Task& t, const std::string& path,
                              io::OnBadRecord on_bad_record = io::OnBadRecord::Fail);

// <data_dir>/<folder>/train.tsv and the dev file.
std::string train_path(const Task& t, const std::string& data_dir);
std::string dev_path(const Task& t, const std::string& data_dir);

// A label given as a class id, a label name (or a number for STS-B); errors
// name `file` and `line`.
double parse_label(const Task& t, const nlohmann::json& value, const std::string& file = "", long line = 0);

// Metrics as fractions.
double accuracy(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold);
double f1_binary(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold);  // positive class 1; 0 without positives
double matthews(const std::vector<int64_t>& pred, const std::vector<int64_t>& gold);   // 0 on a zero denominator
std::optional<double> pearson(const std::vector<double>& x, const std::vector<double>& y);   // nullopt on constant input
std::optional<double> spearman(const std::vector<double>& x, const std::vector<double>& y);  // average ranks for ties
std::vector<double> average_ranks(const std::vector<double>& x);  // 1-based

// The task's metrics as a JSON object: accuracy (all classification tasks),
// f1 (MRPC, QQP), mcc (CoLA), pearson/spearman/corr_mean (STS-B; null when
// undefined), plus "n". `main` names the paper's metric.
nlohmann::json metrics(const Task& t, const std::vector<double>& pred, const std::vector<double>& gold);
std::string main_metric(const Task& t);

// hra eval --predictions: JSONL records with `prediction` and `label`; a bad
// record fails or is skipped (counted in "skipped") as `on_bad_record` says.
nlohmann::json score_predictions_file(const Task& t, const std::string& path,
                                      io::OnBadRecord on_bad_record = io::OnBadRecord::Fail);

}  // namespace hra::glue
