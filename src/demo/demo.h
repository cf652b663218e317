// The bundled demo: stories260K fine-tuned with HRA and LoRA (comparable
// parameter counts, same budget, learning rates picked on a validation split)
// on a small comparison task it can learn. Training, validation and test
// questions are disjoint slices of one de-duplicated pool; every model, the
// base included, is scored on the held-out questions by its generated answer
// and by the likelihood of the two names, over several training seeds, next
// to chance and the majority answer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace hra {

struct DemoOptions {
    std::string out = "demo-run";
    std::string data_dir;      // the bundled data folder (stories260K)
    int64_t train_examples = 2000;
    int64_t val_examples = 200;
    int64_t test_examples = 300;
    int64_t steps = 400;
    int64_t batch_size = 16;
    std::vector<double> hra_lrs = {3e-3, 1e-2, 3e-2};
    std::vector<double> lora_lrs = {1e-3, 3e-3, 1e-2};
    int64_t hra_r = 8, lora_r = 4;
    uint64_t data_seed = 0;               // the pool's order, hence the split
    std::vector<uint64_t> seeds = {0, 1, 2};  // training seeds; learning rates are chosen with the first
};

// A "who has more" question: two names, two counts, one object kind.
struct ComparisonItem {
    std::string query, answer, other;  // answer: the name with more; other: the name with fewer
    bool first_wins;                   // the answer is the first name mentioned
};
// Every distinct question of the task (20,160), in an order fixed by `seed`.
std::vector<ComparisonItem> comparison_pool(uint64_t seed);

struct DemoSplit {
    std::vector<ComparisonItem> train, val, test;  // consecutive slices of one pool: no question in two
};
DemoSplit demo_split(const DemoOptions& options);

// Accuracy two ways: the first word generated (greedy) is the answer; the
// answer's name is likelier than the other's after the prompt.
struct DemoScore {
    double generation = 0, likelihood = 0;
};

struct DemoRun {
    std::string method;
    double lr = 0;
    uint64_t seed = 0;
    int64_t parameters = 0;
    double seconds = 0, val_loss = 0;
    std::string adapter_dir;
    DemoScore val, test;  // val: the learning-rate sweep's runs; test: the chosen learning rate's
    bool validated = false, tested = false;
};

struct DemoRow {
    std::string method;  // "hra" | "lora"
    int64_t parameters = 0;
    double lr = 0;
    std::string lr_note;          // ties, nothing learnt, or the grid's edge ("" when none)
    std::vector<DemoScore> test;  // one per seed
    DemoScore mean, min, max;
};

struct DemoResult {
    double chance = 0.5, majority = 0;
    DemoScore before;            // the base model
    std::vector<DemoRow> rows;   // per method, at its chosen learning rate
    std::vector<DemoRun> runs;   // every training run
    std::string table;           // the printed summary
    nlohmann::json summary;      // the same, as the last stdout line and demo.json
};

DemoResult run_demo(const DemoOptions& options);

}  // namespace hra
