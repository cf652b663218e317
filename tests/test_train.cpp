// Fine-tuning: AdamW and clipping against libtorch's own implementations,
// schedules against Hugging Face's formulas, dataset formats and bad records,
// and the trainer's resume / SIGINT / NaN guarantees on stories260K.
#include <signal.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <optional>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "data/dataset.h"
#include "io/atomic_file.h"
#include "adapters/peft_model.h"
#include "models/llama2c.h"
#include "models/llama_loader.h"
#include "text/hf_tokenizer.h"
#include "text/tokenizer.h"
#include "eval/runner.h"
#include "io/safetensors.h"
#include "train/optim.h"
#include "train/engine.h"
#include "data/batch.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "test_util.h"

using namespace hra;
using hra::test::max_abs_diff;

namespace {
using test::fixture;
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

// The prompt a template gives at inference is what training put before the first trained token.
std::vector<int64_t> untrained_prefix(const Example& ex) {
    std::vector<int64_t> out;
    for (size_t i = 0; i < ex.labels.size() && ex.labels[i] == -100; ++i) out.push_back(ex.input_ids[i]);
    return out;
}

TEST_F(DataTest, GenerationPromptsAreWhatTrainingRendered) {
    auto chat = write("chat.jsonl", R"({"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]})" "\n");
    GenerationPrompt p;
    p.query = "Hi there";
    // llama2 on stories260K's vocabulary (<s>, </s>).
    DataOptions o;
    o.chat_template = "llama2";
    auto ex = tokenize_records(read_records(chat, o), *tok, o, chat);
    p.template_name = "llama2";
    EXPECT_EQ(encode_generation_prompt(*tok, p), untrained_prefix(ex[0]));
    // chatml and its newline rule on a vocabulary with <|im_start|> / <|im_end|> (OLMo 2's).
    const std::string dolma = std::string(HRA_TEST_FIXTURES) + "/tokenizers/dolma2.tokenizer.json";
    auto dtok = make_hf_tokenizer(io::read_file(dolma), dolma);
    o.chat_template = "chatml";
    ex = tokenize_records(read_records(chat, o), *dtok, o, chat);
    p.template_name = "chatml";
    const auto ids = encode_generation_prompt(*dtok, p);
    EXPECT_EQ(ids, untrained_prefix(ex[0]));
    EXPECT_EQ(dtok->decode(ids, false), "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(chat_templates_that_fit(*dtok), std::vector<std::string>{"chatml"});
    EXPECT_EQ(chat_templates_that_fit(*tok), std::vector<std::string>{"llama2"});
    // A template whose tokens the vocabulary lacks names the ones that fit.
    const std::string e = test::error_of([&] { encode_generation_prompt(*tok, p); });
    EXPECT_NE(e.find("no special token '<|im_start|>'"), std::string::npos) << e;
    EXPECT_NE(e.find("use --template llama2"), std::string::npos) << e;
    o.chat_template = "chatml";  // in training, the flag is --chat-template
    const std::string t = test::error_of([&] { tokenize_records(read_records(chat, o), *tok, o, chat); });
    EXPECT_NE(t.find("use --chat-template llama2"), std::string::npos) << t;
    // The instruction template is the seed's prompt (typed here from the seed's eval script).
    p.template_name = "metamath";
    p.query = "What is 2+3?";
    p.step_by_step = true;
    const std::string seed = "Below is an instruction that describes a task. Write a response that appropriately completes the "
                             "request.\n\n### Instruction:\nWhat is 2+3?\n\n### Response: Let's think step by step.";
    EXPECT_EQ(encode_generation_prompt(*tok, p), tok->encode(seed, true));
    EXPECT_EQ(eval::seed_eval_prompt("What is 2+3?"), seed);
    p.template_name = "alpaca";
    p.step_by_step = false;
    p.input = "x = 1";
    EXPECT_EQ(tok->decode(encode_generation_prompt(*tok, p)),
              "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
              "response that appropriately completes the request.\n\n### Instruction:\nWhat is 2+3?\n\n### Input:\nx = 1\n\n"
              "### Response:");
    // Which named template a tokenizer_config.json chat_template is written for.
    EXPECT_EQ(chat_template_matching("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n'}}"), "chatml");
    EXPECT_EQ(chat_template_matching("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}"), "llama3");
    EXPECT_EQ(chat_template_matching("{{ bos_token + '[INST] ' + content + ' [/INST]' }}"), "llama2");
    EXPECT_EQ(chat_template_matching("{{ '<start_of_turn>' }}"), "");
}

TEST_F(DataTest, TokenCacheGivesTheSameExamplesAndKeysOnWhatChangesThem) {
    DataOptions o;
    std::string data;
    for (int i = 0; i < 30; ++i) data += R"({"query": "Tom has )" + std::to_string(i) + R"( balls.", "response": " Yes."})" "\n";
    const std::string path = write("d.jsonl", data);
    const auto recs = read_records(path, o);
    const auto fresh = tokenize_records(recs, *tok, o, path);
    auto files = [&] {
        std::vector<std::string> names;
        if (std::filesystem::exists(dir / "cache"))
            for (const auto& e : std::filesystem::directory_iterator(dir / "cache")) names.push_back(e.path().string());
        return names;
    };
    auto same = [&](const std::vector<Example>& a, const std::vector<Example>& b) {
        if (a.size() != b.size()) return false;
        for (size_t i = 0; i < a.size(); ++i)
            if (a[i].input_ids != b[i].input_ids || a[i].labels != b[i].labels) return false;
        return true;
    };
    EXPECT_TRUE(same(tokenize_records_cached(recs, *tok, o, path, dir / "s260", dir / "cache"), fresh));
    ASSERT_EQ(files().size(), 1u);
    const std::string cached = files()[0];
    EXPECT_TRUE(same(tokenize_records_cached(recs, *tok, o, path, dir / "s260", dir / "cache"), fresh));  // a hit
    EXPECT_EQ(files().size(), 1u);
    // A truncated cache file is a warning and a fresh tokenization.
    io::write_file_atomically(cached, io::read_file(cached).substr(0, 40));
    testing::internal::CaptureStderr();
    EXPECT_TRUE(same(tokenize_records_cached(recs, *tok, o, path, dir / "s260", dir / "cache"), fresh));
    EXPECT_NE(testing::internal::GetCapturedStderr().find("unreadable token cache"), std::string::npos);
    EXPECT_GT(io::read_file(cached).size(), 40u);  // rewritten
    // Other options or other records: another key.
    o.train_on_prompt = true;
    const auto all_fresh = tokenize_records(recs, *tok, o, path);
    EXPECT_TRUE(same(tokenize_records_cached(recs, *tok, o, path, dir / "s260", dir / "cache"), all_fresh));
    EXPECT_EQ(files().size(), 2u);
    const auto fewer = std::vector<Rendered>(recs.begin(), recs.begin() + 10);
    tokenize_records_cached(fewer, *tok, o, path, dir / "s260", dir / "cache");
    EXPECT_EQ(files().size(), 3u);
    // Another tokenizer file: another key.
    io::write_file_atomically(dir / "s260/tokenizer.json", io::read_file(dir / "s260/tokenizer.json") + "\n");
    tokenize_records_cached(fewer, *tok, o, path, dir / "s260", dir / "cache");
    EXPECT_EQ(files().size(), 4u);
}

TEST_F(DataTest, BadRecordsAreSkippedWithACountOrFailAsTheCallerChooses) {
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
    EXPECT_NE(err.find(path + ": 4 bad records skipped"), std::string::npos) << err;
    // The caller may choose to fail instead: the first bad record is the error.
    o.on_bad_record = io::OnBadRecord::Fail;
    try {
        read_records(path, o);
        ADD_FAILURE() << "a bad record with on_bad_record = fail was accepted";
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), path);
        EXPECT_EQ(e.line(), 2);
        EXPECT_NE(e.message().find("invalid JSON"), std::string::npos) << e.what();
    }
    o.on_bad_record = io::OnBadRecord::Skip;
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
    o.set_method("lora");
    o.adapter.set("lora_dropout", 0.1);  // the random stream must resume too
    o.adapter.target_modules = ModuleSelector::regex("all-linear");
    o.lr = 1e-3;
    o.batch_size = 4;
    o.max_steps = 6;
    o.save_every = 2;
    o.val_split = 0.1;
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

// HRA resumes as LoRA does (every loss and the checkpoint's bytes equal); what a SIGKILL during a
// checkpoint write leaves is never picked up and is removed; a state with impossible counters is refused.
TEST_F(TrainerTest, HraResumesBitForBitAndHalfWrittenCheckpointsAreRemoved) {
    auto hra = [&](const std::string& out) {
        auto o = quick_options(dir, out);
        o.set_method("hra");
        o.adapter.r = 4;
        o.adapter.target_modules = ModuleSelector::of({"q_proj", "v_proj"});
        return o;
    };
    auto full = train(hra("hfull"));
    auto o = hra("hcut");
    o.inject_sigint_at_step = 3;
    EXPECT_TRUE(train(o).interrupted);
    const auto tmp = std::filesystem::path(dir / "hcut") / ".checkpoint-4.tmp-12345";
    std::filesystem::create_directories(tmp);
    io::write_file_atomically((tmp / "trainer_state.json").string(), R"({"step": 4)");  // cut mid-write
    o.inject_sigint_at_step = 0;
    o.resume = true;
    auto rest = train(o);
    EXPECT_EQ(losses(rest), losses(full));
    EXPECT_EQ(io::read_file(dir / "hcut/checkpoint-6/adapter_model.safetensors"),
              io::read_file(dir / "hfull/checkpoint-6/adapter_model.safetensors"));
    EXPECT_FALSE(std::filesystem::exists(tmp));
    const std::string state_path = dir / "hcut/checkpoint-6/trainer_state.json";
    const auto state = nlohmann::json::parse(io::read_file(state_path));
    for (const auto& [key, value] : std::vector<std::pair<std::string, int64_t>>{
             {"step", -3}, {"step", 1000000}, {"position", -1}, {"epoch", -2}, {"epoch", int64_t{1} << 40}}) {
        auto bad = state;
        bad[key] = value;
        io::write_file_atomically(state_path, bad.dump());
        auto more = o;
        more.max_steps = 8;
        try {
            train(more);
            ADD_FAILURE() << key << " " << value;
        } catch (const Error& e) {
            EXPECT_EQ(e.file(), state_path) << e.what();
            EXPECT_EQ(e.key(), key) << e.what();
        }
    }
}

TEST_F(TrainerTest, NanLossStopsAndLeavesTheLastCheckpointUntouched) {
    auto o = quick_options(dir, "nan");
    o.set_method("hra");
    o.adapter.set("init_weights", false);
    o.ortho_lambda = 1e-4;
    o.schedule = Schedule::Constant;  // so that a 4-step run is the same as the first 4 steps of this one
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
    o.dtype = torch::kBFloat16;
    o.set_method("hra");
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

TEST(PadBatch, RightAndLeftPaddingWithLabelsAndTypes) {
    std::vector<int64_t> a{5, 6, 7}, b{8}, la{-100, 6, 7}, lb{8}, ta{0, 1, 1}, tb{1};
    auto r = pad_batch({&a, &b}, {9, false}, {&la, &lb}, {&ta, &tb});
    EXPECT_TRUE(r.ids.equal(torch::tensor({5, 6, 7, 8, 9, 9}, torch::kLong).view({2, 3})));
    EXPECT_TRUE(r.mask.equal(torch::tensor({1, 1, 1, 1, 0, 0}, torch::kLong).view({2, 3})));
    EXPECT_TRUE(r.labels.equal(torch::tensor({-100, 6, 7, 8, -100, -100}, torch::kLong).view({2, 3})));
    EXPECT_TRUE(r.types.equal(torch::tensor({0, 1, 1, 1, 0, 0}, torch::kLong).view({2, 3})));
    EXPECT_EQ(r.tokens, 4);
    auto l = pad_batch({&a, &b}, {0, true});
    EXPECT_TRUE(l.ids.equal(torch::tensor({5, 6, 7, 0, 0, 8}, torch::kLong).view({2, 3})));
    EXPECT_TRUE(l.mask.equal(torch::tensor({1, 1, 1, 0, 0, 1}, torch::kLong).view({2, 3})));
    EXPECT_FALSE(l.labels.defined());
    std::vector<int64_t> short_labels{1};
    EXPECT_THROW(pad_batch({&a}, {}, {&short_labels}), Error);
}

TEST_F(TrainerTest, GradientCheckpointingGivesTheSameGradients) {
    auto grads = [&](bool checkpoint) {
        auto m = load_llama(dir / "s260");
        PeftModel pm(m.model.ptr());
        AdapterConfig c = AdapterConfig::of("lora");
        c.r = 4;
        c.set("lora_dropout", 0.2);  // random masks: the recomputation must draw the same ones
        c.target_modules = ModuleSelector::regex("all-linear");
        torch::manual_seed(3);
        pm.add_adapter("default", c);
        m.model->train();
        m.model->set_gradient_checkpointing(checkpoint);
        auto ids = torch::randint(3, 500, {2, 24}, torch::kLong);
        causal_lm_loss(m.model->forward(ids), ids).backward();
        std::vector<torch::Tensor> g;
        for (auto& p : pm.trainable_parameters()) g.push_back(p.grad().clone());
        return g;
    };
    auto plain = grads(false), ckpt = grads(true);
    ASSERT_EQ(plain.size(), ckpt.size());
    ASSERT_GT(plain.size(), 0u);
    for (size_t i = 0; i < plain.size(); ++i) EXPECT_TRUE(plain[i].equal(ckpt[i])) << i << ": " << max_abs_diff(plain[i], ckpt[i]);
}

TEST(Checkpointed, GradientsReachInputsAndParametersLikeTheDirectGraph) {
    torch::manual_seed(0);
    auto w = torch::randn({4, 4}, torch::requires_grad());
    auto x = torch::randn({3, 4}, torch::requires_grad());
    auto f = [&](const torch::Tensor& v) { return torch::tanh(v.mm(w)).mm(w); };
    f(x).pow(2).sum().backward();
    auto gx = x.grad().clone(), gw = w.grad().clone();
    x.mutable_grad().reset();
    w.mutable_grad().reset();
    checkpointed(f, x).pow(2).sum().backward();
    EXPECT_TRUE(x.grad().equal(gx));
    EXPECT_TRUE(w.grad().equal(gw));
    // An input without grad still lets the parameters learn.
    w.mutable_grad().reset();
    checkpointed(f, x.detach()).pow(2).sum().backward();
    EXPECT_TRUE(w.grad().equal(gw));
}

namespace {

// The stories260K run folder setup of TrainerTest, for the command line: HRA
// on every linear layer. (With LoRA the per-step losses of 1 and 2 processes
// agree as well, 5e-8, but its zero-initialised B makes Adam's first updates
// sign(g)·lr, and on the elements whose gradient is a near-cancellation the
// rounding of another summation order flips them: 1e-3 max-element
// difference after 4 steps. HRA has no such elements: 5e-6.)
std::string cli_common(const test::TempDir& dir) {
    return "-q --threads 1 train --model " + (dir / "s260") + " --data " + (dir / "g.jsonl") +
           " --max-length 256 --method hra --target-regex all-linear --lr 0.001 --batch-size 4 --grad-accum 2"
           " --val-split 8 --out ";
}

std::vector<double> metric_column(const std::string& path, const char* key) {
    std::vector<double> out;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);) {
        auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);  // a line being written
        if (j.is_object() && j.contains(key)) out.push_back(j[key].get<double>());
    }
    return out;
}

// `hra args` in the background, output to `log`; with torchrun's variables when rank >= 0.
pid_t spawn_worker(const std::string& args, int rank, int port, const std::string& log) {
    const pid_t pid = fork();
    if (pid == 0) {
        if (rank >= 0) {
            setenv("RANK", std::to_string(rank).c_str(), 1);
            setenv("WORLD_SIZE", "2", 1);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
        }
        const std::string cmd = "exec " + std::string(HRA_EXE) + " " + args + " >" + log + " 2>&1";
        execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    return pid;
}

// Two workers started with torchrun's variables; none outlives the test.
class WorkerPair {
public:
    WorkerPair(const std::string& args, int port, const test::TempDir& dir)
        : pid_{spawn_worker(args, 0, port, dir / "r0.log"), spawn_worker(args, 1, port, dir / "r1.log")} {}
    ~WorkerPair() {
        for (pid_t p : pid_)
            if (p > 0 && kill(p, SIGKILL) == 0) waitpid(p, nullptr, 0);
    }
    // Until `metrics` holds `steps` lines (false if rank 0 ended first or 120 s passed).
    bool wait_for_steps(const std::string& metrics, size_t steps) {
        const auto start = std::chrono::steady_clock::now();
        while (metric_column(metrics, "loss").size() < steps) {
            if (std::chrono::steady_clock::now() - start > std::chrono::seconds(120) || !running(0)) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        return true;
    }
    void signal(int rank, int sig) { kill(pid_[rank], sig); }
    // The wait status of `rank`, or nothing when it still runs after `limit`.
    std::optional<int> wait(int rank, std::chrono::seconds limit) {
        const auto start = std::chrono::steady_clock::now();
        while (running(rank)) {
            if (std::chrono::steady_clock::now() - start > limit) return std::nullopt;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        return status_[rank];
    }

private:
    bool running(int rank) {
        if (pid_[rank] > 0 && waitpid(pid_[rank], &status_[rank], WNOHANG) == pid_[rank]) pid_[rank] = 0;
        return pid_[rank] > 0;
    }
    pid_t pid_[2];
    int status_[2] = {0, 0};
};

}  // namespace

// Data parallel over c10d/Gloo: two processes with the same global batch give
// the losses and the adapter of one process.
TEST_F(TrainerTest, TwoProcessesMatchOneOnLoopback) {
    auto one = test::run_hra(cli_common(dir) + (dir / "one") + " --max-steps 4 --nproc 1", dir);
    ASSERT_EQ(one.code, 0) << one.err;
    auto two = test::run_hra(cli_common(dir) + (dir / "two") + " --max-steps 4 --nproc 2", dir);
    ASSERT_EQ(two.code, 0) << two.err;
    EXPECT_EQ(nlohmann::json::parse(two.out)["config"]["world_size"], 2);
    auto l1 = metric_column(dir / "one/metrics.jsonl", "loss"), l2 = metric_column(dir / "two/metrics.jsonl", "loss");
    ASSERT_EQ(l1.size(), 4u);
    ASSERT_EQ(l2.size(), 4u);
    double worst = 0;
    for (size_t i = 0; i < l1.size(); ++i) worst = std::max(worst, std::abs(l1[i] - l2[i]) / std::abs(l1[i]));
    std::printf("  max relative loss difference, 1 vs 2 processes: %.2e\n", worst);
    EXPECT_LE(worst, 1e-5);
    auto v1 = metric_column(dir / "one/metrics.jsonl", "val_loss"), v2 = metric_column(dir / "two/metrics.jsonl", "val_loss");
    ASSERT_EQ(v1.size(), 1u);
    ASSERT_EQ(v2.size(), 1u);
    EXPECT_LE(std::abs(v1[0] - v2[0]) / v1[0], 1e-5);
    auto a1 = io::SafetensorsFile::open(dir / "one/checkpoint-4/adapter_model.safetensors");
    auto a2 = io::SafetensorsFile::open(dir / "two/checkpoint-4/adapter_model.safetensors");
    ASSERT_EQ(a1.names(), a2.names());
    double adapter_worst = 0;
    for (const auto& n : a1.names()) {
        const double e = test::rel_err(a2.tensor(n), a1.tensor(n));
        if (e > 1e-5) std::printf("  %s: %.2e (max %.3e)\n", n.c_str(), e, a1.tensor(n).abs().max().item<double>());
        adapter_worst = std::max(adapter_worst, e);
    }
    std::printf("  max relative adapter difference: %.2e\n", adapter_worst);
    EXPECT_LE(adapter_worst, 1e-5);
    // Every rank's RNG is in the checkpoint; resuming needs the same world size.
    auto opt = io::SafetensorsFile::open(dir / "two/checkpoint-4/optimizer.safetensors");
    EXPECT_NO_THROW(opt.tensor("rng.cpu.1"));
    auto r = test::run_hra(cli_common(dir) + (dir / "two") + " --nproc 1 --resume --max-steps 6", dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("written by 2 processes"), std::string::npos) << r.err;
}

TEST_F(TrainerTest, AKilledWorkerMakesTheOtherExitWithAnError) {
    const int port = 20000 + static_cast<int>(getpid() % 20000);
    const std::string args = cli_common(dir) + (dir / "killed") + " --max-steps 100000 --eval-every 100000";
    WorkerPair workers(args, port, dir);
    // Training under way, then rank 1 is killed.
    ASSERT_TRUE(workers.wait_for_steps(dir / "killed/metrics.jsonl", 2)) << test::slurp(dir / "r0.log");
    workers.signal(1, SIGKILL);
    workers.wait(1, std::chrono::seconds(10));
    const auto killed = std::chrono::steady_clock::now();
    const auto done = workers.wait(0, std::chrono::seconds(60));
    if (!done) FAIL() << "rank 0 still running 60 s after rank 1 was killed";
    const int status = *done;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
    std::printf("  rank 0 exited %.1f s after rank 1 was killed\n", secs);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    EXPECT_NE(test::slurp(dir / "r0.log").find("hra: error"), std::string::npos) << test::slurp(dir / "r0.log");
}

// SIGINT to one process stops every process at the same step, with one
// checkpoint (holding both RNG states), and both exit with 130.
TEST_F(TrainerTest, SigintOnOneWorkerStopsBothWithOneCheckpoint) {
    const int port = 20000 + static_cast<int>((getpid() + 7919) % 20000);
    const std::string args = cli_common(dir) + (dir / "int") + " --max-steps 100000 --eval-every 100000";
    WorkerPair workers(args, port, dir);
    ASSERT_TRUE(workers.wait_for_steps(dir / "int/metrics.jsonl", 2)) << test::slurp(dir / "r0.log");
    workers.signal(1, SIGINT);
    const int s0 = workers.wait(0, std::chrono::seconds(120)).value_or(-1);
    const int s1 = workers.wait(1, std::chrono::seconds(60)).value_or(-1);
    EXPECT_TRUE(WIFEXITED(s0) && WEXITSTATUS(s0) == 130) << test::slurp(dir / "r0.log");
    EXPECT_TRUE(WIFEXITED(s1) && WEXITSTATUS(s1) == 130) << test::slurp(dir / "r1.log");
    int checkpoints = 0;
    std::string name;
    for (const auto& e : std::filesystem::directory_iterator(dir / "int"))
        if (e.path().filename().string().rfind("checkpoint-", 0) == 0) ++checkpoints, name = e.path().filename().string();
    ASSERT_EQ(checkpoints, 1);
    auto opt = io::SafetensorsFile::open(dir / ("int/" + name + "/optimizer.safetensors"));
    for (const char* k : {"rng.cpu.0", "rng.cpu.1"}) EXPECT_NO_THROW(opt.tensor(k)) << k;  // each process's generator
}

namespace {

// The N of every checkpoint-N folder in `run`.
std::set<int64_t> checkpoint_steps(const std::string& run) {
    std::set<int64_t> out;
    std::error_code ec;
    if (!std::filesystem::exists(run, ec)) return out;
    for (const auto& e : std::filesystem::directory_iterator(run)) {
        const std::string name = e.path().filename().string();
        if (name.rfind("checkpoint-", 0) == 0) out.insert(std::stoll(name.substr(11)));
    }
    return out;
}

// Half-written checkpoint folders (.checkpoint-N.tmp-*) in `run`.
std::vector<std::string> half_written(const std::string& run) {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(run)) {
        const std::string name = e.path().filename().string();
        if (name.rfind(".checkpoint-", 0) == 0) out.push_back(name);
    }
    return out;
}

// Every checkpoint-N folder holds its three files, and its state says step N.
void expect_whole_checkpoints(const std::string& run) {
    for (int64_t n : checkpoint_steps(run)) {
        const auto ck = std::filesystem::path(run) / ("checkpoint-" + std::to_string(n));
        for (const char* f : {"adapter_model.safetensors", "adapter_config.json", "optimizer.safetensors"})
            EXPECT_TRUE(std::filesystem::exists(ck / f)) << ck << " lacks " << f;
        const auto state = nlohmann::json::parse(test::slurp(ck / "trainer_state.json"), nullptr, false);
        EXPECT_TRUE(state.is_object() && state.value("step", int64_t(-1)) == n) << ck;
    }
}

// The exit status of `pid` if it ends within `seconds`, else nothing (it still runs).
std::optional<int> wait_for(pid_t pid, double seconds) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    int status = 0;
    while (true) {
        if (waitpid(pid, &status, WNOHANG) == pid) return status;
        if (std::chrono::steady_clock::now() > until) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

}  // namespace

// kill -9 at random moments, and once inside a checkpoint write (every file
// written, the folder not yet renamed into place): each restart resumes from
// the newest whole checkpoint, never a half-written one, and the losses and
// the final adapter are the uninterrupted run's, bit for bit.
TEST_F(TrainerTest, SigkillAtRandomMomentsResumesToTheUninterruptedRun) {
    const std::string flags = " --max-steps 12 --save-every 1 --eval-every 100000";
    const auto t0 = std::chrono::steady_clock::now();
    auto ref = test::run_hra(cli_common(dir) + (dir / "ref") + flags, dir);
    ASSERT_EQ(ref.code, 0) << ref.err;
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto ref_losses = metric_column(dir / "ref/metrics.jsonl", "loss");
    ASSERT_EQ(ref_losses.size(), 12u);

    const std::string run = dir / "k";
    auto r = test::run_hra(cli_common(dir) + run + flags + " --inject-sigkill-in-save 3", dir);
    EXPECT_EQ(r.code, 128 + SIGKILL) << "not killed: " << r.err;  // as sh reports it
    EXPECT_EQ(checkpoint_steps(run), (std::set<int64_t>{1, 2}));
    EXPECT_EQ(half_written(run).size(), 1u);  // .checkpoint-3.tmp-*, with all its files
    // Killed again with half of a file written: the resume removed .checkpoint-3.tmp-*; now
    // .checkpoint-4.tmp-* holds a cut temporary optimizer file, which the next resume must neither
    // pick up nor keep.
    r = test::run_hra(cli_common(dir) + run + flags + " --resume --inject-sigkill-mid-file 4", dir);
    EXPECT_EQ(r.code, 128 + SIGKILL) << "not killed: " << r.err;
    EXPECT_EQ(checkpoint_steps(run), (std::set<int64_t>{1, 2, 3}));
    {
        const auto tmp = half_written(run);
        ASSERT_EQ(tmp.size(), 1u);
        EXPECT_EQ(tmp[0].rfind(".checkpoint-4.tmp-", 0), 0u) << tmp[0];
        int cut = 0;
        const auto whole = std::filesystem::file_size(std::filesystem::path(run) / "checkpoint-3/optimizer.safetensors");
        for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(run) / tmp[0])) {
            const std::string name = e.path().filename().string();
            if (name.rfind(".optimizer.safetensors.tmp-", 0) != 0) continue;
            EXPECT_GT(e.file_size(), 0u);
            EXPECT_LT(e.file_size(), whole);
            ++cut;
        }
        EXPECT_EQ(cut, 1) << "no half-written optimizer file in " << tmp[0];
    }

    const char* env_seed = std::getenv("HRA_KILL_SEED");
    const unsigned seed = env_seed ? static_cast<unsigned>(std::stoul(env_seed)) : 20261203u;
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    double step_seconds = 0;
    for (double ms : metric_column(dir / "ref/metrics.jsonl", "ms")) step_seconds += ms / 1e3 / 12;
    const double startup = std::max(0.1, wall - 12 * step_seconds);
    // Each restart is killed at a random moment: a quarter during start-up, the rest at a random
    // point of a random step still to come (its backward pass, metrics line or checkpoint write).
    std::string kills;
    int killed = 0;
    bool finished = false;
    for (int attempt = 0; attempt < 8 && !finished; ++attempt) {
        const auto done = checkpoint_steps(run);
        const auto logged = metric_column(run + "/metrics.jsonl", "step");  // may run past the newest checkpoint
        const int64_t first = std::max<int64_t>(done.empty() ? 0 : *done.rbegin(),
                                                logged.empty() ? 0 : static_cast<int64_t>(logged.back())) + 1;
        const pid_t pid = spawn_worker(cli_common(dir) + run + flags + (done.empty() ? " --force" : " --resume"), -1, 0,
                                       dir / "k.log");
        ASSERT_GT(pid, 0);
        std::optional<int> status;
        std::string when = "let finish";
        if (attempt < 6 && (first > 11 || unit(rng) < 0.25)) {
            const double at = unit(rng) * startup;
            when = strprintf("%.2fs into start-up", at);
            status = wait_for(pid, at);
        } else if (attempt < 6) {
            const int64_t target = first + static_cast<int64_t>(unit(rng) * static_cast<double>(12 - first));  // first..11
            const double extra = unit(rng) * step_seconds;
            when = strprintf("%.2fs after step %lld", extra, static_cast<long long>(target));
            const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(120);
            while (!status && std::chrono::steady_clock::now() < give_up) {
                const auto now = metric_column(run + "/metrics.jsonl", "step");
                if (!now.empty() && now.back() >= static_cast<double>(target)) break;
                status = wait_for(pid, 0.002);
            }
            if (!status) status = wait_for(pid, extra);
        } else {
            status = wait_for(pid, 600);
        }
        if (status) {
            ASSERT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << when << "\n" << test::slurp(dir / "k.log");
            finished = true;
        } else {
            kill(pid, SIGKILL);
            waitpid(pid, nullptr, 0);
            ++killed;
            const auto now = checkpoint_steps(run);
            kills += strprintf("\n    %s: newest checkpoint %lld", when.c_str(),
                               static_cast<long long>(now.empty() ? 0 : *now.rbegin()));
        }
        expect_whole_checkpoints(run);
    }
    std::printf("  seed %u (HRA_KILL_SEED), uninterrupted run %.2f s (start-up %.2f s), %d kills at:%s\n", seed, wall,
                startup, killed, kills.c_str());
    ASSERT_TRUE(finished);
    EXPECT_GE(killed, 4);
    EXPECT_EQ(metric_column(run + "/metrics.jsonl", "loss"), ref_losses);  // ==: each step once, bit for bit
    EXPECT_EQ(metric_column(run + "/metrics.jsonl", "step"), (std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
    for (const char* f : {"adapter_model.safetensors", "optimizer.safetensors"})
        EXPECT_EQ(test::slurp(run + "/checkpoint-12/" + f), test::slurp(dir / "ref/checkpoint-12/" + f)) << f;
    EXPECT_TRUE(half_written(run).empty());
}

namespace {

// A tmpfs mounted for the test's lifetime (needs root; `ok` false otherwise).
struct Tmpfs {
    explicit Tmpfs(const std::string& at) : path(at) {
        std::filesystem::create_directories(at);
        ok = std::system(("mount -t tmpfs -o size=64m tmpfs " + at + " 2>/dev/null").c_str()) == 0;
    }
    ~Tmpfs() {
        if (ok) (void)std::system(("umount -l " + path).c_str());
    }
    bool resize(uint64_t bytes) const {
        return std::system(("mount -o remount,size=" + std::to_string(bytes) + " " + path).c_str()) == 0;
    }
    uint64_t used() const {
        struct statvfs s {};
        statvfs(path.c_str(), &s);
        return static_cast<uint64_t>(s.f_blocks - s.f_bfree) * s.f_frsize;
    }
    std::string path;
    bool ok = false;
};

}  // namespace

// A disk that fills up during a checkpoint write is a clear error naming the
// file; the previous checkpoint stays whole and byte-identical, nothing
// half-written is left, and once there is room the run resumes to the
// uninterrupted run's losses. Two ways to fill it: a file-size limit (any
// user; EFBIG) and a real tmpfs run out of space (root only; ENOSPC).
TEST_F(TrainerTest, AFullDiskIsAClearErrorAndKeepsThePreviousCheckpoint) {
    const std::string flags = " --max-steps 4 --save-every 1 --eval-every 100000";
    auto ref = test::run_hra(cli_common(dir) + (dir / "ref") + flags, dir);
    ASSERT_EQ(ref.code, 0) << ref.err;
    const auto ref_losses = metric_column(dir / "ref/metrics.jsonl", "loss");
    const auto ckpt_bytes = std::filesystem::file_size(dir / "ref/checkpoint-1/optimizer.safetensors");

    // Steps 1-2; `limit` takes the room away; a resume cannot write checkpoint-3; `make_room`; a resume finishes.
    auto check = [&](const std::string& run, const std::string& shell_prefix, const char* message,
                     const std::function<void()>& limit, const std::function<void()>& make_room) {
        auto first = test::run_hra(cli_common(dir) + run + flags + " --inject-sigint-at-step 2", dir);
        ASSERT_EQ(first.code, 130) << first.err;
        const std::string adapter2 = test::slurp(run + "/checkpoint-2/adapter_model.safetensors");
        const std::string optimizer2 = test::slurp(run + "/checkpoint-2/optimizer.safetensors");
        limit();
        const std::string cmd = shell_prefix + "exec " + HRA_EXE + " " + cli_common(dir) + run + flags + " --resume >" +
                                (dir / "full.out") + " 2>" + (dir / "full.err");
        const int status = std::system(("sh -c '" + cmd + "'").c_str());
        const std::string err = test::slurp(dir / "full.err");
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << ": " << err;
        EXPECT_NE(err.find(message), std::string::npos) << err;
        EXPECT_NE(err.find("checkpoint-3"), std::string::npos) << err;  // names the file
        EXPECT_EQ(err.find("hra: error"), err.rfind("hra: error")) << err;  // one error line
        EXPECT_EQ(checkpoint_steps(run), (std::set<int64_t>{1, 2}));
        EXPECT_EQ(test::slurp(run + "/checkpoint-2/adapter_model.safetensors"), adapter2);
        EXPECT_EQ(test::slurp(run + "/checkpoint-2/optimizer.safetensors"), optimizer2);
        EXPECT_TRUE(half_written(run).empty());
        make_room();
        auto rest = test::run_hra(cli_common(dir) + run + flags + " --resume", dir);
        ASSERT_EQ(rest.code, 0) << rest.err;
        EXPECT_EQ(metric_column(run + "/metrics.jsonl", "loss"), ref_losses);
    };
    // ulimit -f counts 512-byte blocks: half a checkpoint's optimizer file cannot be written.
    check(dir / "fsize", "trap \"\" XFSZ; ulimit -f " + std::to_string(ckpt_bytes / 2 / 512) + "; ", "File too large",
          [] {}, [] {});
    Tmpfs disk(dir / "disk");
    if (!disk.ok) {
        std::printf("  tmpfs case not run: mounting needs root\n");
        return;
    }
    // The disk keeps what steps 1-2 wrote and room for half a checkpoint.
    check(disk.path + "/run", "", "No space left on device",
          [&] { ASSERT_TRUE(disk.resize((disk.used() + ckpt_bytes / 2) / 4096 * 4096)); },
          [&] { ASSERT_TRUE(disk.resize(64 << 20)); });
}

// --force starts over for real: the old run moves into previous-N/, and a
// later --resume continues the new run, never the old one.
TEST_F(TrainerTest, ForceMovesTheOldRunAside) {
    const std::string run = cli_common(dir) + (dir / "f");
    ASSERT_EQ(test::run_hra(run + " --max-steps 3", dir).code, 0);
    auto r = test::run_hra(run + " --max-steps 2 --force --inject-sigint-at-step 1", dir);
    ASSERT_EQ(r.code, 130) << r.err;
    EXPECT_TRUE(std::filesystem::exists(dir / "f/previous-1/checkpoint-3/adapter_model.safetensors"));
    EXPECT_FALSE(std::filesystem::exists(dir / "f/checkpoint-3"));
    r = test::run_hra(run + " --max-steps 2 --resume", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["steps"], 2);
    EXPECT_EQ(metric_column(dir / "f/metrics.jsonl", "loss").size(), 2u);
}

TEST_F(TrainerTest, OptionsAreCheckedBeforeTheRunFolderIsMade) {
    struct Case {
        std::string flags, message;
    };
    for (const auto& c : std::vector<Case>{
             {"--schedule cosin", "--schedule"},
             {"--data-dir x", "--data-dir does not apply to --task causal-lm"},
             {"--method lora --apply-GS", "--apply-GS does not apply to --method lora"},
             {"--method hra --lora-alpha 4", "--lora-alpha does not apply to --method hra"},
             {"--method lora --lora-alpha big", "--lora-alpha expects a number"},
             {"--ortho-lambda 0.1 --method lora", "--ortho-lambda does not apply"},
             {"--lr nan", "--lr"},
             {"--lr -1", "--lr must be a positive number"},
             {"--adam-beta1 1.5", "--adam-beta1 must be in [0, 1)"},
             {"--epochs 0", "--epochs must be positive"},
             {"--warmup-ratio 2", "--warmup-ratio must be in [0, 1]"},
             {"--warmup-ratio nan", "--warmup-ratio must be in [0, 1]"},  // trained at lr 9e14 once (signed overflow)
             {"--val-split nan", "--val-split must be >= 0"},
             {"--lr inf", "--lr must be a positive number"},
             {"--device gpu", "--device must be cpu, cuda or cuda:N"},
             {"--device cuda:0", "no CUDA"},  // Debian's libtorch is CPU-only
             {"--task glue-nope", "--task"},
             {"--task mlm --grad-checkpoint", "--grad-checkpoint does not apply to --task mlm"},
         }) {
        auto r = test::run_hra("-q train --model " + (dir / "s260") + " --data " + (dir / "g.jsonl") + " --out " +
                                   (dir / "bad") + " " + c.flags,
                               dir);
        EXPECT_NE(r.code, 0) << c.flags;
        EXPECT_NE(r.err.find(c.message), std::string::npos) << c.flags << ": " << r.err;
        EXPECT_FALSE(std::filesystem::exists(dir / "bad")) << c.flags;
    }
    // --help lists the tasks; PEFT's lora_alpha default.
    auto r = test::run_hra("train --help", dir);
    for (const char* t : {"causal-lm", "glue-sst2", "mlm", "--lora-alpha FLOAT=8", "--nproc", "--grad-checkpoint", "--device"})
        EXPECT_NE(r.out.find(t), std::string::npos) << t;
}

// hra eval generates in batches (left padding, one KV cache): each row is
// what generating that prompt alone gives, greedy and sampled.
TEST_F(TrainerTest, BatchedGenerationEqualsOneAtATime) {
    auto m = load_llama(dir / "s260");
    auto tok = load_tokenizer(dir / "s260");
    std::vector<std::vector<int64_t>> prompts;
    for (const char* p : {"Once upon a time", "The cat", "Lily and Tom went to the park and saw a big", "A"})
        prompts.push_back(tok->encode(p, true));
    for (double temperature : {0.0, 0.8}) {
        SamplingOptions s;
        s.max_new_tokens = 40;
        s.temperature = temperature;
        s.seed = 3;
        s.stop = {"park"};
        if (auto eos = tok->eos_id()) s.eos_ids = {*eos};
        auto batch = generate_batch(*m.model, *tok, prompts, s);
        ASSERT_EQ(batch.size(), prompts.size());
        std::set<std::string> reasons;
        for (size_t i = 0; i < prompts.size(); ++i) {
            auto one = generate(*m.model, *tok, prompts[i], s);
            EXPECT_EQ(batch[i].tokens, one.tokens) << temperature << " row " << i;
            EXPECT_EQ(batch[i].text, one.text) << temperature << " row " << i;
            EXPECT_EQ(batch[i].finish_reason, one.finish_reason) << temperature << " row " << i;
            reasons.insert(one.finish_reason);
        }
        EXPECT_GE(reasons.size(), 2u) << "the rows should end in different ways";
    }
}
