// GLUE fine-tuning: the paper's adapter count on deberta-v3-base's shape, the
// pair encoder's truncation, and short training runs of the tiny DeBERTa
// fixture on the committed WNLI / STS-B samples (results, best checkpoint,
// evaluation of the saved adapter).
#include <filesystem>
#include <fstream>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "eval/glue.h"
#include "eval/glue_model.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/deberta.h"
#include "models/model_weights.h"
#include "text/pair_encoder.h"
#include "text/sp_tokenizer.h"
#include "train/engine.h"
#include "train/tasks/glue.h"
#include "test_util.h"

using namespace hra;
namespace fs = std::filesystem;

namespace {

// Words -> ids by a fixed table; [CLS] 1, [SEP] 2, [PAD] 0.
class WordTokenizer : public Tokenizer {
public:
    std::vector<int64_t> encode(const std::string& text, bool) const override {
        std::vector<int64_t> out;
        std::istringstream in(text);
        std::string w;
        while (in >> w) out.push_back(10 + static_cast<int64_t>(w.size()));
        return out;
    }
    std::string decode(const std::vector<int64_t>&, bool) const override { return ""; }
    int64_t vocab_size() const override { return 100; }
    std::optional<int64_t> bos_id() const override { return std::nullopt; }
    std::optional<int64_t> eos_id() const override { return std::nullopt; }
    std::string token(int64_t) const override { return ""; }
    std::optional<int64_t> token_id(const std::string& t) const override {
        if (t == "[PAD]") return 0;
        if (t == "[CLS]") return 1;
        if (t == "[SEP]") return 2;
        return std::nullopt;
    }
    bool is_special(int64_t id) const override { return id < 3; }
    std::string kind() const override { return "words"; }
};

// The tiny DeBERTa fixture's backbone with a SentencePiece vocabulary (< 128
// pieces) trained on the WNLI sample, as a model folder without a head.
const std::string& tiny_model() {
    static test::TempDir dir;
    static bool made = false;
    if (!made) {
        const std::string fixture = std::string(HRA_TEST_FIXTURES) + "/deberta-v3-tiny";
        fs::copy_file(fixture + "/config.json", dir / "config.json");
        auto all = io::SafetensorsFile::open(fixture + "/model.safetensors");
        io::NamedTensors backbone;
        for (const auto& name : all.names())
            if (name.rfind("deberta.", 0) == 0) backbone.emplace_back(name, all.tensor(name).to(torch::kFloat));
        io::save_safetensors(dir / "model.safetensors", backbone);
        std::string text;
        for (const auto& e : glue::read_tsv(glue::task("wnli"), test::data_file("glue/WNLI/train.tsv"))) text += e.a + "\n" + e.b + "\n";
        io::write_file_atomically(dir / "text.txt", text);
        train_sentencepiece("--input=" + (dir / "text.txt") + " --model_prefix=" + (dir / "spm") +
                            " --vocab_size=100 --hard_vocab_limit=false --model_type=unigram --character_coverage=0.98"
                            " --pad_id=0 --pad_piece=[PAD] --unk_id=3 --unk_piece=[UNK] --bos_id=-1 --eos_id=-1"
                            " --control_symbols=[CLS],[SEP],[MASK] --minloglevel=2");
        made = true;
    }
    return dir.path();
}

}  // namespace

TEST(PairEncoder, SpecialTokensAndLongestFirstTruncation) {
    PairEncoder enc(std::make_shared<WordTokenizer>());
    // word ids are 10 + length: "a"=11, "bb"=12, "ccc"=13 ...
    auto e = enc.encode("a bb ccc", "dddd", 64);
    EXPECT_EQ(e.ids, (std::vector<int64_t>{1, 11, 12, 13, 2, 14, 2}));
    EXPECT_EQ(e.token_type_ids, (std::vector<int64_t>{0, 0, 0, 0, 0, 1, 1}));
    // 4 + 2 words, max 7: two tokens to drop, both from the longer first sequence.
    e = enc.encode("a bb ccc dddd", "a bb", 7);
    EXPECT_EQ(e.ids, (std::vector<int64_t>{1, 11, 12, 2, 11, 12, 2}));
    // A tie drops from the second sequence (transformers' longest_first).
    e = enc.encode("a bb", "ccc dddd", 6);
    EXPECT_EQ(e.ids, (std::vector<int64_t>{1, 11, 12, 2, 13, 2}));
    e = enc.encode("a bb ccc", "", 3);
    EXPECT_EQ(e.ids, (std::vector<int64_t>{1, 11, 2}));
    EXPECT_THROW(enc.encode("a", "b", 2), Error);
}

TEST(GlueTraining, PaperAdapterCountOnDebertaV3BaseShape) {
    // deberta-v3-base's shape; the paper's count is 12 * (6 * 768 + 3072) * 8 = 663,552.
    DebertaConfig c = parse_deberta_config(
        R"({"model_type": "deberta-v2", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "vocab_size": 128100, "relative_attention": true, "position_buckets": 256,
            "norm_rel_ebd": "layer_norm", "share_att_key": true, "pos_att_type": "p2c|c2p",
            "position_biased_input": false, "max_relative_positions": -1, "num_labels": 2})",
        "config.json");
    std::shared_ptr<DebertaForSequenceClassificationImpl> model;
    {
        SkipInitGuard skip;  // shapes only
        model = std::make_shared<DebertaForSequenceClassificationImpl>(c);
    }
    PeftModel peft(model, glue::classifier_inject_options());
    AdapterConfig cfg;
    cfg.r = 8;
    cfg.target_modules = ModuleSelector::regex(kGlueTargetRegex);
    auto adapted = peft.add_adapter("default", cfg);
    EXPECT_EQ(adapted.size(), 72u);  // 6 per layer
    for (const auto& m : adapted) EXPECT_EQ(m.find("pooler"), std::string::npos) << m;
    int64_t n = 0;
    for (auto& [name, p] : unique_named_parameters(*model))
        if (name.find(".adapters.") != std::string::npos) n += p.numel();
    EXPECT_EQ(n, 663552);
}

namespace {

// Library callers set the task defaults (presets) themselves, as the CLI does.
TrainOptions glue_options(const std::string& task, const std::string& out, const std::string& method) {
    TrainOptions o;
    o.task = task;
    glue_task_defaults(o);
    o.model = tiny_model();
    o.data_dir = test::data_file("glue");
    o.out = out;
    o.set_method(method);
    return o;
}

int64_t task_int(const TrainResult& r, const char* key) { return r.result["config"]["task_config"][key].get<int64_t>(); }

}  // namespace

TEST(GlueTraining, TrainsEvaluatesAndKeepsTheBestEpoch) {
    test::TempDir out;
    auto o = glue_options("glue-wnli", out / "run", "hra");
    o.lr = 1e-2;
    o.epochs = 3;
    o.warmup_steps = 2;
    o.data_options.max_length = 64;
    o.batch_size = 16;
    o.max_train_examples = 96;
    auto r = train(o);
    ASSERT_EQ(r.evals.size(), 3u);  // one per epoch
    EXPECT_EQ(r.steps, 18);
    EXPECT_EQ(task_int(r, "adapter_params"), 2 * (5 * 32 + 64) * 8);  // q, k, v, attention output, intermediate (in 32), output (in 64)
    EXPECT_EQ(task_int(r, "trainable_params"), task_int(r, "adapter_params") + (32 * 32 + 32) + (2 * 32 + 2));  // + pooler + classifier
    EXPECT_LT(r.evals.back().train_loss, r.evals.front().train_loss);
    for (const auto& e : r.evals) EXPECT_EQ(e.metrics["n"].get<int64_t>(), 71);
    double best = -1;
    for (const auto& e : r.evals) best = std::max(best, e.metrics["accuracy"].get<double>());
    ASSERT_TRUE(r.best_score);
    EXPECT_EQ(*r.best_score, best);
    auto results = io::read_json_file(out / "run/results.json");
    EXPECT_EQ(results["best"]["accuracy"].get<double>(), best);
    auto cfg = io::read_json_file(out / "run/best/adapter_config.json");
    EXPECT_EQ(cfg["peft_type"], "HRA");
    EXPECT_EQ(cfg["task_type"], "SEQ_CLS");
    EXPECT_EQ(cfg["modules_to_save"], nlohmann::json({"pooler", "classifier"}));

    // The saved adapter (with pooler and classifier) evaluates to the best epoch's metrics.
    GlueEvalOptions g;
    g.model = tiny_model();
    g.adapters = {out / "run/best"};
    g.task = "wnli";
    g.data_dir = test::data_file("glue");
    g.max_length = 64;
    g.output = out / "pred.jsonl";
    auto j = evaluate_glue(g);
    EXPECT_EQ(j["accuracy"].get<double>(), best);
    EXPECT_EQ(glue::score_predictions_file(glue::task("wnli"), out / "pred.jsonl")["accuracy"].get<double>(), best);
    // Without an adapter the head is random: refused.
    g.adapters.clear();
    g.output.clear();
    EXPECT_THROW(evaluate_glue(g), Error);
    // A non-empty run folder needs --force.
    EXPECT_THROW(train(o), Error);
}

TEST(GlueTraining, RegressionHeadOnlyAndAdaptersOnly) {
    test::TempDir out;
    auto o = glue_options("glue-stsb", out / "head", "head");
    o.lr = 1e-2;
    o.epochs = 2;
    o.data_options.max_length = 64;
    o.max_train_examples = 64;
    o.max_eval_examples = 50;
    auto r = train(o);
    EXPECT_EQ(r.main_metric, "corr_mean");
    EXPECT_EQ(task_int(r, "trainable_params"), (32 * 32 + 32) + (32 + 1));
    EXPECT_EQ(task_int(r, "adapter_params"), 0);
    EXPECT_TRUE(r.evals[0].metrics.contains("pearson"));
    EXPECT_TRUE(fs::exists(out / "head/best/head.safetensors"));

    o.out = out / "lora";
    o.set_method("lora");
    o.adapters_only = true;
    o.adapter.set("lora_alpha", 8);
    r = train(o);
    EXPECT_EQ(task_int(r, "trainable_params"), task_int(r, "adapter_params"));  // the head stays frozen, as the seed's run.py
    EXPECT_EQ(task_int(r, "adapter_params"), 2 * (4 * 8 * (32 + 32) + 2 * 8 * (32 + 64)));  // r (in + out) per layer
}

// GLUE training now has what the causal-LM loop had: resume bit for bit,
// SIGINT -> checkpoint and exit code 130, NaN -> error with the last
// checkpoint intact (all through the CLI).
TEST(GlueTraining, ResumesBitForBitStopsOnSigintAndNan) {
    test::TempDir dir;
    const std::string common = "-q train --task glue-wnli --model " + tiny_model() + " --data-dir " + test::data_file("glue") +
                               " --epochs 2 --lr 0.01 --max-train-examples 48 --batch-size 8 --max-length 64"
                               " --max-eval-examples 24 --lora-dropout 0.1 --method lora --save-every 2 --out ";
    auto full = test::run_hra(common + (dir / "full"), dir);
    ASSERT_EQ(full.code, 0) << full.err;
    auto cut = test::run_hra(common + (dir / "cut") + " --inject-sigint-at-step 5", dir);
    EXPECT_EQ(cut.code, 130) << cut.err;
    EXPECT_TRUE(fs::exists(dir / "cut/checkpoint-5/adapter_model.safetensors"));
    EXPECT_FALSE(fs::exists(dir / "cut/checkpoint-12"));
    auto rest = test::run_hra(common + (dir / "cut") + " --resume", dir);
    ASSERT_EQ(rest.code, 0) << rest.err;
    for (const char* f : {"checkpoint-12/adapter_model.safetensors", "checkpoint-12/optimizer.safetensors", "best/adapter_model.safetensors"})
        EXPECT_EQ(io::read_file(dir / ("cut/" + std::string(f))), io::read_file(dir / ("full/" + std::string(f)))) << f;
    auto a = nlohmann::json::parse(full.out), b = nlohmann::json::parse(rest.out);
    EXPECT_EQ(a["evaluations"], b["evaluations"]);  // every epoch's metrics and mean training loss
    // The per-step losses, each once.
    auto losses = [&](const std::string& run) {
        std::vector<double> out;
        std::ifstream in(dir / (run + "/metrics.jsonl"));
        for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line)["loss"].get<double>());
        return out;
    };
    EXPECT_EQ(losses("cut"), losses("full"));
    EXPECT_EQ(losses("full").size(), 12u);

    auto nan = test::run_hra(common + (dir / "nan") + " --inject-nan-at-step 7", dir);
    EXPECT_EQ(nan.code, 1);
    EXPECT_NE(nan.err.find("non-finite loss"), std::string::npos) << nan.err;
    EXPECT_FALSE(fs::exists(dir / "nan/checkpoint-7"));
    EXPECT_EQ(io::read_file(dir / "nan/checkpoint-6/adapter_model.safetensors"),
              io::read_file(dir / "full/checkpoint-6/adapter_model.safetensors"));
}

TEST(GlueTraining, CommandLinePresetsAndFlags) {
    test::TempDir dir;
    // Flags given win over the preset; the rest comes from it (WNLI uses RTE's: warmup 50, length 320).
    auto r = test::run_hra("-q train --task glue-wnli --model " + tiny_model() + " --data-dir " + test::data_file("glue") +
                               " --out " + (dir / "run") + " --epochs 1 --lr 0.005 --max-train-examples 32 --batch-size 16",
                           dir);
    ASSERT_EQ(r.code, 0) << r.err;
    auto results = nlohmann::json::parse(r.out);
    EXPECT_EQ(results["config"]["epochs"], 1);
    EXPECT_EQ(results["config"]["lr"], 0.005);
    EXPECT_EQ(results["config"]["warmup_steps"], 50);
    EXPECT_EQ(results["config"]["max_length"], 320);
    EXPECT_EQ(results["config"]["batch_size"], 16);
    EXPECT_EQ(results["config"]["weight_decay"], 0.01);
    EXPECT_EQ(results["main_metric"], "accuracy");
    r = test::run_hra("-q eval --task glue-wnli --model " + tiny_model() + " --adapter " + (dir / "run/best") +
                          " --data-dir " + test::data_file("glue"),
                      dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["accuracy"], results["best"]["accuracy"]);
    // --method head outside GLUE, and a missing data folder, are named errors.
    r = test::run_hra("-q train --method head --model " + tiny_model() + " --data x.jsonl --out " + (dir / "x"), dir);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("--method head does not apply to --task causal-lm"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(dir / "x"));
    r = test::run_hra("-q train --task glue-rte --model " + tiny_model() + " --data-dir " + (dir / "nope") + " --out " +
                          (dir / "y"),
                      dir);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("nope/RTE/train.tsv"), std::string::npos) << r.err;
}

// Masked-LM training is a task of the same engine: checkpoints are complete
// model folders, evaluation gives the masked-token loss and accuracy.
TEST(MlmTask, TrainsEvaluatesAndWritesAModelFolder) {
    test::TempDir dir;
    std::string text;
    for (const auto& e : glue::read_tsv(glue::task("wnli"), test::data_file("glue/WNLI/train.tsv"))) text += e.a + "\n";
    io::write_file_atomically(dir / "text.txt", text);
    auto r = test::run_hra("-q train --task mlm --model " + tiny_model() + " --data " + (dir / "text.txt") +
                               " --max-steps 4 --batch-size 8 --max-length 48 --lr 0.001 --val-split 16 --eval-every 2 --out " +
                               (dir / "run"),
                           dir);
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["method"], "full");
    ASSERT_EQ(j["evaluations"].size(), 2u);
    for (const auto& e : j["evaluations"]) {
        EXPECT_GT(e["metrics"]["masked_tokens"].get<int64_t>(), 10);
        EXPECT_TRUE(std::isfinite(e["metrics"]["loss"].get<double>()));
    }
    for (const char* f : {"model.safetensors", "config.json", "spm.model"}) EXPECT_TRUE(fs::exists(dir / ("run/checkpoint-4/" + std::string(f)))) << f;
    // The trained encoder loads as a classifier backbone.
    auto st = io::SafetensorsFile::open(dir / "run/checkpoint-4/model.safetensors");
    auto base = io::SafetensorsFile::open(tiny_model() + "/model.safetensors");
    const std::string key = "deberta.encoder.layer.0.attention.self.query_proj.weight";
    EXPECT_GT(test::max_abs_diff(st.tensor(key), base.tensor(key)), 0);  // every parameter trains
    // Adapters do not apply to this task.
    r = test::run_hra("-q train --task mlm --method hra --model " + tiny_model() + " --data " + (dir / "text.txt") + " --out " +
                          (dir / "x"),
                      dir);
    EXPECT_NE(r.err.find("--method hra does not apply to --task mlm"), std::string::npos) << r.err;
}
