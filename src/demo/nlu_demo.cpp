#include "demo/nlu_demo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "eval/glue.h"
#include "io/atomic_file.h"
#include "io/output_folder.h"
#include "io/safetensors.h"
#include "models/deberta.h"
#include "text/pair_encoder.h"
#include "text/sp_tokenizer.h"
#include "train/tasks/glue.h"
#include "train/engine.h"
#include "train/optim.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json tiny_config(const NluDemoOptions& o, int64_t vocab) {
    return {{"model_type", "deberta-v2"},
            {"vocab_size", vocab},
            {"hidden_size", o.hidden},
            {"num_hidden_layers", o.layers},
            {"num_attention_heads", o.heads},
            {"intermediate_size", o.intermediate},
            {"hidden_act", "gelu"},
            {"hidden_dropout_prob", 0.1},
            {"attention_probs_dropout_prob", 0.1},
            {"max_position_embeddings", 512},
            {"type_vocab_size", 0},
            {"initializer_range", 0.02},
            {"layer_norm_eps", 1e-7},
            {"relative_attention", true},
            {"max_relative_positions", -1},
            {"position_buckets", 64},
            {"norm_rel_ebd", "layer_norm"},
            {"share_att_key", true},
            {"pos_att_type", "p2c|c2p"},
            {"position_biased_input", false},
            {"pad_token_id", 0}};
}

}  // namespace

NluDemoResult run_nlu_demo(const NluDemoOptions& o) {
    if (o.data_dir.empty()) throw Error("demo nlu: give --data-dir, the glue_data folder holding SST-2/");
    const auto task = glue::task("sst2");
    const std::string train_file = glue::train_path(task, o.data_dir), dev_file = glue::dev_path(task, o.data_dir);
    const auto sst2_train = glue::read_tsv(task, train_file);
    glue::read_tsv(task, dev_file);  // fail early
    io::make_dirs(o.out);
    NluDemoResult result;
    auto log = [&](const std::string& s) {
        log_info("hra demo nlu: " + s);
    };

    // 1. SentencePiece vocabulary on the training sentences.
    const std::string model_dir = (fs::path(o.out) / "tiny-deberta").string();
    io::OutputFolder folder(model_dir, /*overwrite=*/true);
    const std::string text_path = (fs::path(o.out) / "sst2-train.txt").string();
    {
        std::string text;
        for (const auto& e : sst2_train) text += e.a + "\n";
        io::write_file_atomically(text_path, text);
        train_sentencepiece("--input=" + text_path + " --model_prefix=" + folder.file("spm") + " --vocab_size=" +
                            std::to_string(o.vocab_size) +
                            " --model_type=unigram --character_coverage=1.0 --pad_id=0 --pad_piece=[PAD] --unk_id=3"
                            " --unk_piece=[UNK] --bos_id=-1 --eos_id=-1 --control_symbols=[CLS],[SEP],[MASK]"
                            " --num_threads=2 --minloglevel=2");
        fs::remove(folder.file("spm.vocab"));
        log("SentencePiece vocabulary of " + std::to_string(o.vocab_size) + " pieces trained on " +
            std::to_string(sst2_train.size()) + " SST-2 training sentences");
    }
    const auto encoder = PairEncoder(make_sentencepiece_tokenizer(folder.file("spm.model")));
    const int64_t vocab = encoder.tokenizer().vocab_size();
    const json cfg_json = tiny_config(o, vocab);
    io::write_file_atomically(folder.file("config.json"), cfg_json.dump(2) + "\n");

    // 2. Masked-LM pretraining from scratch, time-boxed: the engine's mlm task.
    {
        TrainOptions t;
        t.task = "mlm";
        t.model = folder.temp_path();
        t.data = text_path;
        t.out = (fs::path(o.out) / "mlm").string();
        t.set_method("full");
        t.from_scratch = true;
        t.data_options.max_length = o.pretrain_max_length;
        t.lr = o.pretrain_lr;
        t.schedule = Schedule::Constant;
        t.warmup_steps = 200;
        t.adam_beta1 = 0.9;
        t.adam_beta2 = 0.98;
        t.adam_eps = 1e-6;
        t.weight_decay = 0.01;
        t.batch_size = o.pretrain_batch;
        t.max_grad_norm = 1.0;
        t.max_steps = 1000000;
        t.max_minutes = o.pretrain_minutes;
        t.seed = 0;
        t.overwrite = true;
        TrainResult r;
        {
            ScopedLogLevel quiet(LogLevel::Warning);
            r = train(t);
        }
        result.pretrain_steps = r.steps;
        result.pretrain_seconds = 0;
        double smoothed = 0;
        for (size_t i = 0; i < r.history.size(); ++i) {
            const auto& h = r.history[i];
            result.pretrain_seconds += h.ms / 1000.0;
            smoothed = i == 0 ? h.loss : 0.98 * smoothed + 0.02 * h.loss;
            if ((i + 1) % 100 == 0)
                log("MLM step " + std::to_string(i + 1) + ", loss " + strprintf("%.3f", smoothed) + ", " +
                    strprintf("%.0f", result.pretrain_seconds) + " s");
        }
        if (!r.history.empty()) result.pretrain_first_loss = r.history.front().loss;
        result.pretrain_final_loss = smoothed;
        io::write_file_atomically(folder.file("model.safetensors"),
                                  io::read_file((fs::path(r.adapter_dir) / "model.safetensors").string()));
    }
    log("MLM pretraining: " + std::to_string(result.pretrain_steps) + " steps in " + strprintf("%.0f", result.pretrain_seconds) +
        " s, loss " + strprintf("%.3f", result.pretrain_first_loss) + " -> " + strprintf("%.3f", result.pretrain_final_loss));
    folder.commit();

    // 3. Fine-tuning on SST-2: head only, HRA, LoRA; several seeds.
    struct Method {
        const char* name;
        double lr;
    };
    for (const Method m : {Method{"head", o.head_lr}, Method{"hra", o.hra_lr}, Method{"lora", o.lora_lr}}) {
        NluDemoRow row;
        row.method = m.name;
        row.lr = m.lr;
        for (uint64_t seed : o.seeds) {
            TrainOptions g;
            g.model = model_dir;
            g.task = "glue-sst2";
            g.train_file = train_file;
            g.dev_file = dev_file;
            g.out = (fs::path(o.out) / "runs" / (std::string(m.name) + "-seed" + std::to_string(seed))).string();
            g.set_method(m.name);
            g.adapter.r = o.r;
            if (g.method == "lora") g.adapter.set("lora_alpha", o.r);
            glue_task_defaults(g);
            g.lr = m.lr;
            g.epochs = o.finetune_epochs;
            g.warmup_steps = 30;
            g.data_options.max_length = o.max_length;
            g.seed = seed;
            g.max_train_examples = o.finetune_examples;
            g.overwrite = true;
            TrainResult r;
            {
                ScopedLogLevel quiet(LogLevel::Warning);
                r = train(g);
            }
            row.trainable = r.result["config"]["task_config"]["trainable_params"].get<int64_t>();
            row.accuracy.push_back(r.best_score.value_or(0));
            log(std::string(m.name) + " seed " + std::to_string(seed) + ": dev accuracy " + strprintf("%.4f", r.best_score.value_or(0)) +
                " (epoch " + std::to_string(r.result.value("best_epoch", int64_t(0))) + ")");
        }
        const auto [lo, hi] = std::minmax_element(row.accuracy.begin(), row.accuracy.end());
        row.spread = *hi - *lo;
        for (double a : row.accuracy) row.mean += a / static_cast<double>(row.accuracy.size());
        result.rows.push_back(row);
    }
    const auto& head = result.rows[0];
    auto beats = [&](const NluDemoRow& r) { return r.mean - head.mean > std::max(r.spread, head.spread); };
    result.passed = beats(result.rows[1]) && beats(result.rows[2]);

    std::string t = "| method | trainable | lr | dev accuracy per seed | mean | spread |\n|---|---|---|---|---|---|\n";
    for (const auto& r : result.rows) {
        std::string accs;
        for (double a : r.accuracy) accs += (accs.empty() ? "" : " / ") + strprintf("%.1f%%", 100 * a);
        t += "| " + r.method + " | " + std::to_string(r.trainable) + " | " + strprintf("%g", r.lr) + " | " + accs + " | " +
             strprintf("%.1f%%", 100 * r.mean) + " | " + strprintf("%.1f", 100 * r.spread) + " |\n";
    }
    t += "\nMLM pretraining: " + std::to_string(result.pretrain_steps) + " steps, " + strprintf("%.0f s", result.pretrain_seconds) +
         ", loss " + strprintf("%.2f", result.pretrain_first_loss) + " -> " + strprintf("%.2f", result.pretrain_final_loss) + "\n";
    t += std::string("HRA and LoRA each beat head-only by more than the seed spread: ") + (result.passed ? "yes" : "no") + "\n";
    result.table = t;
    json j = {{"pretrain_steps", result.pretrain_steps}, {"pretrain_seconds", result.pretrain_seconds},
              {"pretrain_loss_first", result.pretrain_first_loss}, {"pretrain_loss_final", result.pretrain_final_loss},
              {"passed", result.passed}};
    for (const auto& r : result.rows)
        j["methods"][r.method] = {{"trainable", r.trainable}, {"lr", r.lr}, {"accuracy", r.accuracy}, {"mean", r.mean}, {"spread", r.spread}};
    io::write_file_atomically((fs::path(o.out) / "results.json").string(), j.dump(2) + "\n");
    io::write_file_atomically((fs::path(o.out) / "results.md").string(), t);
    return result;
}

}  // namespace hra
