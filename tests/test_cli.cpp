// The hra executable end to end: exit codes, one-line errors, export-lora, inspect.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>
#include <fstream>
#include <functional>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "demo/demo.h"
#include "diffusion/pipeline.h"
#include "diffusion/shape_world.h"
#include "io/png.h"
#include "models/llama_loader.h"
#include <nlohmann/json.hpp>
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "test_models.h"
#include "test_util.h"

using namespace hra;

namespace {

using test::run_hra;

}  // namespace

TEST(Cli, ExportLoraAndInspect) {
    test::TempDir dir;
    auto [base, pm] = test::mlp_with_hra(4, {"lin0", "lin1"});
    pm.save_adapter(dir / "hra");
    io::save_safetensors(dir / "model.safetensors",
                         {{"lin0.weight", base->lin0->weight}, {"lin1.weight", base->lin1->weight}});

    auto r = run_hra("--threads 1 export-lora --adapter " + (dir / "hra") + " --base " + (dir / "model.safetensors") +
                         " --out " + (dir / "lora"),
                     dir);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("LoRA adapter for 2 layers"), std::string::npos) << r.out;
    EXPECT_NE(r.err.find("threads=1 (--threads)"), std::string::npos) << r.err;
    EXPECT_TRUE(std::filesystem::exists(dir / "lora/adapter_model.safetensors"));

    r = run_hra("-q inspect " + (dir / "lora"), dir);
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("peft_type: LORA   r: 4"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("lora_alpha: 4"), std::string::npos) << r.out;
    // -q: nothing on stderr but warnings and errors (the runtime summary is info).
    EXPECT_EQ(r.err, "");
    r = run_hra("-q -v inspect " + (dir / "lora"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--quiet and --verbose"), std::string::npos) << r.err;

    // Tensors that cannot make an adapter of the folder's config are errors naming the tensor
    // (inspect once printed them as if they were fine).
    auto broken = [&](const std::string& from, const std::string& to, const std::function<bool(const std::string&, at::Tensor&)>& edit) {
        auto f = io::SafetensorsFile::open(dir / (from + "/adapter_model.safetensors"));
        io::NamedTensors kept;
        for (const auto& n : f.names()) {
            at::Tensor t = f.tensor(n);
            if (edit(n, t)) kept.emplace_back(n, t);
        }
        std::filesystem::create_directories(dir / to);
        std::filesystem::copy_file(dir / (from + "/adapter_config.json"), dir / (to + "/adapter_config.json"));
        io::save_safetensors(dir / (to + "/adapter_model.safetensors"), kept);
        return run_hra("-q inspect " + (dir / to), dir);
    };
    r = broken("hra", "hra-r3", [](const std::string& n, at::Tensor& t) {
        if (n.find("lin0") != std::string::npos) t = t.slice(1, 0, 3).contiguous();  // 3 vectors for r=4
        return true;
    });
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("lin0.hra_u': shape [10, 3] cannot be the [in, r] reflection vectors of an r=4 adapter"), std::string::npos) << r.err;
    r = broken("lora", "lora-no-b", [](const std::string& n, at::Tensor&) { return n.find("lin1.lora_B") == std::string::npos; });
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("lin1': has lora_A without lora_B"), std::string::npos) << r.err;
    r = broken("hra", "hra-int", [](const std::string&, at::Tensor& t) {
        t = t.to(torch::kInt32);
        return true;
    });
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("dtype I32 where an adapter needs floating-point values"), std::string::npos) << r.err;
}

TEST(Cli, ErrorsAreOneLineAndNonZero) {
    test::TempDir dir;
    auto r = run_hra("-q inspect " + (dir / "nope"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_EQ(r.err.rfind("hra: error: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(dir / "nope"), std::string::npos) << r.err;

    std::filesystem::create_directories(dir / "bad");
    io::write_file_atomically(dir / "bad/adapter_config.json", R"({"peft_type":"HRA","r":2})");
    io::write_file_atomically(dir / "bad/adapter_model.safetensors", "garbage!");
    r = run_hra("-q inspect " + (dir / "bad"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("adapter_model.safetensors"), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

    r = run_hra("--threads 0x export-lora", dir);  // bad usage: CLI11's message, non-zero
    EXPECT_NE(r.code, 0);
}

TEST(Cli, ConvertGenerateMergeExport) {
    test::TempDir dir;
    auto r = run_hra("-q convert llama2c --model " + test::data_file("stories260K/stories260K_v1.bin") + " --tokenizer " +
                         test::data_file("stories260K/tok512.bin") + " --out " + (dir / "s260"),
                     dir);
    ASSERT_EQ(r.code, 0) << r.err;
    r = run_hra("generate --model " + (dir / "s260") + " --prompt 'Once upon a time' --max-new-tokens 30", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    // stdout holds the generated text only; timings go to stderr (info: -q hides them, below).
    EXPECT_EQ(r.out, ", there was a little girl named Lily. She loved to play outside in the park. One day,\n");
    EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("finish: length"), std::string::npos) << r.err;
    r = run_hra("-q generate --model " + (dir / "s260") + " --prompt 'Once upon a time' --stop Lily", dir);
    EXPECT_EQ(r.out, ", there was a little girl named \n");
    EXPECT_EQ(r.err, "");

    // An adapter for the converted model: merge it, export it as LoRA; outputs refuse to be overwritten.
    {
        auto m = load_llama(dir / "s260");
        PeftModel pm(m.model.ptr(), llama_inject_options("llama"));
        AdapterConfig c;
        c.r = 2;
        c.set("init_weights", false);
        pm.add_adapter("default", c);
        pm.save_adapter(dir / "adapter");
    }
    r = run_hra("-q merge --model " + (dir / "s260") + " --adapter " + (dir / "adapter") + " --out " + (dir / "merged"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(std::filesystem::exists(dir / "merged/tokenizer.json"));
    r = run_hra("-q merge --model " + (dir / "s260") + " --adapter " + (dir / "adapter") + " --out " + (dir / "merged"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
    r = run_hra("-q merge --force --model " + (dir / "s260") + " --adapter " + (dir / "adapter") + " --out " + (dir / "merged"), dir);
    EXPECT_EQ(r.code, 0) << r.err;
    r = run_hra("-q export-lora --model " + (dir / "s260") + " --adapter " + (dir / "adapter") + " --out " + (dir / "lora"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    // The merged model and the base model with the LoRA export generate the same text.
    auto a = run_hra("-q generate --model " + (dir / "merged") + " --prompt 'Once upon a time' --max-new-tokens 20", dir);
    auto b = run_hra("-q generate --model " + (dir / "s260") + " --adapter " + (dir / "lora") +
                         " --prompt 'Once upon a time' --max-new-tokens 20",
                     dir);
    auto c = run_hra("-q generate --model " + (dir / "s260") + " --adapter " + (dir / "adapter") +
                         " --prompt 'Once upon a time' --max-new-tokens 20",
                     dir);
    EXPECT_EQ(a.code, 0);
    EXPECT_EQ(a.out, b.out);
    EXPECT_EQ(a.out, c.out);
}

// Prompt templates at inference and hra eval's batched generation, end to end.
// The template texts below are typed from their sources (Stanford Alpaca's
// train.py PROMPT_DICT; the HRA seed's GSM8K eval script), not from src/.
TEST(Cli, GenerateTemplatesAndBatchedEval) {
    test::TempDir dir;
    ASSERT_EQ(test::convert_stories260k(dir).code, 0);
    const std::string s260 = dir / "s260";
    auto write = [&](const std::string& name, const std::string& text) {
        io::write_file_atomically(dir / name, text);
        return std::string(dir / name);
    };
    const std::string head = "Below is an instruction that describes a task. Write a response that appropriately completes the request.";
    const auto alpaca = write("alpaca.txt", head + "\n\n### Instruction:\n{query}\n\n### Response:");
    const auto seed = write("seed.txt", head + "\n\n### Instruction:\n{query}\n\n### Response: Let's think step by step.");
    const auto with_input = write("input.txt",
                                  "Below is an instruction that describes a task, paired with an input that provides further context. "
                                  "Write a response that appropriately completes the request.\n\n"
                                  "### Instruction:\n{query}\n\n### Input:\n{input}\n\n### Response:");
    const std::string gen = "-q generate --model " + s260 + " --max-new-tokens 16 --prompt 'Tell a story about Lily.' ";
    auto out = [&](const std::string& flags) {
        auto r = run_hra(gen + flags, dir);
        EXPECT_EQ(r.code, 0) << flags << ": " << r.err;
        EXPECT_FALSE(r.out.empty()) << flags;
        if (!r.out.empty()) {
            EXPECT_EQ(r.out.back(), '\n') << flags;
        }
        return r.out;
    };
    const auto plain = out("");
    const auto a = out("--template alpaca");
    EXPECT_NE(a, plain) << "the template should change what follows";
    EXPECT_EQ(a, out("--template-file " + alpaca));
    const auto m = out("--template metamath --step-by-step");
    EXPECT_NE(m, a);
    EXPECT_EQ(m, out("--template-file " + seed));
    const auto i = out("--template alpaca --input 'The park.'");
    EXPECT_NE(i, a);
    EXPECT_EQ(i, out("--template-file " + with_input + " --input 'The park.'"));
    auto r = run_hra(gen + "--template chatml --input x", dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--input goes with --template alpaca"), std::string::npos) << r.err;
    r = run_hra(gen + "--template-file " + write("bad.txt", "no slot"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("{query}"), std::string::npos) << r.err;

    // hra eval generates in batches: batch 1 and batch 2 give the same completions,
    // the default prompt is the seed's, and the log (not a terminal) has no '\r'.
    const auto data = write("q.jsonl",
                            "{\"question\": \"Tom has 3 apples and buys 2 more. How many apples does he have?\", \"answer\": \"#### 5\"}\n"
                            "{\"question\": \"Lily saw 4 cats.\", \"answer\": \"#### 4\"}\n"
                            "{\"question\": \"A dog ran.\", \"answer\": \"#### 0\"}\n");
    const std::string ev = "eval --task gsm8k --model " + s260 + " --data " + data + " --max-new-tokens 12 ";
    r = run_hra(ev + "--batch-size 1 --output " + (dir / "b1.jsonl"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(r.err.find('\r'), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("questions/s"), std::string::npos) << r.err;
    const auto summary = nlohmann::json::parse(r.out);
    EXPECT_EQ(summary.at("n").get<int>(), 3) << r.out;
    EXPECT_GT(summary.at("questions_per_s").get<double>(), 0.0);
    ASSERT_EQ(run_hra("-q " + ev + "--batch-size 2 --output " + (dir / "b2.jsonl"), dir).code, 0);
    ASSERT_EQ(run_hra("-q " + ev + "--batch-size 2 --template-file " + seed + " --output " + (dir / "f.jsonl"), dir).code, 0);
    const auto b1 = test::slurp(dir / "b1.jsonl");
    EXPECT_EQ(std::count(b1.begin(), b1.end(), '\n'), 3) << b1;
    EXPECT_EQ(b1, test::slurp(dir / "b2.jsonl"));
    auto completions = [](const std::string& text) {
        std::vector<std::string> c;
        std::istringstream in(text);
        for (std::string line; std::getline(in, line);) c.push_back(nlohmann::json::parse(line).at("completion"));
        return c;
    };
    EXPECT_EQ(completions(b1), completions(test::slurp(dir / "f.jsonl")));
    EXPECT_NE(nlohmann::json::parse(b1.substr(0, b1.find('\n'))).at("prompt").get<std::string>().find("### Response: Let's think step by step."),
              std::string::npos);
}

TEST(Cli, EvalScoresPredictionsAsOneJsonLine) {
    test::TempDir dir;
    io::write_file_atomically(dir / "p.jsonl",
                              R"({"completion": "so 9 * 2 = 18. The answer is: 18", "answer": "She makes 18.\n#### 18"})" "\n"
                              R"({"completion": "The answer is: 1,450,000", "answer": "#### 1,450,000"})" "\n"
                              R"({"completion": "I do not know", "answer": "7"})" "\n");
    auto r = run_hra("-q eval --task gsm8k --predictions " + (dir / "p.jsonl") + " --output " + (dir / "scored.jsonl"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["task"], "gsm8k");
    EXPECT_EQ(j["protocol"], "strict");
    EXPECT_EQ(j["n"], 3);
    EXPECT_EQ(j["correct"], 2);
    EXPECT_NEAR(j["accuracy"].get<double>(), 2.0 / 3, 1e-12);
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1);
    r = run_hra("-q eval --task gsm8k --protocol seed --predictions " + (dir / "p.jsonl"), dir);
    EXPECT_EQ(nlohmann::json::parse(r.out)["correct"], 1);  // the seed reads 1,450,000 as 1450
    // Field names can be mapped; a missing field names the file and line.
    io::write_file_atomically(dir / "q.jsonl", R"({"output": "The answer is: \\frac{1}{2}", "solution": "\\boxed{0.5}"})" "\n"
                                               R"({"output": "x"})" "\n");
    r = run_hra("-q eval --task math --predictions " + (dir / "q.jsonl") + " --completion-field output --answer-field solution", dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find(dir / "q.jsonl:2"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("solution"), std::string::npos) << r.err;
    // --bad-records skip: the bad record is counted, not scored; nothing usable is still an error.
    r = run_hra("-q eval --task math --bad-records skip --predictions " + (dir / "q.jsonl") +
                    " --completion-field output --answer-field solution",
                dir);
    ASSERT_EQ(r.code, 0) << r.err;
    j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["n"], 1);
    EXPECT_EQ(j["correct"], 1);
    EXPECT_EQ(j["skipped"], 1);
    EXPECT_NE(r.err.find(dir / "q.jsonl: 1 bad record skipped"), std::string::npos) << r.err;
    io::write_file_atomically(dir / "none.jsonl", R"({"output": "x"})" "\n");
    r = run_hra("-q eval --task math --bad-records skip --predictions " + (dir / "none.jsonl") + " --completion-field output",
                dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("no usable record"), std::string::npos) << r.err;
}

// Inputs a hostile-input run found crashing (std::terminate, stack overflow) or stalling: one-line errors now.
TEST(Cli, HostileInputsAreOneLineErrors) {
    test::TempDir dir;
    auto expect_error = [&](const std::string& args, const std::string& fragment) {
        const auto r = run_hra(args, dir);
        EXPECT_EQ(r.code, 1) << args << "\n" << r.err;
        EXPECT_NE(r.err.find(fragment), std::string::npos) << args << "\n" << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    };
    io::write_file_atomically(dir / "nested.yaml", "target-modules: [[q_proj, v_proj]]\n");
    expect_error("-q train --config " + (dir / "nested.yaml"), "nests a list");
    io::write_file_atomically(dir / "key.yaml", "? [a, b]\n: 1\n");
    expect_error("-q train --config " + (dir / "key.yaml"), "option names must be plain words");
    expect_error("-q train --config " + dir.path(), "not a readable file");
    expect_error("-q --threads 4096 inspect " + dir.path(), "at most 4 per CPU");
    // A predictions line nested 100,000 deep: the record is bad (named with its line), the run does not crash.
    io::write_file_atomically(dir / "deep.jsonl", R"({"completion": "The answer is: 18", "answer": "#### 18", "x": )" +
                                                      std::string(100000, '[') + std::string(100000, ']') + "}\n");
    expect_error("-q eval --task gsm8k --predictions " + (dir / "deep.jsonl"), dir / "deep.jsonl:1");
    const auto r = run_hra("-q eval --task gsm8k --predictions " + (dir / "deep.jsonl"), dir);
    EXPECT_NE(r.err.find("nested deeper than 128"), std::string::npos) << r.err;
    // /dev/zero as predictions read until memory ran out; a device or pipe is read up to 256 MiB.
    expect_error("-q eval --task gsm8k --predictions /dev/zero", "/dev/zero: not a regular file, and longer than 256 MiB");
    // A folder as predictions.
    expect_error("-q eval --task gsm8k --predictions " + dir.path(), "is a folder, not a file");
}

TEST(Cli, TrainTakesAYamlOrJsonConfigThatFlagsOverride) {
    test::TempDir dir;
    auto r = test::convert_stories260k(dir);
    ASSERT_EQ(r.code, 0) << r.err;
    std::string data;
    for (int i = 0; i < 20; ++i) data += R"({"query": "Tom has )" + std::to_string(i) + R"( balls.", "response": " Yes."})" "\n";
    io::write_file_atomically(dir / "d.jsonl", data);
    io::write_file_atomically(dir / "cfg.yaml", "model: " + (dir / "s260") + "\ndata: " + (dir / "d.jsonl") +
                                                    "\nmax_steps: 3\nbatch-size: 4\nlr: 0.002\nmethod: lora\nr: 2\n"
                                                    "target-modules: [q_proj, v_proj]\nwarmup_ratio: 0.5\n");
    r = run_hra("-q train --config " + (dir / "cfg.yaml") + " --out " + (dir / "run") + " --max-steps 2", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    auto cfg = nlohmann::json::parse(io::read_file(dir / "run/config.json"));
    EXPECT_EQ(cfg["max_steps"], 2);  // the flag wins over the file
    EXPECT_EQ(cfg["batch_size"], 4);
    EXPECT_DOUBLE_EQ(cfg["lr"].get<double>(), 0.002);
    EXPECT_EQ(cfg["adapter"]["peft_type"], "LORA");
    EXPECT_EQ(cfg["adapter"]["target_modules"], nlohmann::json({"q_proj", "v_proj"}));
    EXPECT_EQ(cfg["warmup_ratio"], 0.5);  // a key with underscores
    EXPECT_EQ(cfg["warmup_steps_resolved"], 1);
    EXPECT_TRUE(std::filesystem::exists(dir / "run/checkpoint-2/adapter_model.safetensors"));
    EXPECT_TRUE(std::filesystem::exists(dir / "run/loss.svg"));
    io::write_file_atomically(dir / "cfg.json", R"({"model": ")" + (dir / "s260") + R"(", "data": ")" + (dir / "d.jsonl") +
                                                    R"(", "max_steps": 1, "batch_size": 2})");
    r = run_hra("-q train --config " + (dir / "cfg.json") + " --out " + (dir / "run2"), dir);
    EXPECT_EQ(r.code, 0) << r.err;
    // --help lists every option with its default.
    r = run_hra("train --help", dir);
    EXPECT_NE(r.out.find("--ortho-lambda"), std::string::npos);
    EXPECT_NE(r.out.find("--lr FLOAT=0.0001"), std::string::npos) << r.out;  // the default is shown
    // A run folder that is not empty is refused without --resume or --force.
    r = run_hra("-q train --config " + (dir / "cfg.json") + " --out " + (dir / "run2"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--resume"), std::string::npos) << r.err;
}

TEST(Cli, ResumeAloneContinuesTheRunWithItsOwnSettings) {
    test::TempDir dir;
    auto r = test::convert_stories260k(dir);
    ASSERT_EQ(r.code, 0) << r.err;
    std::string data;
    for (int i = 0; i < 20; ++i) data += R"({"prompt": "Tom has )" + std::to_string(i) + R"( balls.", "completion": " Yes."})" "\n";
    io::write_file_atomically(dir / "d.jsonl", data);
    const std::string run = dir / "run";
    r = run_hra("-q train --model " + (dir / "s260") + " --data " + (dir / "d.jsonl") + " --out " + run +
                    " --max-steps 3 --save-every 1 --save-total-limit 2 --batch-size 4 --lr 2e-3 --no-shuffle --packing --r 4",
                dir);
    ASSERT_EQ(r.code, 0) << r.err;
    // --save-total-limit 2: checkpoint-1 was removed once checkpoint-3 was written.
    EXPECT_FALSE(std::filesystem::exists(run + "/checkpoint-1"));
    EXPECT_TRUE(std::filesystem::exists(run + "/checkpoint-2"));
    EXPECT_TRUE(std::filesystem::exists(run + "/checkpoint-3"));
    auto cfg = nlohmann::json::parse(io::read_file(run + "/config.json"));
    EXPECT_EQ(cfg["shuffle"], false);
    EXPECT_EQ(cfg["command_line"]["lr"], nlohmann::json({"2e-3"}));
    EXPECT_EQ(cfg["command_line"]["packing"], true);
    // The adapter records what PEFT records: the base model, the task and the targets used.
    auto ac = nlohmann::json::parse(io::read_file(run + "/checkpoint-3/adapter_config.json"));
    EXPECT_EQ(ac["base_model_name_or_path"], dir / "s260");
    EXPECT_EQ(ac["task_type"], "CAUSAL_LM");
    EXPECT_EQ(ac["target_modules"], nlohmann::json({"q_proj", "v_proj"}));
    r = run_hra("inspect " + run + "/checkpoint-3", dir);
    EXPECT_NE(r.out.find("adapted:   10 modules: q_proj x 5 v_proj x 5 in 5 layers"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("task: CAUSAL_LM"), std::string::npos) << r.out;

    // A flag that changes the run is refused, naming it and the run's value; nothing is written.
    r = run_hra("-q train --out " + run + " --resume --max-steps 5 --lr 0.01 --r 4", dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--lr 0.01 (the run has 2e-3)"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("--r "), std::string::npos) << r.err;  // the same value is no change
    EXPECT_FALSE(std::filesystem::exists(run + "/checkpoint-5"));
    r = run_hra("-q train --out " + run + " --resume --max-steps 5 --shuffle", dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--shuffle"), std::string::npos) << r.err;
    // --resume alone (plus a longer run) continues with the recorded settings.
    r = run_hra("-q train --out " + run + " --resume --max-steps 5 --lr 0.002", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(std::filesystem::exists(run + "/checkpoint-5"));
    EXPECT_FALSE(std::filesystem::exists(run + "/checkpoint-3"));
    cfg = nlohmann::json::parse(io::read_file(run + "/config.json"));
    EXPECT_EQ(cfg["max_steps"], 5);
    EXPECT_DOUBLE_EQ(cfg["lr"].get<double>(), 2e-3);
    EXPECT_EQ(cfg["shuffle"], false);
    EXPECT_EQ(cfg["command_line"]["lr"], nlohmann::json({"2e-3"}));

    // --force starts over: the old checkpoints move aside where --resume does not look.
    r = run_hra("-q train --model " + (dir / "s260") + " --data " + (dir / "d.jsonl") + " --out " + run + " --max-steps 1 --force",
                dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_TRUE(std::filesystem::exists(run + "/previous-1/checkpoint-5"));
    EXPECT_TRUE(std::filesystem::exists(run + "/checkpoint-1"));
    EXPECT_FALSE(std::filesystem::exists(run + "/checkpoint-5"));

    // PEFT's layer filter.
    r = run_hra("-q train --model " + (dir / "s260") + " --data " + (dir / "d.jsonl") + " --out " + (dir / "layers") +
                    " --max-steps 1 --method lora --layers-to-transform 0 3",
                dir);
    ASSERT_EQ(r.code, 0) << r.err;
    ac = nlohmann::json::parse(io::read_file(dir / "layers/checkpoint-1/adapter_config.json"));
    EXPECT_EQ(ac["layers_to_transform"], nlohmann::json({0, 3}));
    r = run_hra("inspect " + (dir / "layers/checkpoint-1"), dir);
    EXPECT_NE(r.out.find("adapted:   4 modules: q_proj x 2 v_proj x 2 in 2 layers"), std::string::npos) << r.out;
}

TEST(Cli, ChatTemplatesAndTokenizersAreCheckedBeforeTraining) {
    test::TempDir dir;
    auto r = test::convert_stories260k(dir);
    ASSERT_EQ(r.code, 0) << r.err;
    io::write_file_atomically(dir / "chat.jsonl", R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})" "\n");
    const std::string base = "train --model " + (dir / "s260") + " --data " + (dir / "chat.jsonl") + " --max-steps 1 --out ";
    // stories260K has <s> and </s> only: chatml (the default) is refused, naming llama2.
    r = run_hra(base + (dir / "a"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("use --chat-template llama2"), std::string::npos) << r.err;
    // The model's own chat_template (Jinja, not run) is named by the template it matches.
    auto cfg = nlohmann::json::parse(io::read_file(dir / "s260/tokenizer_config.json"));
    cfg["chat_template"] = "{% for m in messages %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}";
    io::write_file_atomically(dir / "s260/tokenizer_config.json", cfg.dump());
    r = run_hra(base + (dir / "b") + " --chat-template llama2", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.err.find("chat records rendered with --chat-template llama2, the format of"), std::string::npos) << r.err;
    // A tokenizer with ids beyond the model's embedding rows.
    auto tj = nlohmann::json::parse(io::read_file(dir / "s260/tokenizer.json"));
    tj["added_tokens"].push_back({{"id", 512}, {"content", "<|new|>"}, {"single_word", false}, {"lstrip", false},
                                  {"rstrip", false}, {"normalized", false}, {"special", true}});
    io::write_file_atomically(dir / "s260/tokenizer.json", tj.dump());
    r = run_hra(base + (dir / "c") + " --chat-template llama2", dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("the tokenizer has 513 tokens and the model's embedding 512 rows"), std::string::npos) << r.err;
}

TEST(Cli, VersionAndNearestOptionHints) {
    test::TempDir dir;
    auto r = run_hra("--version", dir);
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.out.rfind("hra 0.", 0), 0u) << r.out;
    EXPECT_NE(r.out.find("libtorch"), std::string::npos) << r.out;
    r = run_hra("train --model m --out o --lrr 0.1", dir);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("unknown option --lrr (did you mean --lr?)"), std::string::npos) << r.err;
    r = run_hra("train --help", dir);
    EXPECT_NE(r.out.find("Usage: hra train [OPTIONS]"), std::string::npos) << r.out.substr(0, 300);
    // float16 weights are not trained on the CPU: refused before anything is loaded.
    r = run_hra("train --model m --out o --dtype float16", dir);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("float16"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "o"));
    io::write_file_atomically(dir / "c.yaml", "max_stesp: 3\n");
    r = run_hra("train --config " + (dir / "c.yaml") + " --model m --out o", dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("did you mean --max-steps?"), std::string::npos) << r.err;
    io::write_file_atomically(dir / "c.yaml", "shuffle: maybe\n");
    r = run_hra("train --config " + (dir / "c.yaml") + " --model m --out o", dir);
    EXPECT_NE(r.err.find("a switch takes true or false, not 'maybe'"), std::string::npos) << r.err;
}

// hra demo --subject, reduced to seconds (a few pretraining and DreamBooth
// steps, 2 sampler steps): the plumbing and the report, not the learning
// (README has the full run's numbers).
TEST(Cli, SubjectDemoRunsAndReports) {
    test::TempDir dir;
    auto r = run_hra("-q demo --subject --out " + (dir / "subj") +
                         " --base-steps 8 --finetune-steps 3 --seeds 0 --hra-lrs 1e-3 --lora-lrs 1e-3 --class-images 2 --sample-steps 2 --renders 2",
                     dir);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto last = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
    const auto j = nlohmann::json::parse(last);
    EXPECT_EQ(j["demo"], "subject");
    // 10 transformer blocks (1 per down level and 2 per up level in the 3 attention levels, 1 mid) x 2 attentions
    // x to_q/k/v/out.0, all 64 -> 64: HRA 64 x 8 = 512, LoRA (64 + 64) x 6 = 768 each; and every ResNet's 3x3
    // conv1/conv2 [out, in, 3, 3]: HRA in·9 x 8, LoRA 6 x (in·9 + out), PEFT's shapes, from the model's own weights.
    int64_t hra_count = 80 * 512, lora_count = 80 * 768, convs = 0;
    {
        hra::diffusion::SdLoadOptions lo;
        lo.random_init = true;
        auto sd = hra::diffusion::load_stable_diffusion(dir / "subj/model-config", torch::kFloat, lo);
        for (const auto& p : sd.unet.model->named_parameters()) {
            const auto& k = p.key();
            if (k.find(".resnets.") == std::string::npos || (k.find(".conv1.weight") == std::string::npos && k.find(".conv2.weight") == std::string::npos))
                continue;
            const int64_t out = p.value().size(0), in = p.value().size(1) * 9;
            hra_count += in * 8, lora_count += 6 * (in + out), ++convs;
        }
    }
    EXPECT_EQ(convs, 2 * (4 + 2 + 4 * 2));  // 4 down, 2 mid, 4 x 2 up ResNet blocks
    EXPECT_EQ(j["trainable_params"]["hra"], hra_count);
    EXPECT_EQ(j["trainable_params"]["lora"], lora_count);
    EXPECT_EQ(j["test_prompts"].get<int>() + j["validation_prompts"].get<int>() + 4, 6 * 9);  // every large context, the 4 instances' aside
    EXPECT_EQ(j["base"]["images"], 33);  // 54 contexts - 4 instance - 17 validation
    EXPECT_EQ(j["hra"]["seeds"].size(), 1u);
    EXPECT_EQ(j["lora"]["seeds"].size(), 1u);
    EXPECT_EQ(j["instance_prompts"], nlohmann::json({"a large green sks shape at the middle center", "a large red sks shape at the top left",
                                                     "a large blue sks shape at the bottom right", "a large yellow sks shape at the top right"}));
    EXPECT_EQ(j["class_prompts"][1], "a large red shape at the top left");
    for (const char* row : {"base ", "HRA ", "LoRA ", "chance"}) EXPECT_NE(r.out.find(row), std::string::npos) << row;
    EXPECT_TRUE(std::filesystem::exists(dir / "subj/subject-grid.png"));
    int instances = 0, classes = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir / "subj/instance-images")) instances += e.path().extension() == ".png";
    for (const auto& e : std::filesystem::directory_iterator(dir / "subj/class-images")) classes += e.path().extension() == ".png";
    EXPECT_EQ(instances, 4);
    EXPECT_EQ(classes, 2);
    // Each instance image captioned with its own context, and the class images with theirs.
    const auto meta = io::read_file(dir / "subj/instance-images/metadata.jsonl");
    EXPECT_EQ(nlohmann::json::parse(meta.substr(0, meta.find('\n')))["text"], "a large green sks shape at the middle center");
    EXPECT_NE(io::read_file(dir / "subj/class-images/metadata.jsonl").find("\"a large red shape at the top left\""), std::string::npos);
    // Pretraining captions: half "a large red circle shape at ..." (the shape word where "sks" goes), half the class caption.
    int full = 0, cls = 0, lines = 0;
    {
        std::ifstream meta(dir / "subj/pretrain-images/metadata.jsonl");
        for (std::string line; std::getline(meta, line); ++lines) {
            const auto text = nlohmann::json::parse(line)["text"].get<std::string>();
            full += text.rfind("a large ", 0) == 0 && (text.find(" circle shape at the ") != std::string::npos ||
                                                       text.find(" square shape at the ") != std::string::npos ||
                                                       text.find(" triangle shape at the ") != std::string::npos);
            cls += text.find(" shape at the ") != std::string::npos && text.find("circle") == std::string::npos &&
                   text.find("square") == std::string::npos && text.find("triangle") == std::string::npos;
        }
    }
    EXPECT_EQ(lines, 162 * 2);
    EXPECT_EQ(full, 162);
    EXPECT_EQ(cls, 162);
    r = run_hra("-q demo --subject --diffusion --out " + (dir / "x"), dir);
    EXPECT_EQ(r.code, 1);
}

// hra demo --control, reduced to seconds (a few pretraining and control steps, 2
// sampler steps): the plumbing, the split and the report, not the learning (README
// has the full run's numbers).
TEST(Cli, ControlDemoRunsAndReports) {
    test::TempDir dir;
    auto r = run_hra("-q demo --control --out " + (dir / "ctrl") +
                         " --base-steps 6 --finetune-steps 2 --seeds 0 --hra-lrs 1e-3 --lora-lrs 1e-3 --sample-steps 2 --renders 2"
                         " --renders-per-pair 1 --batch 2",
                     dir);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto last = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
    const auto j = nlohmann::json::parse(last);
    EXPECT_EQ(j["demo"], "control");
    // The hint encoder at the world UNet's width (32) without strides: ldm's widths 3-16-16-32-32-96-96-256, then 32,
    // each a 3x3 convolution with bias: 448 + 2320 + 4640 + 9248 + 27744 + 83040 + 221440 + 73760.
    EXPECT_EQ(j["hint_encoder_params"], 422640);
    // Adapters on every to_q/k/v/out.0 and ff.net.0.proj Linear of the model's transformer blocks: HRA in x 8,
    // LoRA 3 x (in + out), from the model's own weights.
    int64_t hra_count = 0, lora_count = 0, linears = 0;
    {
        hra::diffusion::SdLoadOptions lo;
        lo.random_init = true;
        auto sd = hra::diffusion::load_stable_diffusion(dir / "ctrl/model-config", torch::kFloat, lo);
        for (const auto& p : sd.unet.model->named_parameters()) {
            const auto& k = p.key();
            if (k.find(".transformer_blocks.") == std::string::npos || k.size() < 7 || k.substr(k.size() - 7) != ".weight") continue;
            bool target = false;
            for (const char* t : {".to_q.", ".to_k.", ".to_v.", ".to_out.0.", ".ff.net.0.proj."}) target |= k.find(t) != std::string::npos;
            if (!target) continue;
            const int64_t out = p.value().size(0), in = p.value().size(1);
            hra_count += in * 8, lora_count += 3 * (in + out), ++linears;
        }
    }
    EXPECT_EQ(linears, 10 * 9);  // 10 transformer blocks (3 attention levels: 1 down + 2 up each, 1 mid) x (2 x 4 + 1)
    EXPECT_EQ(j["hra"]["adapter_params"], hra_count);
    EXPECT_EQ(j["lora"]["adapter_params"], lora_count);
    EXPECT_EQ(j["test_conditions"], 72);  // 12 layouts x 6 colours
    EXPECT_EQ(j["validation_conditions"], 18);
    EXPECT_EQ(j["train_pairs"], 36 * 6);
    EXPECT_EQ(j["base"]["images"], 72);
    EXPECT_EQ(j["hra"]["seeds"].size(), 1u);
    EXPECT_EQ(j["lora"]["seeds"].size(), 1u);
    for (const char* row : {"base ", "HRA ", "LoRA ", "chance"}) EXPECT_NE(r.out.find(row), std::string::npos) << row;
    EXPECT_TRUE(std::filesystem::exists(dir / "ctrl/control-grid.png"));
    // No control pair shows a test or validation layout: the checker reads every target back.
    std::set<std::string> held(j["test_layouts"].begin(), j["test_layouts"].end());
    held.insert(j["validation_layouts"].begin(), j["validation_layouts"].end());
    EXPECT_EQ(held.size(), 18u);
    int pairs = 0;
    {
        std::ifstream lines(dir / "ctrl/control-pairs/prompt.json");
        for (std::string line; std::getline(lines, line); ++pairs) {
            const auto rec = nlohmann::json::parse(line);
            EXPECT_FALSE(rec.contains("source"));  // the task takes Canny of the target
            const auto got = hra::diffusion::check_image(io::read_png(dir / ("ctrl/control-pairs/" + rec["target"].get<std::string>())).pixels);
            ASSERT_TRUE(got.found) << line;
            const auto& s = got.scene;
            const std::string layout = hra::diffusion::world_sizes()[s.size] + " " + hra::diffusion::world_shapes()[s.shape] + " " +
                                       hra::diffusion::world_rows()[s.row] + " " + hra::diffusion::world_cols()[s.col];
            EXPECT_EQ(held.count(layout), 0u) << layout;
            EXPECT_EQ(rec["prompt"], "a " + hra::diffusion::world_colours()[s.colour] + " shape");
        }
    }
    EXPECT_EQ(pairs, 36 * 6);
    r = run_hra("-q demo --control --subject --out " + (dir / "x"), dir);
    EXPECT_EQ(r.code, 1);
    r = run_hra("-q demo --control --steps 5 --out " + (dir / "x"), dir);  // the stories260K demo's option
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--finetune-steps"), std::string::npos) << r.err;
    r = run_hra("-q demo --control --seeds 0 1 0 --out " + (dir / "x"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("seeds must differ"), std::string::npos) << r.err;
}

// The demo's questions: one de-duplicated pool, split into disjoint slices (a
// former demo drew its test set with another seed, and 22 of 300 test
// questions were training questions).
TEST(Demo, TrainValidationAndTestShareNoQuestion) {
    const auto pool = comparison_pool(0);
    std::set<std::string> distinct;
    for (const auto& it : pool) distinct.insert(it.query);
    EXPECT_EQ(pool.size(), 8u * 7 * 9 * 8 * 5);  // names a != b, counts x != y, five kinds of thing
    EXPECT_EQ(distinct.size(), pool.size());
    DemoOptions o;
    const auto d = demo_split(o);
    ASSERT_EQ(d.train.size(), static_cast<size_t>(o.train_examples));
    ASSERT_EQ(d.val.size(), static_cast<size_t>(o.val_examples));
    ASSERT_EQ(d.test.size(), static_cast<size_t>(o.test_examples));
    std::set<std::string> train;
    for (const auto& it : d.train) train.insert(it.query);
    std::set<std::string> val;
    for (const auto& it : d.val) {
        EXPECT_FALSE(train.count(it.query)) << it.query;
        val.insert(it.query);
    }
    for (const auto& it : d.test) EXPECT_FALSE(train.count(it.query) || val.count(it.query)) << it.query;
    // Each item's answer is the name with more, read back from the question.
    const std::regex counts(R"(^(\w+) has (\d+) \w+\. (\w+) has (\d+) \w+\. Who has more \w+\?$)");
    for (const auto& it : d.test) {
        std::smatch m;
        ASSERT_TRUE(std::regex_match(it.query, m, counts)) << it.query;
        const bool first_more = std::stoi(m[2]) > std::stoi(m[4]);
        EXPECT_EQ(it.answer, first_more ? m[1].str() : m[3].str()) << it.query;
        EXPECT_EQ(it.other, first_more ? m[3].str() : m[1].str()) << it.query;
        EXPECT_EQ(it.first_wins, first_more) << it.query;
    }
    o.test_examples = 20000;
    EXPECT_THROW(demo_split(o), Error);
}

// A reduced demo (one seed, each method at the learning rate the full demo
// chooses, 200 steps, one thread: 28 s here, also beside another test; with two
// threads beside another test OpenMP spun for 723 s): both methods beat the
// majority answer on held-out questions by the likelihood of the two names
// (measured: HRA 0.730, LoRA 0.735, majority 0.530; with two threads HRA got
// 0.685; the margin asserted, 0.08, is about half the smallest seen), and both
// learnt to answer with a name (generation 0.575 and 0.59; the base: 0). The
// last stdout line is the table as JSON.
TEST(Cli, DemoRunsAndReportsBaselines) {
    test::TempDir dir;
    auto r = run_hra("-q --threads 1 demo --out " + (dir / "demo") +
                         " --steps 200 --val-examples 50 --seeds 0 --hra-lrs 0.01 --lora-lrs 0.003 --test-examples 200",
                     dir);
    ASSERT_EQ(r.code, 0) << r.err;
    for (const char* row : {"chance", "majority answer", "base model (before)", "HRA r=8", "LoRA r=4", "generated answer", "likelier name"})
        EXPECT_NE(r.out.find(row), std::string::npos) << row << "\n" << r.out;
    EXPECT_TRUE(std::filesystem::exists(dir / "demo/loss.svg"));
    const auto last = r.out.substr(r.out.rfind('\n', r.out.size() - 2) + 1);
    const auto summary = nlohmann::json::parse(last);
    EXPECT_EQ(summary, nlohmann::json::parse(io::read_file(dir / "demo/demo.json")));
    ASSERT_EQ(summary["rows"].size(), 2u);
    EXPECT_EQ(summary["rows"][0]["parameters"], 22240);  // HRA r=8 on all seven projections of 5 layers
    EXPECT_EQ(summary["rows"][1]["parameters"], 23120);  // LoRA r=4
    const double majority = summary["majority"];
    for (const auto& row : summary["rows"]) {
        std::printf("  %s: held-out generation %.3f, likelihood %.3f (majority %.3f; base %.3f, %.3f)\n",
                    row["method"].get<std::string>().c_str(), row["mean"]["generation"].get<double>(),
                    row["mean"]["likelihood"].get<double>(), majority, summary["before"]["generation"].get<double>(),
                    summary["before"]["likelihood"].get<double>());
        EXPECT_GE(row["mean"]["likelihood"].get<double>(), majority + 0.08) << row;
        EXPECT_GE(row["mean"]["generation"].get<double>(), 0.45) << row;
    }
}
