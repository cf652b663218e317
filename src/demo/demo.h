// The bundled demo: stories260K fine-tuned with HRA and with LoRA (comparable
// parameter counts, same budget, learning rates picked on a validation split)
// on a small comparison task it can learn, evaluated before and after on
// held-out examples drawn with a different seed, next to chance and majority.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hra {

struct DemoOptions {
    std::string out = "demo-run";
    std::string data_dir;      // the bundled data folder (stories260K)
    int64_t train_examples = 2000;
    int64_t val_examples = 200;
    int64_t test_examples = 300;
    int64_t steps = 400;
    int64_t batch_size = 16;
    std::vector<double> hra_lrs = {1e-2, 2e-2, 3e-2};
    std::vector<double> lora_lrs = {2e-3, 5e-3, 1e-2};
    int64_t hra_r = 8, lora_r = 4;
    uint64_t seed = 0;
};

// A "who has more" question: two names, two counts, one object kind.
struct ComparisonItem {
    std::string query, answer;  // answer: the name with more
    bool first_wins;            // the answer is the first name mentioned
};
std::vector<ComparisonItem> comparison_items(int64_t n, uint64_t seed);

struct DemoRow {
    std::string method;
    int64_t parameters = 0;
    double lr = 0;
    double val_accuracy = 0, test_accuracy = 0, train_seconds = 0;
};

struct DemoResult {
    double before_accuracy = 0, chance = 0.5, majority = 0;
    std::vector<DemoRow> rows;  // best learning rate per method
    std::vector<DemoRow> sweep;  // every run
    std::string table;          // the printed summary
};

DemoResult run_demo(const DemoOptions& options);

}  // namespace hra
