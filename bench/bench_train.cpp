// Training speed: tokens/s, GEMM efficiency and peak memory of one optimizer step
// (forward, backward, AdamW) for the real stories260K and a random-weight
// ~50M-parameter LLaMA (dim 512, 8 layers, vocab 32000), batch 4 x 256 tokens:
//   frozen  the model alone, forward + input-gradient backward (the baseline),
//   hra     HRA r=8 on q_proj and v_proj,
//   lora    LoRA r=8 on q_proj and v_proj,
// in one run. "GEMM eff" counts matrix FLOPs (4N for frozen weights, attention,
// adapters) against the matmul rate this machine measured at start-up (not the
// hardware's peak, so not MFU).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "report.h"
#include "smoke.h"
#include "adapters/peft_model.h"
#include "common/runtime.h"
#include "models/llama2c.h"
#include "models/llama_loader.h"
#include "train/optim.h"
#include "train/engine.h"

namespace {

constexpr int64_t kBatch = 4, kLen = 256;
std::string g_tmp;
double g_rate = 0;
struct Row {
    double tokens_per_s = 0, gemm_eff = 0, peak_mb = 0;
    int64_t trainable = 0, total = 0;
};
std::map<std::string, Row> g_rows;

// Resident set size high-water mark, which /proc/self/clear_refs resets.
double hwm_mb() {
    std::ifstream s("/proc/self/status");
    std::string line;
    while (std::getline(s, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return 0;
}
void reset_hwm() { std::ofstream("/proc/self/clear_refs") << "5"; }

hra::LlamaForCausalLM make_model(const std::string& name) {
    if (name == "stories260K") return hra::load_llama(g_tmp + "/stories260K").model;
    const std::string cfg = R"({"model_type": "llama", "hidden_size": 512, "intermediate_size": 1536,
      "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000,
      "max_position_embeddings": 1024})";
    torch::manual_seed(0);
    hra::SkipInitGuard skip;  // random values are fine for timing: normal_ is enough
    hra::LlamaForCausalLM m(hra::parse_llama_config(cfg, "bench"));
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.normal_(0, 0.02);
    return m;
}

void train_step(benchmark::State& state, const std::string& model_name, const std::string& method) {
    auto model = make_model(model_name);
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    hra::PeftModel peft(model.ptr(), hra::llama_inject_options("llama"));
    double adapter_flops = 0;
    if (method != "frozen") {
        auto c = hra::AdapterConfig::of(method);
        c.r = 8;
        c.set(method == "hra" ? "init_weights" : "init_lora_weights", false);
        c.target_modules = hra::ModuleSelector::of({"q_proj", "v_proj"});
        peft.add_adapter("default", c);
        for (const auto& [k, l] : peft.adaptable_layers())
            if (l->has_adapter("default")) adapter_flops += 3 * 2 * l->adapter("default")->row_cost();
    }
    model->train();
    const auto& cfg = model->config();
    double n = 0;
    for (const auto& [k, l] : peft.adaptable_layers()) n += static_cast<double>(l->weight.numel());
    const double flops_per_token = 4 * n + 3 * 4 * kLen * static_cast<double>(cfg.q_dim() * cfg.num_hidden_layers) + adapter_flops;
    torch::manual_seed(1);
    auto ids = torch::randint(3, cfg.vocab_size, {kBatch, kLen}, torch::kLong);
    auto params = peft.trainable_parameters();
    hra::AdamW opt(params, {});
    reset_hwm();
    for (auto _ : state) {
        hra::LlamaInputs in;
        // Frozen: nothing to train, so the gradient goes to the embeddings' output,
        // which takes the input-gradient backward through every layer.
        in.inputs_embeds = model->model->embed_tokens(ids).detach().set_requires_grad(method == "frozen");
        auto loss = hra::causal_lm_loss(model->forward(in).logits, ids);
        loss.backward();
        if (method != "frozen") {
            opt.step(1e-4);
            opt.zero_grad();
        }
        benchmark::DoNotOptimize(loss.data_ptr());
    }
    Row row;
    row.tokens_per_s = static_cast<double>(kBatch * kLen);  // per iteration; the rate is applied below
    row.peak_mb = hwm_mb();
    row.trainable = peft.trainable_parameter_count();
    row.total = peft.parameter_count();
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kBatch * kLen), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_MB"] = row.peak_mb;
    state.counters["flops/token"] = flops_per_token;
    g_rows[model_name + "/" + method] = row;
}

}  // namespace

int main(int argc, char** argv) {
    const bool smoke = hra::bench::take_smoke_flag(argc, argv);
    const auto info = hra::init_runtime(0);
    std::fprintf(stderr, "runtime: %s\n", hra::describe(info).c_str());
    char tmpl[] = "/tmp/hra-bench-XXXXXX";
    g_tmp = mkdtemp(tmpl);
    const std::string data = HRA_DATA_DIR;
    hra::convert_llama2c(data + "/stories260K/stories260K.bin", data + "/stories260K/tok512.bin", g_tmp + "/stories260K", false);
    g_rate = hra::matmul_rate(torch::kFloat, "cpu", 1024, smoke ? 0.0 : 1.0);
    std::fprintf(stderr, "matmul rate: %.1f GFLOP/s (float32, median of 1024^3 products over %s)\n", g_rate / 1e9, smoke ? "7" : "1 s");
    for (const char* m : {"stories260K", "llama50M"})
        for (const char* method : {"frozen", "hra", "lora"}) {
            const std::string model = m, meth = method;
            if (smoke && model != "stories260K") continue;
            auto* b = benchmark::RegisterBenchmark(("train_step/" + model + "/" + meth).c_str(),
                                                   [model, meth](benchmark::State& s) { train_step(s, model, meth); })
                          ->Unit(benchmark::kMillisecond)
                          ->UseRealTime();
            if (smoke)
                b->Iterations(1);
            else
                b->MinWarmUpTime(model == "stories260K" ? 0.3 : 2.0)->MinTime(model == "stories260K" ? 1.0 : 4.0);
        }
    // Before Initialize, which takes the --benchmark_* flags out of argv.
    auto reporter = hra::bench::reporter_for(argc, argv, [](const hra::bench::Runs& runs) {
        for (const auto& r : runs) {
            if (r.error_occurred) continue;
            auto name = r.run_name.function_name;
            name = name.substr(name.find('/') + 1);
            auto& row = g_rows[name];
            row.tokens_per_s = r.counters.at("tokens/s");
            row.gemm_eff = row.tokens_per_s * r.counters.at("flops/token") / g_rate;
        }
        return runs;
    });
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks(reporter.get());
    std::fprintf(stderr, "\ntraining step, batch %lld x %lld tokens (adapters r=8 on q_proj, v_proj)\n", static_cast<long long>(kBatch),
                static_cast<long long>(kLen));
    std::fprintf(stderr, "%-12s %-7s %12s %10s %8s %9s %10s %9s\n", "model", "method", "trainable", "tokens/s", "GEMM eff", "peak MB",
                "vs frozen", "vs LoRA");
    for (const char* m : {"stories260K", "llama50M"})
        for (const char* method : {"frozen", "hra", "lora"}) {
            const std::string key = std::string(m) + "/" + method;
            if (!g_rows.count(key) || g_rows[key].gemm_eff == 0) continue;
            const auto& r = g_rows[key];
            const double frozen = g_rows[std::string(m) + "/frozen"].tokens_per_s;
            const double lora = g_rows[std::string(m) + "/lora"].tokens_per_s;
            std::fprintf(stderr, "%-12s %-7s %12lld %10.0f %7.1f%% %9.0f %9.2fx %8.2fx\n", m, method, static_cast<long long>(r.trainable),
                        r.tokens_per_s, 100 * r.gemm_eff, r.peak_mb, frozen > 0 ? r.tokens_per_s / frozen : 0,
                        lora > 0 ? r.tokens_per_s / lora : 0);
        }
    std::fprintf(stderr, "GEMM eff: the step's matrix FLOP/s over the float32 GEMM rate this machine measured at start-up\n"
                "(%.1f GFLOP/s, median over 1 s), not over the hardware's peak\n", g_rate / 1e9);
    std::error_code ec;
    std::filesystem::remove_all(g_tmp, ec);
    return 0;
}
