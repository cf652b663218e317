// Generation speed: prompt processing (prefill) and decoding, for the real
// stories260K model (converted from the repo's llama2.c files) and a random
// ~100M-parameter LLaMA config written here as an HF folder. Decoding with the
// KV cache is compared with the same decoding recomputing the whole sequence
// at every step (the baseline), in the same run.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "report.h"
#include "smoke.h"
#include "common/runtime.h"
#include "io/atomic_file.h"
#include "models/llama2c.h"
#include "models/llama_loader.h"
#include "models/pipeline.h"

namespace {

namespace fs = std::filesystem;

struct Model {
    std::string name;
    hra::LoadedModel loaded;
};
std::map<std::string, Model> g_models;
std::map<std::string, double> g_tokens_per_s;

constexpr int64_t kPrompt = 128;  // prompt tokens
constexpr int64_t kDecode = 32;   // tokens decoded per measured iteration

torch::Tensor prompt_ids(int64_t vocab) {
    torch::manual_seed(0);
    return torch::randint(3, vocab, {1, kPrompt}, torch::kLong);
}

void prefill(benchmark::State& state, const std::string& name) {
    auto& m = *g_models.at(name).loaded.model;
    auto ids = prompt_ids(m.config().vocab_size);
    torch::NoGradGuard ng;
    for (auto _ : state) {
        hra::KVCache cache;
        hra::LlamaInputs in;
        in.input_ids = ids;
        in.cache = &cache;
        in.last_position_only = true;
        benchmark::DoNotOptimize(m.forward(in).logits.data_ptr());
    }
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kPrompt), benchmark::Counter::kIsIterationInvariantRate);
}

// kDecode greedy steps after the prompt, with the cache or recomputing everything.
void decode(benchmark::State& state, const std::string& name, bool cached) {
    auto& m = *g_models.at(name).loaded.model;
    auto ids = prompt_ids(m.config().vocab_size);
    torch::NoGradGuard ng;
    for (auto _ : state) {
        state.PauseTiming();
        hra::KVCache cache;
        hra::LlamaInputs in;
        in.input_ids = ids;
        in.cache = cached ? &cache : nullptr;
        in.last_position_only = true;
        auto next = m.forward(in).logits.view({-1}).argmax().view({1, 1});
        auto seq = torch::cat({ids, next}, 1);
        state.ResumeTiming();
        for (int64_t i = 0; i < kDecode; ++i) {
            in.input_ids = cached ? next : seq;
            next = m.forward(in).logits.view({-1}).argmax().view({1, 1});
            if (!cached) seq = torch::cat({seq, next}, 1);
        }
        benchmark::DoNotOptimize(next.data_ptr());
    }
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kDecode), benchmark::Counter::kIsIterationInvariantRate);
}

// A random-weight LLaMA of about 100M parameters, as an HF folder.
std::string write_random_llama(const std::string& dir) {
    const std::string config = R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 768,
  "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 4,
  "vocab_size": 32000, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
  "tie_word_embeddings": false, "torch_dtype": "float32"})";
    fs::create_directories(dir);
    hra::io::write_file_atomically(dir + "/config.json", config);
    torch::manual_seed(0);
    hra::LlamaForCausalLM m(hra::parse_llama_config(config, "config.json"));
    hra::save_model_weights(dir, hra::llama_state_dict(*m, torch::kFloat), 5'000'000'000ull);
    return dir;
}

}  // namespace

int main(int argc, char** argv) {
    const bool smoke = hra::bench::take_smoke_flag(argc, argv);
    const auto info = hra::init_runtime(0);
    std::fprintf(stderr, "runtime: %s\n", hra::describe(info).c_str());
    char tmpl[] = "/tmp/hra-bench-XXXXXX";
    const std::string tmp = mkdtemp(tmpl);
    const std::string data = HRA_DATA_DIR;
    hra::convert_llama2c(data + "/stories260K/stories260K.bin", data + "/stories260K/tok512.bin",
                         tmp + "/stories260K", false);
    g_models["stories260K"] = {"stories260K", hra::load_llama(tmp + "/stories260K")};
    if (!smoke) g_models["llama100M"] = {"llama100M", hra::load_llama(write_random_llama(tmp + "/llama100M"))};
    for (auto& [name, m] : g_models) {
        int64_t n = 0;
        for (auto& [k, p] : hra::unique_named_parameters(*m.loaded.model)) n += p.numel();
        std::fprintf(stderr, "%s: %.2fM parameters, float32\n", name.c_str(), n / 1e6);
    }
    for (const auto& [name, m] : g_models) {
        const std::string n = name;
        auto time = [smoke](benchmark::internal::Benchmark* b, double seconds) {
            b->Unit(benchmark::kMillisecond)->UseRealTime();
            if (smoke)
                b->Iterations(1);
            else
                b->MinTime(seconds);
        };
        time(benchmark::RegisterBenchmark(("prefill/" + n + "/tokens:128").c_str(), [n](benchmark::State& s) { prefill(s, n); }), 0.5);
        time(benchmark::RegisterBenchmark(("decode/" + n + "/kv_cache").c_str(), [n](benchmark::State& s) { decode(s, n, true); }), 0.5);
        time(benchmark::RegisterBenchmark(("decode/" + n + "/recompute").c_str(), [n](benchmark::State& s) { decode(s, n, false); }), 0.2);
    }
    // Before Initialize, which takes the --benchmark_* flags out of argv.
    auto reporter = hra::bench::reporter_for(argc, argv, [](const hra::bench::Runs& runs) {
        for (const auto& r : runs)
            if (!r.error_occurred && r.counters.count("tokens/s")) g_tokens_per_s[r.run_name.function_name] = r.counters.at("tokens/s");
        return runs;
    });
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks(reporter.get());
    std::fprintf(stderr, "\ngeneration, tokens/s (prompt %lld tokens, then %lld greedy steps)\n", static_cast<long long>(kPrompt),
                static_cast<long long>(kDecode));
    std::fprintf(stderr, "%-12s %10s %12s %14s %9s\n", "model", "prefill", "decode+cache", "decode,recompute", "speedup");
    for (const auto& [name, m] : g_models) {
        auto get = [&](const std::string& k) { return g_tokens_per_s.count(k) ? g_tokens_per_s[k] : 0.0; };
        const double p = get("prefill/" + name + "/tokens:128"), c = get("decode/" + name + "/kv_cache"),
                     r = get("decode/" + name + "/recompute");
        std::fprintf(stderr, "%-12s %10.1f %12.1f %16.1f %8.1fx\n", name.c_str(), p, c, r, r > 0 ? c / r : 0.0);
    }
    std::error_code ec;
    fs::remove_all(tmp, ec);
    return 0;
}
