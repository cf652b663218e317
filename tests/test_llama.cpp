// LLaMA-family models beyond the transformers parity test: the real
// stories260K weights (llama2.c golden values, through the converted HF
// folder, v0 and v1), incremental decoding vs full recomputation, loading
// errors, sampling and stop strings.
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "models/generate.h"
#include "models/llama2c.h"
#include "models/pipeline.h"
#include "models/llama_config.h"
#include "models/llama_loader.h"
#include "text/llama2c_tokenizer.h"
#include "text/sp_tokenizer.h"
#include "text/tokenizer.h"
#include "text/vocab_json.h"
#include "text/hf_tokenizer.h"
#include "test_util.h"

using namespace hra;
using hra::test::max_abs_diff;
using hra::test::rel_err;

namespace {

using test::fixture;

const std::vector<int64_t> kGoldenPrompt = {1, 403, 407, 261, 378};
const std::vector<int64_t> kGoldenContinuation = {432, 383, 286, 261, 376, 298, 315, 421, 395, 317,
                                                  426, 338, 401, 396, 267, 337, 410, 408, 419, 292,
                                                  411, 322, 265, 282, 295, 433, 426, 385, 328, 432};

class Stories260K : public ::testing::TestWithParam<std::string> {};

// stories260K converted into an HF folder under `dir`, loaded with its tokenizer.json.
struct Stories {
    LoadedModel model;
    std::unique_ptr<Tokenizer> tokenizer;
};
Stories converted_stories(const test::TempDir& dir) {
    convert_llama2c(test::data_file("stories260K/stories260K.bin"), test::data_file("stories260K/tok512.bin"), dir / "hf", false);
    return {load_llama(dir / "hf"), load_tokenizer(dir / "hf")};
}

}  // namespace

TEST_P(Stories260K, ConvertedFolderReproducesLlama2cGoldenValues) {
    test::TempDir dir;
    const std::string out = dir / "hf";
    convert_llama2c(test::data_file("stories260K/" + GetParam()), test::data_file("stories260K/tok512.bin"), out, false);
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
        EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(out) / f)) << f;
    auto model = load_llama(out);
    auto tok = load_tokenizer(out);
    EXPECT_EQ(tok->kind(), "tokenizer.json (BPE)");
    EXPECT_EQ(tok->encode("Once upon a time", true), kGoldenPrompt);

    torch::NoGradGuard ng;
    auto logits = model.model->forward(torch::tensor({1}, torch::kLong).unsqueeze(0)).view({-1});
    EXPECT_EQ(logits.argmax().item<int64_t>(), 403);
    EXPECT_NEAR(logits.max().item<double>(), 17.02352, 1e-4);
    const double first[] = {-6.22291, 8.40434, -6.22374, -6.22254, -6.22195};
    for (int i = 0; i < 5; ++i) EXPECT_NEAR(logits[i].item<double>(), first[i], 1e-4) << i;
    EXPECT_NEAR(logits.sum().item<double>(), -1070.172, 5e-3);

    SamplingOptions greedy;
    greedy.max_new_tokens = 30;
    auto res = generate(*model.model, *tok, kGoldenPrompt, greedy);
    EXPECT_EQ(res.tokens, kGoldenContinuation);
    EXPECT_EQ(res.text, ", there was a little girl named Lily. She loved to play outside in the park. One day,");
    EXPECT_EQ(res.finish_reason, "length");
}

INSTANTIATE_TEST_SUITE_P(Versions, Stories260K, ::testing::Values("stories260K.bin", "stories260K_v1.bin"),
                         [](const auto& info) { return info.param == "stories260K.bin" ? "v0" : "v1"; });

TEST(Llama2cConversion, TokenizerJsonAgreesWithRunCEncoder) {
    test::TempDir dir;
    convert_llama2c(test::data_file("stories260K/stories260K.bin"), test::data_file("stories260K/tok512.bin"), dir / "hf", false);
    auto hf = load_tokenizer(dir / "hf");
    auto bin = make_llama2c_tokenizer(read_llama2c_vocab(test::data_file("stories260K/tok512.bin"), 512));
    for (const std::string text : {"Lily and Ben went to the park. They saw a big dog!", "The cat sat on the mat.\n\nThe end.",
                                   "Tom's mom said: \"No, you can't.\"", "caf\xC3\xA9 \xE2\x98\x83 42", "  two spaces"}) {
        EXPECT_EQ(hf->encode(text, true), bin->encode(text, true)) << text;
        EXPECT_EQ(hf->decode(hf->encode(text, true)), text) << text;
    }
    // An existing non-empty output is refused, and replaced when asked.
    EXPECT_THROW(convert_llama2c(test::data_file("stories260K/stories260K.bin"), test::data_file("stories260K/tok512.bin"), dir / "hf", false),
                 Error);
    EXPECT_NO_THROW(convert_llama2c(test::data_file("stories260K/stories260K.bin"), test::data_file("stories260K/tok512.bin"), dir / "hf", true));
}

TEST(Llama2cConversion, BadCheckpointsAreNamed) {
    test::TempDir dir;
    const std::string data = io::read_file(test::data_file("stories260K/stories260K.bin"));
    io::write_file_atomically(dir / "short.bin", data.substr(0, data.size() - 4));
    try {
        read_llama2c(dir / "short.bin");
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("does not match its header"), std::string::npos) << e.what();
        EXPECT_EQ(e.file(), dir / "short.bin");
    }
    std::string v2 = io::read_file(test::data_file("stories260K/stories260K_v1.bin"));
    v2[4] = 2;  // version 2 (int8)
    io::write_file_atomically(dir / "v2.bin", v2);
    EXPECT_THROW(read_llama2c(dir / "v2.bin"), Error);
    io::write_file_atomically(dir / "tiny.bin", "abc");
    EXPECT_THROW(read_llama2c(dir / "tiny.bin"), Error);
    // Nothing is left behind by a failed conversion.
    EXPECT_THROW(convert_llama2c(dir / "short.bin", test::data_file("stories260K/tok512.bin"), dir / "out", false), Error);
    EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}

TEST(SentencePieceToTokenizerJson, AgreesWithLibsentencepiece) {
    // Train a small BPE model with the library itself, write it as a Llama-2
    // style tokenizer.json, and check both give the same ids.
    test::TempDir dir;
    std::string corpus;
    for (const char* f : {"gsm8k/README.md", "llama-family/llama-tiny/README.md", "peft-hra/README.md",
                          "tokenizers/README.md"})
        corpus += io::read_file(fixture(f)) + "\n";
    io::write_file_atomically(dir / "corpus.txt", corpus);
    train_sentencepiece("--input=" + (dir / "corpus.txt") + " --model_prefix=" + (dir / "m") +
                        " --vocab_size=400 --model_type=bpe --byte_fallback=true --character_coverage=1.0"
                        // Llama 2's settings: no Unicode normalisation, whitespace kept as is.
                        " --normalization_rule_name=identity --remove_extra_whitespaces=false --minloglevel=2");
    auto sp = make_sentencepiece_tokenizer(dir / "m.model");
    EXPECT_EQ(sp->vocab_size(), 400);
    EXPECT_EQ(sp->kind(), "sentencepiece");
    auto v = read_sentencepiece_vocab(dir / "m.model");
    ScoredVocab sv{v.pieces, v.scores, v.types, 0, *sp->bos_id(), *sp->eos_id()};
    auto hf = make_hf_tokenizer(llama_tokenizer_json(sv), "converted");
    for (const std::string text : {"The model is a real pretrained model.", "Relative error per tensor, max |ours - ref|",
                                   "RoPE tables for positions 0..8", "Unicode \xC3\xA9\xE2\x98\x83 falls back to bytes",
                                   "multiple   spaces\nand lines"}) {
        EXPECT_EQ(hf->encode(text, true), sp->encode(text, true)) << text;
        EXPECT_EQ(hf->decode(sp->encode(text, true)), sp->decode(sp->encode(text, true))) << text;
    }
    EXPECT_TRUE(sp->is_special(*sp->bos_id()));
    EXPECT_EQ(sp->encode("hi", false).size() + 1, sp->encode("hi", true).size());
}

TEST(LlamaModel, IncrementalDecodingEqualsFullRecomputation) {
    auto m = load_llama(fixture("llama-family/llama-tiny"));
    torch::NoGradGuard ng;
    torch::manual_seed(0);
    auto ids = torch::randint(3, 97, {1, 12}, torch::kLong);
    auto full = m.model->forward(ids).view({12, -1});
    KVCache cache;
    LlamaInputs in;
    in.cache = &cache;
    in.input_ids = ids.narrow(1, 0, 5);  // prefill 5, then one at a time
    std::vector<torch::Tensor> rows = {m.model->forward(in).logits.view({5, -1})};
    for (int64_t i = 5; i < 12; ++i) {
        in.input_ids = ids.narrow(1, i, 1);
        rows.push_back(m.model->forward(in).logits.view({1, -1}));
    }
    EXPECT_LT(rel_err(torch::cat(rows), full), 1e-5);
    EXPECT_EQ(cache.length(), 12);
}

TEST(LlamaModel, LeftPaddedBatchMatchesSingleSequences) {
    auto m = load_llama(fixture("llama-family/qwen2-tiny"));
    torch::NoGradGuard ng;
    auto a = torch::tensor({5, 9, 11, 17, 23}, torch::kLong), b = torch::tensor({7, 13, 19}, torch::kLong);
    LlamaInputs in;
    in.input_ids = torch::stack({a, torch::cat({torch::zeros({2}, torch::kLong), b})});
    in.attention_mask = torch::tensor({1, 1, 1, 1, 1, 0, 0, 1, 1, 1}, torch::kLong).view({2, 5});
    in.position_ids = torch::tensor({0, 1, 2, 3, 4, 0, 0, 0, 1, 2}, torch::kLong).view({2, 5});
    auto batch = m.model->forward(in).logits;
    EXPECT_LT(rel_err(batch[0], m.model->forward(a.unsqueeze(0))[0]), 1e-5);
    EXPECT_LT(rel_err(batch[1].narrow(0, 2, 3), m.model->forward(b.unsqueeze(0))[0]), 1e-5);
}

TEST(LlamaModel, LoadingErrorsNameTheKeys) {
    test::TempDir dir;
    const std::string src = fixture("llama-family/mistral-tiny");
    auto copy = [&](const std::string& name) {
        std::filesystem::create_directories(dir / name);
        for (const char* f : {"config.json", "model.safetensors"})
            std::filesystem::copy_file(std::filesystem::path(src) / f, std::filesystem::path(dir / name) / f);
        return dir / name;
    };
    auto expect_error = [&](const std::string& path, const std::string& fragment) {
        try {
            load_llama(path);
            FAIL() << "expected: " << fragment;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
        }
    };
    auto weights = io::SafetensorsFile::open(src + "/model.safetensors").load_all();
    {
        const auto d = copy("missing");
        auto w = weights;
        w.erase("model.norm.weight");
        io::save_safetensors(d + "/model.safetensors", io::NamedTensors(w.begin(), w.end()));
        expect_error(d, "missing keys: model.norm.weight");
    }
    {
        const auto d = copy("extra");
        auto w = weights;
        w["model.layers.9.mlp.up_proj.weight"] = torch::zeros({2, 2});
        w["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch::zeros({8});  // old checkpoints: ignored
        io::save_safetensors(d + "/model.safetensors", io::NamedTensors(w.begin(), w.end()));
        expect_error(d, "unexpected keys: model.layers.9.mlp.up_proj.weight");
    }
    {
        const auto d = copy("shape");
        auto w = weights;
        w["model.norm.weight"] = torch::zeros({31});
        io::save_safetensors(d + "/model.safetensors", io::NamedTensors(w.begin(), w.end()));
        expect_error(d, "wrong shapes: model.norm.weight [31]");
    }
    {
        const auto d = copy("nan");
        auto w = weights;
        w["model.norm.weight"] = w["model.norm.weight"].clone();
        w["model.norm.weight"][3] = std::nan("");
        io::save_safetensors(d + "/model.safetensors", io::NamedTensors(w.begin(), w.end()));
        expect_error(d, "non-finite values (NaN or inf) in model.norm.weight");
    }
    {
        const auto d = copy("type");
        auto cfg = nlohmann::json::parse(io::read_file(d + "/config.json"));
        cfg["model_type"] = "gpt2";
        io::write_file_atomically(d + "/config.json", cfg.dump());
        expect_error(d, "unsupported model_type 'gpt2'");
    }
    expect_error(dir / "nowhere", "missing config.json");
    {
        // A tied model whose file also holds lm_head.weight loads (the key is ignored).
        std::filesystem::create_directories(dir / "tied");
        std::filesystem::copy_file(fixture("llama-family/qwen2-tiny/config.json"), dir / "tied/config.json");
        auto w = io::SafetensorsFile::open(fixture("llama-family/qwen2-tiny/model.safetensors")).load_all();
        w["lm_head.weight"] = w.at("model.embed_tokens.weight").clone();
        io::save_safetensors(dir / "tied/model.safetensors", io::NamedTensors(w.begin(), w.end()));
        EXPECT_NO_THROW(load_llama(dir / "tied"));
    }
}

// Configs no model has (the hostile-input run allocated 10^9 layers, ran rope_theta 0 and negative ids):
// errors naming the key, before any weight is made.
TEST(LlamaModel, ImpossibleConfigsAreErrorsNamingTheKey) {
    const auto good = nlohmann::json::parse(io::read_file(fixture("llama-family/llama-tiny/config.json")));
    EXPECT_NO_THROW(parse_llama_config(good.dump(), "c.json"));
    struct Case {
        const char* key;
        nlohmann::json value;
        const char* message;
    };
    for (const auto& c : std::vector<Case>{
             {"num_hidden_layers", 1000000000, "beyond any model"},
             {"hidden_size", 1000000000000LL, "beyond any model"},
             {"vocab_size", 0, "sizes must be positive"},
             {"max_position_embeddings", 1000000000000LL, "must be 1 to 2^24"},
             {"max_position_embeddings", -5, "must be 1 to 2^24"},
             {"rope_theta", 0, "'rope_theta': must be a positive number"},
             {"rope_theta", -10000.0, "'rope_theta': must be a positive number"},
             {"eos_token_id", -1, "'eos_token_id': token ids are not negative"},
             {"bos_token_id", -2, "'bos_token_id': token ids are not negative"},
             // Beyond int64 (used to wrap to a negative or a wrong id) and fractions.
             {"bos_token_id", nlohmann::json::parse("18446744073709551615"), "'bos_token_id': integer out of range"},
             {"eos_token_id", nlohmann::json::parse("[2, 18446744073709551615]"), "'eos_token_id': integer out of range"},
             {"eos_token_id", 2.5, "'eos_token_id': expected an integer, got 2.5"},
             {"pad_token_id", 1e30, "'pad_token_id': expected an integer"},
             {"rope_scaling", {{"rope_type", "linear"}, {"factor", 0}}, "factor must be a positive number"},
             {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8}, {"low_freq_factor", 4}, {"high_freq_factor", 1}},
              "low_freq_factor < high_freq_factor"},
             {"rope_scaling", nlohmann::json::array({1, 2}), "must be an object or null"},
         }) {
        auto cfg = good;
        cfg[c.key] = c.value;
        try {
            parse_llama_config(cfg.dump(), "c.json");
            ADD_FAILURE() << c.key << " = " << c.value.dump();
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.key << ": " << e.what();
            EXPECT_EQ(e.file(), "c.json");
        }
    }
    // Sizes each within bounds whose products ask for terabytes; the estimate behind the budget is
    // a lower one (the fixture's real count is its weights' numel).
    auto big = good;
    big["vocab_size"] = 1 << 24;
    big["hidden_size"] = 1 << 17;
    big["head_dim"] = 128;
    try {
        parse_llama_config(big.dump(), "c.json");
        ADD_FAILURE() << "vocab 2^24 x hidden 2^17 accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("c.json: these sizes make at least 4.4e+12 parameters"), std::string::npos) << e.what();
    }
    {
        const auto m = load_llama(fixture("llama-family/llama-tiny"));
        int64_t n = 0;
        for (const auto& p : m.model->parameters()) n += p.numel();
        EXPECT_LE(parameters_at_least(m.config), static_cast<double>(n));
        EXPECT_GE(parameters_at_least(m.config), 0.5 * static_cast<double>(n));
    }
    // hidden_size / heads must divide when head_dim is not given, as transformers' LlamaAttention asks.
    auto cfg = good;
    cfg["num_attention_heads"] = 3;
    cfg["num_key_value_heads"] = 3;
    cfg.erase("head_dim");
    EXPECT_THROW(parse_llama_config(cfg.dump(), "c.json"), Error);
}

TEST(Generation, SamplingStopStringsAndEos) {
    test::TempDir dir;
    auto [m, tok] = converted_stories(dir);
    SamplingOptions o;
    o.max_new_tokens = 30;
    o.stop = {"Lily"};
    std::string streamed;
    auto r = generate(*m.model, *tok, kGoldenPrompt, o, [&](const std::string& s) { streamed += s; });
    EXPECT_EQ(r.finish_reason, "stop");
    EXPECT_EQ(r.text, ", there was a little girl named ");
    EXPECT_EQ(streamed, r.text);

    o.stop.clear();
    o.eos_ids = {426};  // first generated at step 11: ends it, and is not part of the text
    r = generate(*m.model, *tok, kGoldenPrompt, o);
    EXPECT_EQ(r.finish_reason, "eos");
    EXPECT_EQ(r.tokens.size(), 11u);
    EXPECT_EQ(r.tokens.back(), 426);
    auto runc = make_llama2c_tokenizer(read_llama2c_vocab(test::data_file("stories260K/tok512.bin"), 512));
    EXPECT_EQ(r.text, runc->decode(std::vector<int64_t>(kGoldenContinuation.begin(), kGoldenContinuation.begin() + 10)));

    // Sampling: a seed reproduces its run; top_k = 1 is greedy.
    SamplingOptions s;
    s.max_new_tokens = 20;
    s.temperature = 1.0;
    s.seed = 7;
    auto s1 = generate(*m.model, *tok, kGoldenPrompt, s), s2 = generate(*m.model, *tok, kGoldenPrompt, s);
    EXPECT_EQ(s1.tokens, s2.tokens);
    s.seed = 8;
    EXPECT_NE(generate(*m.model, *tok, kGoldenPrompt, s).tokens, s1.tokens);
    s.top_k = 1;
    EXPECT_EQ(generate(*m.model, *tok, kGoldenPrompt, s).tokens,
              std::vector<int64_t>(kGoldenContinuation.begin(), kGoldenContinuation.begin() + 20));
    s.top_k = 0;
    s.top_p = 1e-6;  // nucleus of one token
    EXPECT_EQ(generate(*m.model, *tok, kGoldenPrompt, s).tokens,
              std::vector<int64_t>(kGoldenContinuation.begin(), kGoldenContinuation.begin() + 20));
    // A vanishing temperature is greedy (it sampled the least likely token when logit / T overflowed);
    // NaN settings are errors, not silent sampling.
    s.top_p = 1;
    s.temperature = 1e-320;
    EXPECT_EQ(generate(*m.model, *tok, kGoldenPrompt, s).tokens,
              std::vector<int64_t>(kGoldenContinuation.begin(), kGoldenContinuation.begin() + 20));
    for (const auto& [t, p] : std::vector<std::pair<double, double>>{{std::nan(""), 1.0}, {1.0, std::nan("")}, {INFINITY, 1.0}}) {
        SamplingOptions bad;
        bad.temperature = t, bad.top_p = p;
        EXPECT_THROW(generate(*m.model, *tok, kGoldenPrompt, bad), Error) << t << " " << p;
    }
}

// The sample printed in karpathy/llama2.c doc/stories260K.md (commit
// 350e04fe35433e6d2941dce5a1f53308f87058eb, MIT): run.c, temperature 0, 256 steps.
TEST(Stories260KSample, EmptyPromptReproducesTheLlama2cDocSample) {
    test::TempDir dir;
    auto [m, tok] = converted_stories(dir);
    SamplingOptions o;
    o.max_new_tokens = 256;
    auto r = generate(*m.model, *tok, tok->encode("", true), o);
    EXPECT_EQ(r.text,
              "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she "
              "saw a big, red ball. She wanted to play with it, but it was too high.\n"
              "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I "
              "want to play with your ball, but I can't find it.\"\n"
              "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\n"
              "Lily didn't want to help her mom, so she said, \"I'm sorry, mom. I didn't know what to do.\" Her mom "
              "said, \"Don't worry, Lily. We can help you.");
}

namespace {

// A random HRA adapter (q_proj, v_proj; not the identity) for a model folder.
std::string random_hra_adapter(const std::string& model_dir, const std::string& out) {
    auto m = load_llama(model_dir);
    PeftModel pm(m.model.ptr(), llama_inject_options(m.config.model_type));
    AdapterConfig c;
    c.r = 4;
    c.set("init_weights", false);
    torch::manual_seed(11);
    pm.add_adapter("default", c);
    pm.save_adapter(out);
    return out;
}

}  // namespace

TEST(MergeModel, MergedFolderGivesTheAdaptedLogits) {
    test::TempDir dir;
    const std::string model = fixture("llama-family/qwen2-tiny");  // float32 weights
    const std::string adapter = random_hra_adapter(model, dir / "adapter");
    auto adapted = load_with_adapters(model, {adapter});
    auto base = load_llama(model);
    torch::NoGradGuard ng;
    auto ids = torch::tensor({5, 9, 11, 17, 23, 40, 2}, torch::kLong).unsqueeze(0);
    auto expected = adapted.base.model->forward(ids);
    EXPECT_GT(rel_err(base.model->forward(ids), expected), 1e-3);  // the adapter matters

    merge_model(model, {adapter}, dir / "merged", false);
    for (const char* f : {"config.json", "generation_config.json", "model.safetensors"})
        EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(dir / "merged") / f)) << f;
    auto merged = load_llama(dir / "merged");
    EXPECT_LT(rel_err(merged.model->forward(ids), expected), 1e-4);
    EXPECT_EQ(io::SafetensorsFile::open(dir / "merged/model.safetensors").info("model.norm.weight").dtype, "F32");
    // Tied embeddings stay tied: no lm_head.weight written.
    EXPECT_FALSE(io::SafetensorsFile::open(dir / "merged/model.safetensors").contains("lm_head.weight"));
    EXPECT_THROW(merge_model(model, {adapter}, dir / "merged", false), Error);  // non-empty output

    // Sharded output, and a bf16 model stays bf16.
    const std::string llama = fixture("llama-family/llama-tiny");
    const std::string adapter2 = random_hra_adapter(llama, dir / "adapter2");
    merge_model(llama, {adapter2}, dir / "merged2", false, /*max_shard_bytes=*/40000);
    EXPECT_TRUE(std::filesystem::exists(dir / "merged2/model.safetensors.index.json"));
    auto m2 = load_llama(dir / "merged2");
    auto a2 = load_with_adapters(llama, {adapter2});
    EXPECT_LT(rel_err(m2.model->forward(ids.clamp_max(96)), a2.base.model->forward(ids.clamp_max(96))), 5e-2);
    auto store = io::WeightStore::open(dir / "merged2");
    EXPECT_EQ(store.get("model.norm.weight").scalar_type(), torch::kBFloat16);
}
