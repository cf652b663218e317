// The hra executable end to end: exit codes, one-line errors, export-lora, inspect.
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "models/loader.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "test_models.h"
#include "test_util.h"

using namespace hra;

namespace {

struct Result {
    int code;
    std::string out, err;
};

Result run_hra(const std::string& args, const test::TempDir& dir) {
    const std::string out = dir / "stdout.txt", err = dir / "stderr.txt";
    const std::string cmd = std::string(HRA_EXE) + " " + args + " >" + out + " 2>" + err;
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, io::read_file(out), io::read_file(err)};
}

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
    r = run_hra("-q generate --model " + (dir / "s260") + " --prompt 'Once upon a time' --max-new-tokens 30", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    // stdout holds the generated text only; timings go to stderr.
    EXPECT_EQ(r.out, ", there was a little girl named Lily. She loved to play outside in the park. One day,\n");
    EXPECT_NE(r.err.find("tok/s"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("finish: length"), std::string::npos) << r.err;
    r = run_hra("-q generate --model " + (dir / "s260") + " --prompt 'Once upon a time' --stop Lily", dir);
    EXPECT_EQ(r.out, ", there was a little girl named \n");

    // An adapter for the converted model: merge it, export it as LoRA; outputs refuse to be overwritten.
    {
        auto m = load_llama(dir / "s260");
        InjectOptions inject;
        inject.model_type = "llama";
        PeftModel pm(m.model.ptr(), inject);
        AdapterConfig c;
        c.r = 2;
        c.init_weights = false;
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
