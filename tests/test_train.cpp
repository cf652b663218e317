// Fine-tuning: AdamW and clipping against libtorch's own implementations,
// schedules against Hugging Face's formulas, dataset formats and bad records,
// and the trainer's resume / SIGINT / NaN guarantees on stories260K.
#include <filesystem>
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "data/dataset.h"
#include "io/atomic_file.h"
#include "adapters/peft_model.h"
#include "models/llama2c.h"
#include "models/loader.h"
#include "text/tokenizer.h"
#include "eval/runner.h"
#include "io/safetensors.h"
#include "train/optim.h"
#include "train/trainer.h"
#include "test_util.h"

using namespace hra;
using hra::test::max_abs_diff;

namespace {
std::string fixture(const std::string& name) { return std::string(HRA_TEST_FIXTURES) + "/" + name; }
}  // namespace

TEST(AdamW, MatchesLibtorchAdamW) {
    torch::manual_seed(0);
    auto a = torch::randn({5, 3}).set_requires_grad(true);
    auto b = a.detach().clone().set_requires_grad(true);
    AdamW ours({a}, {0.9, 0.99, 1e-6, 0.1});
    torch::optim::AdamW theirs({b}, torch::optim::AdamWOptions(0.01).betas({0.9, 0.99}).eps(1e-6).weight_decay(0.1));
    for (int step = 0; step < 6; ++step) {
        auto g = torch::randn({5, 3});
        a.mutable_grad() = g.clone();
        b.mutable_grad() = g.clone();
        ours.step(0.01);
        theirs.step();
    }
    EXPECT_LT(max_abs_diff(a, b), 1e-6);
    EXPECT_EQ(ours.steps(), 6);
}

TEST(ClipGradNorm, MatchesLibtorch) {
    torch::manual_seed(1);
    auto a = torch::randn({4}).set_requires_grad(true), b = torch::randn({3, 2}).set_requires_grad(true);
    a.mutable_grad() = torch::randn({4}) * 3;
    b.mutable_grad() = torch::randn({3, 2}) * 3;
    auto a2 = a.detach().clone().set_requires_grad(true), b2 = b.detach().clone().set_requires_grad(true);
    a2.mutable_grad() = a.grad().clone();
    b2.mutable_grad() = b.grad().clone();
    const double ours = clip_grad_norm({a, b}, 1.0);
    const double theirs = torch::nn::utils::clip_grad_norm_(std::vector<torch::Tensor>{a2, b2}, 1.0);
    EXPECT_NEAR(ours, theirs, 1e-5);
    EXPECT_LT(max_abs_diff(a.grad(), a2.grad()), 1e-6);
    EXPECT_LT(max_abs_diff(b.grad(), b2.grad()), 1e-6);
}

TEST(Schedules, FollowHuggingFace) {
    // get_linear_schedule_with_warmup / get_cosine_schedule_with_warmup, step counted from 0.
    EXPECT_DOUBLE_EQ(learning_rate(Schedule::Linear, 1.0, 0, 100, 10), 0.0);
    EXPECT_DOUBLE_EQ(learning_rate(Schedule::Linear, 1.0, 5, 100, 10), 0.5);
    EXPECT_DOUBLE_EQ(learning_rate(Schedule::Linear, 1.0, 10, 100, 10), 1.0);
    EXPECT_DOUBLE_EQ(learning_rate(Schedule::Linear, 1.0, 55, 100, 10), 0.5);
    EXPECT_DOUBLE_EQ(learning_rate(Schedule::Linear, 1.0, 100, 100, 10), 0.0);
    EXPECT_NEAR(learning_rate(Schedule::Cosine, 1.0, 55, 100, 10), 0.5, 1e-12);
    EXPECT_NEAR(learning_rate(Schedule::Cosine, 2.0, 10, 100, 10), 2.0, 1e-12);
    EXPECT_DOUBLE_EQ(learning_rate(Schedule::Constant, 3.0, 99, 100, 0), 3.0);
    EXPECT_DOUBLE_EQ(learning_rate(Schedule::Constant, 3.0, 1, 100, 4), 0.75);
    EXPECT_THROW(parse_schedule("step"), Error);
}

class DataTest : public ::testing::Test {
protected:
    void SetUp() override {
        convert_llama2c(test::data_file("stories260K/stories260K.bin"), test::data_file("stories260K/tok512.bin"), dir / "s260", false);
        tok = load_tokenizer(dir / "s260");
    }
    std::string write(const std::string& name, const std::string& content) {
        io::write_file_atomically(dir / name, content);
        return dir / name;
    }
    test::TempDir dir;
    std::unique_ptr<Tokenizer> tok;
};

TEST_F(DataTest, FormatsRenderAndMaskThePrompt) {
    DataOptions o;
    auto recs = read_records(write("d.jsonl",
                                   R"({"query": "Say hi.", "response": "Hi!"})"
                                   "\n"
                                   R"({"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"})"
                                   "\n"
                                   R"({"instruction": "Add", "input": "1 and 2", "output": "3"})"
                                   "\n"
                                   R"({"text": "Once upon a time"})"
                                   "\n"),
                             o);
    ASSERT_EQ(recs.size(), 4u);
    EXPECT_EQ(recs[0].segments[0].text, std::string(kDefaultPromptTemplate).replace(std::string(kDefaultPromptTemplate).find("{query}"), 7, "Say hi."));
    EXPECT_EQ(recs[1].segments[1].text, "2+2=4\nThe answer is: 4");
    EXPECT_NE(recs[2].segments[0].text.find("### Input:\n1 and 2"), std::string::npos);
    EXPECT_EQ(recs[3].segments.size(), 1u);
    auto ex = tokenize_records(recs, *tok, o, "d.jsonl");
    // Prompt tokens carry no loss; the response and EOS do; BOS starts every example.
    const auto prompt = tok->encode(recs[0].segments[0].text, true);
    EXPECT_EQ(ex[0].input_ids.front(), 1);
    for (size_t i = 0; i < prompt.size(); ++i) EXPECT_EQ(ex[0].labels[i], -100);
    EXPECT_EQ(ex[0].labels.back(), 2);
    EXPECT_EQ(ex[0].input_ids, [&] {
        auto ids = tok->encode(recs[0].segments[0].text + "Hi!", true);
        ids.push_back(2);
        return ids;
    }());
    for (auto l : ex[3].labels) EXPECT_NE(l, -100);  // text: loss everywhere
}

TEST_F(DataTest, ChatTemplatesLossOnAssistantTurns) {
    DataOptions o;
    o.chat_template = "llama2";
    auto recs = read_records(write("c.jsonl", R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})"
                                              "\n"),
                             o);
    auto ex = tokenize_records(recs, *tok, o, "c.jsonl");
    ASSERT_EQ(ex.size(), 1u);
    EXPECT_EQ(ex[0].input_ids.front(), 1);  // <s>
    EXPECT_EQ(ex[0].input_ids.back(), 2);   // </s>, trained on
    EXPECT_EQ(ex[0].labels.back(), 2);
    std::vector<int64_t> target;
    for (size_t i = 0; i < ex[0].labels.size(); ++i)
        if (ex[0].labels[i] != -100) target.push_back(ex[0].input_ids[i]);
    EXPECT_EQ(tok->decode(target), " Hello ");
    o.chat_template = "chatml";  // stories260K has no <|im_start|>: a clear error
    EXPECT_THROW(tokenize_records(read_records(dir / "c.jsonl", o), *tok, o, "c.jsonl"), Error);
}

TEST_F(DataTest, BadRecordsAreReportedAndSkipped) {
    DataOptions o;
    const std::string path = write("bad.jsonl", std::string(R"({"query": "a", "response": "b"})") + "\n{oops\n" +
                                                    R"({"query": "no response"})" + "\n\xff\xfe\n" + R"([1, 2])" + "\n");
    testing::internal::CaptureStderr();
    auto recs = read_records(path, o);
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(recs.size(), 1u);
    EXPECT_NE(err.find(path + ":2: invalid JSON"), std::string::npos) << err;
    EXPECT_NE(err.find(path + ":3: "), std::string::npos) << err;
    EXPECT_NE(err.find(path + ":4: the line is not valid UTF-8"), std::string::npos) << err;
    EXPECT_NE(err.find(path + ":5: record is not a JSON object"), std::string::npos) << err;
    EXPECT_THROW(read_records(write("empty.jsonl", "\n\n"), o), Error);
    EXPECT_THROW(read_records(write("none.jsonl", "{oops\n"), o), Error);
    EXPECT_THROW(read_records(dir / "missing.jsonl", o), Error);
}

TEST(Data, SplitPackAndOrderAreDeterministic) {
    std::vector<Example> ex;
    for (int i = 0; i < 10; ++i) ex.push_back({{1, 10 + i, 20 + i}, {-100, 10 + i, 20 + i}});
    auto [train, val] = split_validation(ex, 0.2, 7);
    EXPECT_EQ(train.size(), 8u);
    EXPECT_EQ(val.size(), 2u);
    auto [train2, val2] = split_validation(ex, 2, 7);
    EXPECT_EQ(val2[0].input_ids, val[0].input_ids);
    EXPECT_EQ(epoch_order(10, 3, 1, true), epoch_order(10, 3, 1, true));
    EXPECT_NE(epoch_order(10, 3, 1, true), epoch_order(10, 3, 2, true));
    auto packed = pack_examples(ex, 4);
    EXPECT_EQ(packed.size(), 8u);  // 30 tokens -> 7 blocks of 4 and one of 2
    EXPECT_EQ(packed[0].input_ids, (std::vector<int64_t>{1, 10, 20, 1}));
    EXPECT_THROW(split_validation(ex, 10, 1), Error);
}

namespace {

// Training options for a few quick steps on stories260K and GSM8K questions.
TrainOptions quick_options(const test::TempDir& dir, const std::string& out) {
    TrainOptions o;
    o.model = dir / "s260";
    o.data = dir / "g.jsonl";
    o.out = dir / out;
    o.data_options.max_length = 256;
    o.adapter.method = Method::Lora;
    o.adapter.lora_dropout = 0.1;  // the random stream must resume too
    o.adapter.target_modules = ModuleSelector::regex("all-linear");
    o.lr = 1e-3;
    o.batch_size = 4;
    o.max_steps = 6;
    o.save_every = 2;
    o.val_split = 0.1;
    o.quiet = true;
    return o;
}

std::vector<double> losses(const TrainResult& r) {
    std::vector<double> out;
    for (const auto& s : r.history) out.push_back(s.loss);
    return out;
}

class TrainerTest : public ::testing::Test {
protected:
    void SetUp() override {
        convert_llama2c(test::data_file("stories260K/stories260K.bin"), test::data_file("stories260K/tok512.bin"), dir / "s260", false);
        std::string lines, all = io::read_file(fixture("gsm8k/test.jsonl"));
        size_t pos = 0;
        for (int i = 0; i < 80; ++i) {
            const size_t nl = all.find('\n', pos);
            lines += all.substr(pos, nl - pos + 1);
            pos = nl + 1;
        }
        io::write_file_atomically(dir / "g.jsonl", lines);
    }
    test::TempDir dir;
};

}  // namespace

TEST_F(TrainerTest, ResumeIsBitIdenticalAndSigintLeavesACheckpoint) {
    auto full = train(quick_options(dir, "full"));
    EXPECT_EQ(full.steps, 6);
    EXPECT_FALSE(full.interrupted);

    auto o = quick_options(dir, "cut");
    o.inject_sigint_at_step = 3;  // a real SIGINT through the handler
    auto first = train(o);
    EXPECT_TRUE(first.interrupted);
    EXPECT_EQ(first.steps, 3);
    EXPECT_TRUE(std::filesystem::exists(dir / "cut/checkpoint-3/adapter_model.safetensors"));
    EXPECT_TRUE(std::filesystem::exists(dir / "cut/checkpoint-3/optimizer.safetensors"));
    {
        // The step-3 checkpoint loads as a PEFT adapter.
        auto model = load_llama(dir / "s260");
        PeftModel pm(model.model.ptr());
        EXPECT_NO_THROW(pm.load_adapter(dir / "cut/checkpoint-3"));
    }
    o.inject_sigint_at_step = 0;
    o.resume = true;
    auto rest = train(o);
    EXPECT_EQ(rest.steps, 6);
    EXPECT_EQ(losses(rest), losses(full));  // ==, every step, including those after the resume point
    EXPECT_EQ(rest.final_val_loss, full.final_val_loss);
    EXPECT_EQ(io::read_file(dir / "cut/checkpoint-6/adapter_model.safetensors"),
              io::read_file(dir / "full/checkpoint-6/adapter_model.safetensors"));
    // The metrics file holds each step once.
    int lines = 0;
    std::ifstream m(dir / "cut/metrics.jsonl");
    for (std::string l; std::getline(m, l);) ++lines;
    EXPECT_EQ(lines, 6);
    // A second run into the same folder without --resume is refused.
    EXPECT_THROW(train(quick_options(dir, "full")), Error);
}

TEST_F(TrainerTest, NanLossStopsAndLeavesTheLastCheckpointUntouched) {
    auto o = quick_options(dir, "nan");
    o.adapter.method = Method::Hra;
    o.adapter.init_weights = false;
    o.ortho_lambda = 1e-4;
    o.schedule = "constant";  // so that a 4-step run is the same as the first 4 steps of this one
    auto clean = o;
    clean.out = dir / "clean";
    clean.max_steps = 4;
    train(clean);
    o.inject_nan_at_step = 5;  // steps 1-4 run and save checkpoints 2 and 4; step 5's loss is NaN
    try {
        train(o);
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("non-finite loss"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("step 5"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(std::filesystem::exists(dir / "nan/checkpoint-5"));
    for (const char* f : {"adapter_model.safetensors", "optimizer.safetensors"})
        EXPECT_EQ(io::read_file(dir / ("nan/checkpoint-4/" + std::string(f))), io::read_file(dir / ("clean/checkpoint-4/" + std::string(f))))
            << f;
    // Resuming without the fault continues from step 4 and finishes.
    o.inject_nan_at_step = 0;
    o.resume = true;
    EXPECT_EQ(train(o).steps, 6);
}

TEST_F(TrainerTest, Bf16BaseKeepsFloat32AdaptersAndOptimizerState) {
    auto o = quick_options(dir, "bf16");
    o.dtype = "bfloat16";
    o.adapter.method = Method::Hra;
    o.max_steps = 4;
    o.save_every = 0;
    auto r = train(o);
    EXPECT_EQ(r.steps, 4);
    auto f = io::SafetensorsFile::open(dir / "bf16/checkpoint-4/adapter_model.safetensors");
    for (const auto& name : f.names()) EXPECT_EQ(f.info(name).dtype, "F32") << name;
    auto opt = io::SafetensorsFile::open(dir / "bf16/checkpoint-4/optimizer.safetensors");
    EXPECT_EQ(opt.info("exp_avg.0").dtype, "F32");
    for (const auto& s : r.history) EXPECT_TRUE(std::isfinite(s.loss));
}

TEST_F(TrainerTest, EvaluationRunsWriteScoredPredictions) {
    auto m = load_llama(dir / "s260");
    auto tok = load_tokenizer(dir / "s260");
    eval::GenerateEvalOptions g;
    g.task = "gsm8k";
    g.data = dir / "g.jsonl";
    g.limit = 3;
    g.max_new_tokens = 8;
    g.output = dir / "preds.jsonl";
    g.quiet = true;
    auto summary = eval::generate_and_score(*m.model, *tok, g);
    EXPECT_EQ(summary["n"], 3);
    EXPECT_EQ(summary["task"], "gsm8k");
    std::ifstream in(dir / "preds.jsonl");
    int lines = 0;
    for (std::string line; std::getline(in, line); ++lines) {
        auto j = nlohmann::json::parse(line);
        for (const char* k : {"prompt", "completion", "extracted", "reference", "correct"}) EXPECT_TRUE(j.contains(k)) << k;
        EXPECT_NE(j["prompt"].get<std::string>().find("### Response: Let's think step by step."), std::string::npos);
    }
    EXPECT_EQ(lines, 3);
    DataOptions d;
    d.max_length = 256;
    auto ppl = eval::perplexity(*m.model, *tok, dir / "g.jsonl", d, 8);
    EXPECT_GT(ppl["tokens"].get<int64_t>(), 100);
    EXPECT_NEAR(ppl["perplexity"].get<double>(), std::exp(ppl["loss"].get<double>()), 1e-9);
}
