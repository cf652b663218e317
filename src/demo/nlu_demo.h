// hra demo nlu: no pretrained DeBERTa can be downloaded here, so the demo
// makes one. It trains a SentencePiece vocabulary on SST-2's training text,
// pretrains a tiny DeBERTa-v3-style encoder with the masked-LM objective on
// that text (time-boxed), writes it as a Hugging Face folder, then fine-tunes
// head-only, HRA and LoRA classifiers on SST-2 over several seeds and reports
// dev accuracy (mean and spread).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hra {

struct NluDemoOptions {
    std::string data_dir;  // glue_data folder holding SST-2/train.tsv and dev.tsv
    std::string out = "demo-nlu";
    int64_t vocab_size = 2000;
    int64_t hidden = 128, layers = 4, heads = 4, intermediate = 512;
    double pretrain_minutes = 8;  // wall-clock box for MLM pretraining
    int64_t pretrain_batch = 64, pretrain_max_length = 48;
    double pretrain_lr = 1e-3;
    int64_t finetune_examples = 4000;  // SST-2 training examples per fine-tuning run
    int64_t finetune_epochs = 3;
    int64_t max_length = 64;
    std::vector<uint64_t> seeds = {0, 1, 2};
    double head_lr = 3e-3, hra_lr = 3e-3, lora_lr = 1e-3;
    int64_t r = 8;
};

struct NluDemoRow {
    std::string method;
    int64_t trainable = 0;
    double lr = 0;
    std::vector<double> accuracy;  // per seed
    double mean = 0, spread = 0;   // spread: max - min over seeds
};

struct NluDemoResult {
    double pretrain_seconds = 0, pretrain_final_loss = 0, pretrain_first_loss = 0;
    int64_t pretrain_steps = 0;
    std::vector<NluDemoRow> rows;
    bool passed = false;  // HRA and LoRA each beat head-only by more than the seed spread
    std::string table;
};

NluDemoResult run_nlu_demo(const NluDemoOptions& options);

}  // namespace hra
