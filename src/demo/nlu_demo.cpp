#include "demo/nlu_demo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "eval/glue.h"
#include "io/atomic_file.h"
#include "io/output_folder.h"
#include "io/safetensors.h"
#include "models/deberta.h"
#include "models/llama.h"
#include "text/pair_encoder.h"
#include "text/sp_tokenizer.h"
#include "train/glue_trainer.h"
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

// MLM inputs: 15% of the non-special tokens are predicted; of those 80% become
// [MASK], 10% a random token, 10% stay.
std::pair<torch::Tensor, torch::Tensor> mask_tokens(const torch::Tensor& ids, const torch::Tensor& special, int64_t mask_id,
                                                    int64_t first_normal, int64_t vocab) {
    auto pick = torch::rand(ids.sizes()).lt(0.15).logical_and(special.logical_not());
    auto labels = torch::where(pick, ids, torch::full_like(ids, -100));
    auto r = torch::rand(ids.sizes());
    auto masked = pick.logical_and(r.lt(0.8));
    auto randomised = pick.logical_and(r.ge(0.8)).logical_and(r.lt(0.9));
    auto out = torch::where(masked, torch::full_like(ids, mask_id), ids);
    out = torch::where(randomised, torch::randint(first_normal, vocab, ids.sizes(), torch::kLong), out);
    return {out, labels};
}

std::string fmt(const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

}  // namespace

NluDemoResult run_nlu_demo(const NluDemoOptions& o) {
    if (o.data_dir.empty()) throw Error("demo nlu: give --data-dir, the glue_data folder holding SST-2/");
    const auto task = glue::task("sst2");
    const std::string train_file = glue::train_path(task, o.data_dir), dev_file = glue::dev_path(task, o.data_dir);
    auto train = glue::read_tsv(task, train_file);
    glue::read_tsv(task, dev_file);  // fail early
    io::make_dirs(o.out);
    NluDemoResult result;
    auto log = [&](const std::string& s) {
        if (!o.quiet) std::fprintf(stderr, "hra demo nlu: %s\n", s.c_str());
    };

    // 1. SentencePiece vocabulary on the training sentences.
    const std::string model_dir = (fs::path(o.out) / "tiny-deberta").string();
    io::OutputFolder folder(model_dir, /*overwrite=*/true);
    {
        const std::string text_path = (fs::path(o.out) / "sst2-train.txt").string();
        std::string text;
        for (const auto& e : train) text += e.a + "\n";
        io::write_file_atomically(text_path, text);
        train_sentencepiece("--input=" + text_path + " --model_prefix=" + folder.file("spm") + " --vocab_size=" +
                            std::to_string(o.vocab_size) +
                            " --model_type=unigram --character_coverage=1.0 --pad_id=0 --pad_piece=[PAD] --unk_id=3"
                            " --unk_piece=[UNK] --bos_id=-1 --eos_id=-1 --control_symbols=[CLS],[SEP],[MASK]"
                            " --num_threads=2 --minloglevel=2");
        fs::remove(folder.file("spm.vocab"));
        log("SentencePiece vocabulary of " + std::to_string(o.vocab_size) + " pieces trained on " +
            std::to_string(train.size()) + " SST-2 training sentences");
    }
    const auto encoder = PairEncoder(make_sentencepiece_tokenizer(folder.file("spm.model")));
    const int64_t vocab = encoder.tokenizer().vocab_size();
    const json cfg_json = tiny_config(o, vocab);
    io::write_file_atomically(folder.file("config.json"), cfg_json.dump(2) + "\n");
    const auto cfg = parse_deberta_config(cfg_json.dump(), "config.json");

    // 2. Masked-LM pretraining, time-boxed.
    torch::manual_seed(0);
    DebertaForMaskedLM mlm(cfg);
    {
        torch::NoGradGuard ng;
        for (auto& [name, p] : unique_named_parameters(*mlm)) {
            if (name.find("LayerNorm") != std::string::npos) continue;
            if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) p.zero_();
            else p.normal_(0, cfg.initializer_range);
        }
    }
    std::vector<std::vector<int64_t>> sentences;
    for (const auto& e : train) sentences.push_back(encoder.encode(e.a, "", o.pretrain_max_length).ids);
    std::vector<torch::Tensor> params = mlm->parameters();
    AdamW opt(params, {0.9, 0.98, 1e-6, 0.01});
    std::mt19937_64 rng(0);
    std::uniform_int_distribution<size_t> pick(0, sentences.size() - 1);
    mlm->train();
    const auto start = std::chrono::steady_clock::now();
    double smoothed = 0;
    for (int64_t step = 0;; ++step) {
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (elapsed > o.pretrain_minutes * 60) {
            result.pretrain_steps = step;
            result.pretrain_seconds = elapsed;
            break;
        }
        std::vector<const std::vector<int64_t>*> rows;
        size_t len = 0;
        for (int64_t i = 0; i < o.pretrain_batch; ++i) {
            rows.push_back(&sentences[pick(rng)]);
            len = std::max(len, rows.back()->size());
        }
        auto ids = torch::full({o.pretrain_batch, static_cast<int64_t>(len)}, encoder.pad_id(), torch::kLong);
        auto mask = torch::zeros_like(ids);
        for (int64_t i = 0; i < o.pretrain_batch; ++i) {
            const auto& s = *rows[static_cast<size_t>(i)];
            ids[i].narrow(0, 0, static_cast<int64_t>(s.size())).copy_(torch::tensor(s, torch::kLong));
            mask[i].narrow(0, 0, static_cast<int64_t>(s.size())).fill_(1);
        }
        auto special = ids.eq(encoder.cls_id()).logical_or(ids.eq(encoder.sep_id())).logical_or(mask.eq(0));
        auto [inputs, labels] = mask_tokens(ids, special, encoder.mask_id(), 5, vocab);
        auto logits = mlm->forward(inputs, mask).logits;
        auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, vocab}), labels.reshape({-1}),
                                                         torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
        const double v = loss.item<double>();
        if (!std::isfinite(v)) throw Error("non-finite MLM loss at step " + std::to_string(step + 1));
        loss.backward();
        clip_grad_norm(params, 1.0);
        opt.step(o.pretrain_lr * std::min(1.0, static_cast<double>(step + 1) / 200.0));
        opt.zero_grad();
        smoothed = step == 0 ? v : 0.98 * smoothed + 0.02 * v;
        if (step == 0) result.pretrain_first_loss = v;
        result.pretrain_final_loss = smoothed;
        if ((step + 1) % 100 == 0)
            log("MLM step " + std::to_string(step + 1) + ", loss " + fmt("%.3f", smoothed) + ", " +
                fmt("%.0f", elapsed) + " s");
    }
    log("MLM pretraining: " + std::to_string(result.pretrain_steps) + " steps in " + fmt("%.0f", result.pretrain_seconds) +
        " s, loss " + fmt("%.3f", result.pretrain_first_loss) + " -> " + fmt("%.3f", result.pretrain_final_loss));
    {
        io::NamedTensors weights;
        for (auto& [name, p] : unique_named_parameters(*mlm)) weights.emplace_back(name, p.detach());
        io::save_safetensors(folder.file("model.safetensors"), weights);
    }
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
            GlueTrainOptions g;
            g.model = model_dir;
            g.task = "sst2";
            g.train_file = train_file;
            g.dev_file = dev_file;
            g.out = (fs::path(o.out) / "runs" / (std::string(m.name) + "-seed" + std::to_string(seed))).string();
            g.method = m.name;
            g.adapter.r = o.r;
            g.adapter.lora_alpha = static_cast<double>(o.r);
            g.lr = m.lr;
            g.epochs = o.finetune_epochs;
            g.warmup_steps = 30;
            g.max_length = o.max_length;
            g.seed = seed;
            g.max_train_examples = o.finetune_examples;
            g.overwrite = true;
            g.quiet = true;
            auto r = train_glue(g);
            row.trainable = r.trainable_params;
            row.accuracy.push_back(r.best_score);
            log(std::string(m.name) + " seed " + std::to_string(seed) + ": dev accuracy " + fmt("%.4f", r.best_score) +
                " (epoch " + std::to_string(r.best_epoch) + ")");
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
        for (double a : r.accuracy) accs += (accs.empty() ? "" : " / ") + fmt("%.1f%%", 100 * a);
        t += "| " + r.method + " | " + std::to_string(r.trainable) + " | " + fmt("%g", r.lr) + " | " + accs + " | " +
             fmt("%.1f%%", 100 * r.mean) + " | " + fmt("%.1f", 100 * r.spread) + " |\n";
    }
    t += "\nMLM pretraining: " + std::to_string(result.pretrain_steps) + " steps, " + fmt("%.0f s", result.pretrain_seconds) +
         ", loss " + fmt("%.2f", result.pretrain_first_loss) + " -> " + fmt("%.2f", result.pretrain_final_loss) + "\n";
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
