// GGUF export: the tensor encodings against llama.cpp's own gguf-py, refusals of
// bad files, and the real client: llama.cpp (node-llama-cpp 3.21.1's prebuilt
// build) loads hra's files, generates hra's greedy tokens and computes hra's distributions.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "models/generate.h"
#include "models/gguf_export.h"
#include "models/pipeline.h"
#include "test_util.h"
#include "text/tokenizer.h"

namespace hra {
namespace {

std::vector<uint8_t> file_bytes(const std::string& path) {
    const std::string s = io::read_file(path);
    return std::vector<uint8_t>(s.begin(), s.end());
}

at::Tensor fixture_input(const std::string& dir) {
    auto b = file_bytes(dir + "/input.f32");
    return at::from_blob(b.data(), {static_cast<int64_t>(b.size() / 4)}, at::kFloat).clone().reshape({4, -1});
}

TEST(Gguf, EncodingsEqualGgufPy) {
    const std::string dir = test::fixture_dir("HRA_GGUF_FIXTURES", "gguf");
    const auto x = fixture_input(dir);
    EXPECT_EQ(io::encode_ggml(x, io::GgmlType::Q8_0), file_bytes(dir + "/q8_0.bin"));
    EXPECT_EQ(io::encode_ggml(x, io::GgmlType::F16), file_bytes(dir + "/f16.bin"));
    EXPECT_EQ(io::encode_ggml(x, io::GgmlType::BF16), file_bytes(dir + "/bf16.bin"));
    EXPECT_EQ(io::encode_ggml(x, io::GgmlType::F32), file_bytes(dir + "/input.f32"));
    const auto q = file_bytes(dir + "/q8_0.bin");
    const auto back = io::dequantize_q8_0(q.data(), x.numel());
    auto want = file_bytes(dir + "/q8_0_dequant.f32");
    ASSERT_EQ(want.size(), back.size() * 4);
    EXPECT_EQ(std::memcmp(want.data(), back.data(), want.size()), 0);

    // NaNs, infinities, -0, FLT_MAX, the smallest subnormal: equal bits, except that a NaN
    // only has to stay a NaN (payloads and signs of NaNs differ between numpy and c10).
    auto sb = file_bytes(dir + "/special.f32");
    const auto special = at::from_blob(sb.data(), {static_cast<int64_t>(sb.size() / 4)}, at::kFloat).clone();
    for (const auto& [type, file, dtype] : {std::tuple{io::GgmlType::F16, "special_f16.bin", at::kHalf},
                                            std::tuple{io::GgmlType::BF16, "special_bf16.bin", at::kBFloat16}}) {
        const auto got = io::encode_ggml(special, type);
        auto ref = file_bytes(dir + "/" + file);
        ASSERT_EQ(got.size(), ref.size());
        const auto ref_values = at::from_blob(ref.data(), {special.numel()}, dtype).to(at::kFloat);
        for (int64_t i = 0; i < special.numel(); ++i) {
            uint16_t a, b;
            std::memcpy(&a, got.data() + 2 * i, 2);
            std::memcpy(&b, ref.data() + 2 * i, 2);
            if (std::isnan(ref_values[i].item<float>()))
                EXPECT_TRUE(std::isnan(io::decode_ggml(got.data() + 2 * i, type, {1}).item<float>())) << file << " " << i;
            else
                EXPECT_EQ(a, b) << file << " value " << i;
        }
    }
}

TEST(Gguf, WriterAndReaderAgreeOnEveryField) {
    test::TempDir dir;
    io::GgufWriter w;
    w.set("general.architecture", std::string("llama"));
    w.set("a.u32", uint32_t{7});
    w.set("a.i32", int32_t{-3});
    w.set("a.f32", 0.5f);
    w.set("a.bool", true);
    w.set("a.strings", io::GgufArray(std::vector<std::string>{"x", "", "\xE2\x96\x81y"}));
    w.set("a.floats", io::GgufArray(std::vector<float>{1.5f, -2.0f}));
    w.set("a.ints", io::GgufArray(std::vector<int32_t>{1, 6, 3}));
    auto t1 = torch::arange(64, torch::kFloat).reshape({2, 32}) / 7;
    auto t2 = torch::ones({5});
    w.add_tensor("t1", t1, io::GgmlType::Q8_0);
    w.add_tensor("t2", t2, io::GgmlType::F32);
    w.add_tensor("t3", t1, io::GgmlType::BF16);
    EXPECT_NE(test::error_of([&] { w.add_tensor("t4", t2, io::GgmlType::Q8_0); }).find("cannot be q8_0"), std::string::npos);
    const uint64_t size = w.write(dir / "a.gguf");
    EXPECT_EQ(size, std::filesystem::file_size(dir / "a.gguf"));
    const auto f = io::read_gguf(dir / "a.gguf");
    EXPECT_EQ(f.version, 3u);
    EXPECT_EQ(std::get<uint32_t>(f.at("a.u32")), 7u);
    EXPECT_EQ(std::get<int32_t>(f.at("a.i32")), -3);
    EXPECT_EQ(std::get<float>(f.at("a.f32")), 0.5f);
    EXPECT_TRUE(std::get<bool>(f.at("a.bool")));
    EXPECT_EQ(std::get<std::vector<std::string>>(std::get<io::GgufArray>(f.at("a.strings")))[2], "\xE2\x96\x81y");
    EXPECT_EQ(std::get<std::vector<int32_t>>(std::get<io::GgufArray>(f.at("a.ints"))), (std::vector<int32_t>{1, 6, 3}));
    ASSERT_EQ(f.tensors.size(), 3u);
    EXPECT_EQ(f.tensors[0].shape, (std::vector<int64_t>{2, 32}));
    for (const auto& t : f.tensors) EXPECT_EQ((f.data_offset + t.offset) % 32, 0u) << t.name;
    EXPECT_TRUE(torch::equal(f.tensor("t2"), t2));
    EXPECT_LE((f.tensor("t1") - t1).abs().max().item<float>(), (t1.abs().max() / 127).item<float>() / 2 * 1.01);
    EXPECT_TRUE(torch::equal(f.tensor("t3"), t1.to(torch::kBFloat16).to(torch::kFloat)));
}

TEST(Gguf, BadFilesNameTheFileAndTheProblem) {
    test::TempDir dir;
    io::GgufWriter w;
    w.set("k", std::string("v"));
    w.add_tensor("t", torch::ones({4, 32}), io::GgmlType::F32);
    w.write(dir / "good.gguf");
    const std::string good = io::read_file(dir / "good.gguf");
    auto check = [&](const std::string& bytes, const std::string& expected) {
        io::write_file_atomically(dir / "bad.gguf", bytes);
        const std::string e = test::error_of([&] { io::read_gguf(dir / "bad.gguf"); });
        EXPECT_NE(e.find(expected), std::string::npos) << e;
        EXPECT_NE(e.find("bad.gguf"), std::string::npos) << e;
    };
    check("GGML" + good.substr(4), "not a GGUF file");
    std::string v = good;
    v[4] = 9;
    check(v, "unsupported GGUF version 9");
    check(good.substr(0, 30), "truncated GGUF file");
    check(good.substr(0, good.size() - 8), "runs past the end of the file");
    // The tensor type (after name "t": 8 + 1 bytes, n_dims, 2 dims) set to Q4_0 (2).
    std::string q = good;
    const size_t type_at = good.find(std::string("\x01\0\0\0\0\0\0\0t", 9)) + 9 + 4 + 16;
    q[type_at] = 2;
    check(q, "ggml type 2");
    // An array claiming 2^60 strings.
    io::GgufWriter a;
    a.set("arr", io::GgufArray(std::vector<std::string>{"x"}));
    a.write(dir / "arr.gguf");
    std::string s = io::read_file(dir / "arr.gguf");
    const size_t count_at = s.find("arr") + 3 + 4 + 4;
    s[count_at + 7] = 0x10;
    check(s, "truncated GGUF file");
}

TEST(Gguf, TensorNamesAndRowOrder) {
    EXPECT_EQ(gguf_tensor_name("model.layers.11.self_attn.q_proj.weight"), "blk.11.attn_q.weight");
    EXPECT_EQ(gguf_tensor_name("model.layers.0.mlp.down_proj.weight"), "blk.0.ffn_down.weight");
    EXPECT_EQ(gguf_tensor_name("lm_head.weight"), "output.weight");
    EXPECT_EQ(gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq"), "");
    // One head of 4 rows: HF's rotate-half halves [r0 r1 | r2 r3] pair (r0, r2) and (r1, r3);
    // llama.cpp's interleaved order holds the pairs adjacent: r0 r2 r1 r3.
    auto w = torch::arange(8, torch::kFloat).reshape({4, 2});
    auto p = gguf_permute_rows(w, 1);
    EXPECT_TRUE(torch::equal(p, torch::stack({w[0], w[2], w[1], w[3]})));
    EXPECT_NE(test::error_of([&] { gguf_permute_rows(w, 3); }).find("RoPE heads"), std::string::npos);
}

// ---- llama.cpp, the real client ----

struct LlamaCppRun {
    std::vector<int64_t> prompt_ids, generated;
    double prefill_seconds = 0, decode_seconds = 0;
    torch::Tensor probs;  // --probs: [ids, vocab] float64, llama.cpp's next-token distribution after each id
};

std::string interop_dir() { return std::string(HRA_TEST_FIXTURES) + "/../interop"; }

// Runs tests/interop/llama_cpp_run.mjs; "" in `skip` when it can run.
bool node_available(std::string& why) {
    if (std::system("node --version >/dev/null 2>&1") != 0) {
        why = "node is not installed: the llama.cpp interop checks need Node.js 20+ and `npm ci --prefix tests/interop`";
        return false;
    }
    return true;
}

// `teacher`: no generation; these ids are teacher-forced and llama.cpp's distributions come back in `probs`.
LlamaCppRun run_llama_cpp(const std::string& gguf, const std::string& prompt, int n_new, const std::string& lora = "",
                          const std::vector<int64_t>& teacher = {}) {
    const std::string pkg = interop_dir() + "/node_modules/node-llama-cpp/package.json";
    if (!std::filesystem::exists(pkg))
        throw Error("node-llama-cpp is not installed: run `npm ci --prefix tests/interop` (scripts/test.sh does)");
    std::string cmd = "node " + interop_dir() + "/llama_cpp_run.mjs '" + gguf + "' '" + prompt + "' " + std::to_string(n_new);
    if (!lora.empty()) cmd += " '" + lora + "'";
    if (!teacher.empty()) {
        cmd += " --probs --ids ";
        for (size_t i = 0; i < teacher.size(); ++i) cmd += (i ? "," : "") + std::to_string(teacher[i]);
    }
    cmd += " 2>&1";
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) throw Error("cannot start node");
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int status = pclose(p);
    if (status != 0) throw Error("llama.cpp run failed: " + out);
    // The script's result is its last line.
    while (!out.empty() && out.back() == '\n') out.pop_back();
    const auto j = nlohmann::json::parse(out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1));
    LlamaCppRun r;
    r.prompt_ids = j["prompt_ids"].get<std::vector<int64_t>>();
    r.generated = j["generated"].get<std::vector<int64_t>>();
    r.prefill_seconds = j["prefill_seconds"].get<double>();
    r.decode_seconds = j["decode_seconds"].get<double>();
    if (j.contains("probs")) {
        const auto& rows = j["probs"];
        int64_t vocab = 0;
        for (const auto& row : rows)
            for (const auto& e : row) vocab = std::max(vocab, e[0].get<int64_t>() + 1);
        r.probs = torch::zeros({static_cast<int64_t>(rows.size()), vocab}, torch::kDouble);
        auto a = r.probs.accessor<double, 2>();
        for (size_t i = 0; i < rows.size(); ++i)
            for (const auto& e : rows[i]) a[static_cast<int64_t>(i)][e[0].get<int64_t>()] = e[1].get<double>();
    }
    return r;
}

// hra's next-token distributions after each of `ids` (one forward pass), float64 [ids, vocab].
torch::Tensor hra_probs(const std::string& model_dir, const std::vector<std::string>& adapters,
                        const std::vector<int64_t>& ids) {
    torch::NoGradGuard no_grad;
    auto m = load_with_adapters(model_dir, adapters);
    const auto logits = m.base.model->forward(torch::tensor(ids, torch::kLong).unsqueeze(0))[0];
    return torch::softmax(logits.to(torch::kDouble), -1);
}

// Teacher-forces `ids` (hra's prompt and greedy continuation) through llama.cpp and checks
// that its next-token distributions equal hra's within `tol` (largest difference of one
// probability), and that where hra's top two are apart by more than 2*tol (no near-tie a
// float32 rounding can flip), llama.cpp's most likely token is hra's. (Greedy text compared
// whole flaked on random adapters, mostly from llama.cpp's f16 KV cache, which the script now
// turns off; a near-tie could still flip it.) Returns the largest difference seen.
double expect_same_distributions(const std::string& what, const std::string& gguf, const std::string& lora,
                                 const torch::Tensor& hra, const std::vector<int64_t>& ids, double tol) {
    const auto got = run_llama_cpp(gguf, "", 0, lora, ids).probs;
    EXPECT_EQ(got.sizes(), hra.sizes()) << what;
    if (got.sizes() != hra.sizes()) return 1;
    const double diff = (got - hra).abs().max().item<double>();
    EXPECT_LE(diff, tol) << what;
    const auto top2 = hra.topk(2, -1);
    const auto values = std::get<0>(top2), indices = std::get<1>(top2);
    const auto llama_top = got.argmax(-1);
    int64_t ties = 0;
    for (int64_t i = 0; i < hra.size(0); ++i) {
        if (values[i][0].item<double>() - values[i][1].item<double>() <= 2 * tol) {
            ++ties;
            continue;
        }
        EXPECT_EQ(llama_top[i].item<int64_t>(), indices[i][0].item<int64_t>()) << what << " after id " << i;
    }
    std::printf("  %s: largest probability difference %.2e over %lld positions (%lld near-ties)\n", what.c_str(), diff,
                static_cast<long long>(hra.size(0)), static_cast<long long>(ties));
    return diff;
}

std::vector<int64_t> hra_greedy(const std::string& model_dir, const std::vector<std::string>& adapters,
                                const std::string& prompt, int n_new) {
    auto m = load_with_adapters(model_dir, adapters);
    auto tok = load_tokenizer(model_dir);
    SamplingOptions s;
    s.max_new_tokens = n_new;
    s.eos_ids = eos_ids_of(model_dir, m.base.config);
    return generate(*m.base.model, *tok, tok->encode(prompt, true), s, nullptr).tokens;
}

TEST(Gguf, LlamaCppAgreesWithHra) {
    std::string why;
    if (!node_available(why)) GTEST_SKIP() << why;
    test::TempDir dir;
    auto r = test::convert_stories260k(dir);
    ASSERT_EQ(r.code, 0) << r.err;
    const std::string s260 = dir / "s260";
    {
        torch::manual_seed(1);  // the same random adapter every run
        auto m = load_llama(s260);
        PeftModel pm(m.model.ptr(), llama_inject_options("llama"));
        AdapterConfig c;
        c.r = 4;
        c.set("init_weights", false);
        c.target_modules = ModuleSelector::of({"q_proj", "k_proj", "v_proj", "o_proj", "down_proj"});
        pm.add_adapter("default", c);
        pm.save_adapter(dir / "hra");
    }
    r = test::run_hra("-q export gguf --model " + s260 + " --out " + (dir / "base.gguf") + " --type f32", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    auto tok = load_tokenizer(s260);
    // Tokenisation: llama.cpp reads the vocabulary hra wrote from tokenizer.json.
    for (const std::string prompt : {"Once upon a time", "Tom and Lily went to the park. They saw a big dog!",
                                     "  two spaces, caf\xC3\xA9 and 42 apples"}) {
        auto run = run_llama_cpp(dir / "base.gguf", prompt, 1);
        EXPECT_EQ(run.prompt_ids, tok->encode(prompt, true)) << prompt;
    }
    const std::string prompt = "Once upon a time";
    const int n = 48;
    const auto base = hra_greedy(s260, {}, prompt, n);
    EXPECT_EQ(run_llama_cpp(dir / "base.gguf", prompt, n).generated, base);
    const double tol = 1e-5;
    std::vector<int64_t> base_ids = tok->encode(prompt, true);
    base_ids.insert(base_ids.end(), base.begin(), base.end());
    expect_same_distributions("base, f32", dir / "base.gguf", "", hra_probs(s260, {}, base_ids), base_ids, tol);

    // HRA merged into the GGUF, and HRA as a run-time LoRA GGUF on the base: llama.cpp's
    // next-token distributions along hra's greedy text equal hra's.
    const auto adapted = hra_greedy(s260, {dir / "hra"}, prompt, n);
    ASSERT_NE(adapted, base);  // the adapter changes the text, so the checks below see it
    std::vector<int64_t> ids = tok->encode(prompt, true);
    ids.insert(ids.end(), adapted.begin(), adapted.end());
    const auto hra_p = hra_probs(s260, {dir / "hra"}, ids);
    r = test::run_hra("-q export gguf --model " + s260 + " --adapter " + (dir / "hra") + " --out " + (dir / "merged.gguf") +
                          " --type f32",
                      dir);
    ASSERT_EQ(r.code, 0) << r.err;
    expect_same_distributions("HRA merged, f32", dir / "merged.gguf", "", hra_p, ids, tol);
    r = test::run_hra("-q export gguf --lora-only --model " + s260 + " --adapter " + (dir / "hra") + " --out " +
                          (dir / "hra-lora.gguf") + " --type f32",
                      dir);
    ASSERT_EQ(r.code, 0) << r.err;
    expect_same_distributions("HRA as a LoRA GGUF", dir / "base.gguf", dir / "hra-lora.gguf", hra_p, ids, tol);
    // A PEFT LoRA folder (hra export-lora's) as a LoRA GGUF.
    r = test::run_hra("-q export-lora --model " + s260 + " --adapter " + (dir / "hra") + " --out " + (dir / "lora"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    r = test::run_hra("-q export gguf --lora-only --model " + s260 + " --adapter " + (dir / "lora") + " --out " +
                          (dir / "lora.gguf") + " --type f32",
                      dir);
    ASSERT_EQ(r.code, 0) << r.err;
    expect_same_distributions("exported LoRA as a LoRA GGUF", dir / "base.gguf", dir / "lora.gguf", hra_p, ids, tol);
    // A PEFT LoRA whose scaling is not 1 (alpha 16, r 4), on every linear layer.
    {
        torch::manual_seed(2);
        auto m = load_llama(s260);
        PeftModel pm(m.model.ptr(), llama_inject_options("llama"));
        AdapterConfig c = AdapterConfig::of("lora");
        c.r = 4;
        c.set("lora_alpha", 16);
        c.set("init_lora_weights", false);
        c.target_modules = ModuleSelector::of({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
        pm.add_adapter("default", c);
        pm.save_adapter(dir / "lora16");
    }
    const auto lora16 = hra_greedy(s260, {dir / "lora16"}, prompt, n);
    ASSERT_NE(lora16, base);
    r = test::run_hra("-q export gguf --lora-only --model " + s260 + " --adapter " + (dir / "lora16") + " --out " +
                          (dir / "lora16.gguf") + " --type f32",
                      dir);
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(std::get<float>(io::read_gguf(dir / "lora16.gguf").at("adapter.lora.alpha")), 16.0f);
    std::vector<int64_t> ids16 = tok->encode(prompt, true);
    ids16.insert(ids16.end(), lora16.begin(), lora16.end());
    // 3.5e-5 seen: B is random and alpha/r = 4, so logits are larger than the HRA cases' (4e-6).
    expect_same_distributions("PEFT LoRA alpha 16", dir / "base.gguf", dir / "lora16.gguf",
                              hra_probs(s260, {dir / "lora16"}, ids16), ids16, 1e-4);

    // Smaller types: the same comparison within what their rounding costs (seen: f16 1.4e-3,
    // bf16 2.6e-2, q8_0 5.1e-2).
    for (const auto& [type, type_tol] : {std::pair<std::string, double>{"f16", 4e-3}, {"bf16", 6e-2}, {"q8_0", 1e-1}}) {
        r = test::run_hra("-q export gguf --model " + s260 + " --adapter " + (dir / "hra") + " --out " + (dir / (type + ".gguf")) +
                              " --type " + type,
                          dir);
        ASSERT_EQ(r.code, 0) << r.err;
        const auto f = io::read_gguf(dir / (type + ".gguf"));
        for (const auto& t : f.tensors) {
            if (t.shape.size() == 1) {
                EXPECT_EQ(t.type, io::GgmlType::F32) << t.name;
            }
        }
        expect_same_distributions("HRA merged, " + type, dir / (type + ".gguf"), "", hra_p, ids, type_tol);
    }
    // The output is not replaced without --force.
    r = test::run_hra("-q export gguf --model " + s260 + " --out " + (dir / "base.gguf"), dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
}

TEST(Gguf, ExportRefusesWhatLlamaCppCannotHold) {
    test::TempDir dir;
    ASSERT_EQ(test::convert_stories260k(dir).code, 0);
    const std::string s260 = dir / "s260";
    auto refused = [&](const std::function<void()>& f, const std::string& expected) {
        const std::string e = test::error_of(f);
        EXPECT_NE(e.find(expected), std::string::npos) << e;
        EXPECT_FALSE(std::filesystem::exists(dir / "x.gguf"));
    };
    auto edit_config = [&](const std::function<void(nlohmann::json&)>& edit) {
        auto c = nlohmann::json::parse(io::read_file(s260 + "/config.json"));
        const std::string kept = c.dump();
        edit(c);
        io::write_file_atomically(s260 + "/config.json", c.dump());
        return kept;
    };
    std::string kept = edit_config([](nlohmann::json& c) { c["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}}; });
    refused([&] { export_gguf_model(s260, {}, dir / "x.gguf", io::GgmlType::F32); }, "the default RoPE only");
    io::write_file_atomically(s260 + "/config.json", kept);
    // A GPT-2-style vocabulary (OLMo's) in place of the SentencePiece-style one.
    const std::string spm = io::read_file(s260 + "/tokenizer.json");
    io::write_file_atomically(s260 + "/tokenizer.json", io::read_file(std::string(HRA_TEST_FIXTURES) + "/tokenizers/dolma2.tokenizer.json"));
    refused([&] { export_gguf_model(s260, {}, dir / "x.gguf", io::GgmlType::F32); }, "SentencePiece-style vocabularies");
    io::write_file_atomically(s260 + "/tokenizer.json", spm);
    // A LoRA that also trains whole modules has no llama.cpp LoRA form.
    {
        auto m = load_llama(s260);
        PeftModel pm(m.model.ptr(), llama_inject_options("llama"));
        AdapterConfig c = AdapterConfig::of("lora");
        c.r = 2;
        c.modules_to_save = std::vector<std::string>{"lm_head"};
        pm.add_adapter("default", c);
        pm.save_adapter(dir / "saves");
    }
    refused([&] { export_gguf_lora(s260, dir / "saves", dir / "x.gguf", io::GgmlType::F32); }, "export the merged model instead");
    // A Qwen2 fixture: another architecture and a GPT-2-style vocabulary.
    const std::string qwen = test::fixture_dir("HRA_LLAMA_FIXTURES", "llama-family") + "/qwen2-tiny";
    if (std::filesystem::exists(qwen)) {
        const std::string e = test::error_of([&] { export_gguf_model(qwen, {}, dir / "q.gguf", io::GgmlType::F32); });
        EXPECT_NE(e.find("model_type llama and mistral"), std::string::npos) << e;
        EXPECT_FALSE(std::filesystem::exists(dir / "q.gguf"));
    }
    EXPECT_NE(test::error_of([] { io::parse_ggml_type("q4_0"); }).find("supported: f32, f16, bf16, q8_0"), std::string::npos);
}

}  // namespace
}  // namespace hra
