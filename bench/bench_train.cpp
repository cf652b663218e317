// Training speed: tokens/s, GEMM efficiency and peak memory of one optimizer step
// (forward, backward, AdamW) for the real stories260K and random-weight LLaMAs
// (llama50M: dim 512, 8 layers, FFN 1536; d2048: dim 2048, 4 layers, FFN 5632;
// vocab 32000), batch 4 x 256 tokens:
//   frozen  the model alone, forward + input-gradient backward (the baseline),
//   hra     HRA r=8 on q_proj and v_proj,
//   lora    LoRA r=8 on q_proj and v_proj,
// in one run: 5 repetitions after a warm-up, medians and their coefficient of
// variation. "GEMM eff" counts matrix FLOPs (4N for frozen weights, attention,
// adapters) against the matmul rate this machine measured at start-up (not the
// hardware's peak, so not MFU).
//
// The peer, afterwards in the same run: the same models in eager PyTorch with
// PEFT's own HRALinear or a LoRA (../shared/tools/peers/py_llama_peer.py on
// Debian's python3-torch, PEFT's snapshot in HRA_PEFT_GIT), mean of 5 steps after
// one. Targets (issue 15; exit status 1 when one is missed): hra LoRA >= 1.0x the
// peer's LoRA, hra HRA >= 0.97x hra LoRA and >= 1.1x the peer's HRA at dim 512,
// >= 2x the peer's HRA at dim 2048, every step time's CV <= 3%.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "report.h"
#include "smoke.h"
#include "adapters/peft_model.h"
#include "common/allocator.h"
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
    double tokens_per_s = 0, gemm_eff = 0, peak_mb = 0, cv = 0, peer = 0, flops_per_token = 0;
    int64_t trainable = 0, total = 0;
    std::vector<double> reps;  // tokens/s of each repetition
};
struct Shape {
    int64_t dim, layers, heads, ffn;
};
const std::map<std::string, Shape> kShapes = {{"llama50M", {512, 8, 8, 1536}}, {"d2048", {2048, 4, 16, 5632}}};
std::map<std::string, Row> g_rows;

// Resident set size high-water mark, which /proc/self/clear_refs resets (to the current
// resident size).
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
    const Shape& sh = kShapes.at(name);
    const nlohmann::json cfg = {{"model_type", "llama"},        {"hidden_size", sh.dim},          {"intermediate_size", sh.ffn},
                                {"num_hidden_layers", sh.layers}, {"num_attention_heads", sh.heads}, {"num_key_value_heads", sh.heads},
                                {"vocab_size", 32000},           {"max_position_embeddings", 1024}};
    torch::manual_seed(0);
    hra::SkipInitGuard skip;  // random values are fine for timing: normal_ is enough
    hra::LlamaForCausalLM m(hra::parse_llama_config(cfg.dump(), "bench"));
    torch::NoGradGuard ng;
    for (auto& p : m->parameters()) p.normal_(0, 0.02);
    return m;
}

// One model with its adapters and optimizer, kept across Google Benchmark's calls for
// the same case (warm-up, repetitions), so that every repetition times warm steps.
struct Setup {
    std::string key;
    hra::LlamaForCausalLM model{nullptr};
    std::unique_ptr<hra::PeftModel> peft;
    std::unique_ptr<hra::AdamW> opt;
    torch::Tensor ids;
    double flops_per_token = 0;
};
std::unique_ptr<Setup> g_setup;

void one_step(Setup& s, const std::string& method) {
    hra::LlamaInputs in;
    // Frozen: nothing to train, so the gradient goes to the embeddings' output,
    // which takes the input-gradient backward through every layer.
    in.inputs_embeds = s.model->model->embed_tokens(s.ids).detach().set_requires_grad(method == "frozen");
    auto loss = hra::causal_lm_loss(s.model->forward(in).logits, s.ids);
    loss.backward();
    if (method != "frozen") {
        s.opt->step(1e-4);
        s.opt->zero_grad();
    }
    benchmark::DoNotOptimize(loss.data_ptr());
}

Setup& setup_for(const std::string& model_name, const std::string& method) {
    const std::string key = model_name + "/" + method;
    if (g_setup && g_setup->key == key) return *g_setup;
    g_setup.reset();  // the previous case's memory first
    // Freed pages that jemalloc keeps would count in this case's peak: back to the kernel
    // once per case, before its warm-up. Not before each repetition: the first step after
    // a purge faults every page in again, which made a d2048 step 8.1 s instead of 6.65 s.
    hra::release_free_memory();
    auto s = std::make_unique<Setup>();
    s->key = key;
    s->model = make_model(model_name);
    for (auto& p : s->model->parameters()) p.set_requires_grad(false);
    s->peft = std::make_unique<hra::PeftModel>(s->model.ptr(), hra::llama_inject_options("llama"));
    double adapter_flops = 0;
    if (method != "frozen") {
        auto c = hra::AdapterConfig::of(method);
        c.r = 8;
        c.set(method == "hra" ? "init_weights" : "init_lora_weights", false);
        c.target_modules = hra::ModuleSelector::of({"q_proj", "v_proj"});
        s->peft->add_adapter("default", c);
        for (const auto& [k, l] : s->peft->adaptable_layers())
            if (l->has_adapter("default")) adapter_flops += 3 * 2 * l->adapter("default")->row_cost();
    }
    s->model->train();
    const auto& cfg = s->model->config();
    double n = 0;
    for (const auto& [k, l] : s->peft->adaptable_layers()) n += static_cast<double>(l->weight.numel());
    s->flops_per_token = 4 * n + 3 * 4 * kLen * static_cast<double>(cfg.q_dim() * cfg.num_hidden_layers) + adapter_flops;
    torch::manual_seed(1);
    s->ids = torch::randint(3, cfg.vocab_size, {kBatch, kLen}, torch::kLong);
    s->opt = std::make_unique<hra::AdamW>(s->peft->trainable_parameters(), hra::AdamWOptions{});
    // The warm-up: the first steps allocate the optimizer's state and the allocator's pages.
    for (int i = 0; i < 2; ++i) one_step(*s, method);
    g_setup = std::move(s);
    return *g_setup;
}

void train_step(benchmark::State& state, const std::string& model_name, const std::string& method) {
    auto& s = setup_for(model_name, method);
    reset_hwm();
    for (auto _ : state) one_step(s, method);
    Row& row = g_rows[model_name + "/" + method];
    row.peak_mb = std::max(row.peak_mb, hwm_mb());
    row.trainable = s.peft->trainable_parameter_count();
    row.total = s.peft->parameter_count();
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kBatch * kLen), benchmark::Counter::kIsIterationInvariantRate);
    state.counters["peak_MB"] = row.peak_mb;
    state.counters["flops/token"] = s.flops_per_token;
}

// The peer's tokens/s for one case, or 0 when it cannot run here (the command is printed).
double run_peer(const std::string& model_name, const std::string& method) {
    const char* git = std::getenv("HRA_PEFT_GIT");
    const std::string repo = git && *git ? git : "/work/.mirror/huggingface+peft/repo";
    const std::string script = std::string(HRA_SHARED_DIR) + "/tools/peers/py_llama_peer.py";
    const Shape& sh = kShapes.at(model_name);
    const std::string cmd = "/usr/bin/python3 " + script + " " + repo + " --dim " + std::to_string(sh.dim) + " --layers " +
                            std::to_string(sh.layers) + " --heads " + std::to_string(sh.heads) + " --kv " + std::to_string(sh.heads) +
                            " --ffn " + std::to_string(sh.ffn) + " --vocab 32000 --seq " + std::to_string(kLen) + " --batch " +
                            std::to_string(kBatch) + " --r 8 --method " + method + " --steps 5";
    if (access(repo.c_str(), R_OK) != 0 || access(script.c_str(), R_OK) != 0 || access("/usr/bin/python3", X_OK) != 0) {
        std::fprintf(stderr, "peer not run (needs python3-torch and PEFT's git snapshot in HRA_PEFT_GIT); it would be:\n  %s\n",
                     cmd.c_str());
        return 0;
    }
    FILE* p = popen((cmd + " 2>/dev/null").c_str(), "r");
    if (!p) return 0;
    std::string out;
    char buf[4096];
    while (fgets(buf, sizeof buf, p)) out += buf;
    if (pclose(p) != 0) {
        std::fprintf(stderr, "peer failed: %s\n", cmd.c_str());
        return 0;
    }
    const auto at = out.rfind('{');
    const auto j = nlohmann::json::parse(at == std::string::npos ? "" : out.substr(at), nullptr, false);
    return j.is_object() && j.contains("tokens_per_s") ? j["tokens_per_s"].get<double>() : 0;
}

// This machine's own variation: the rate of 1024^3 float products in 5 blocks of
// `seconds` each, as a coefficient of variation (a shared VM's neighbours move it).
double cv(const std::vector<double>& v);
double gemm_noise(double seconds) {
    auto a = torch::randn({1024, 1024}), b = torch::randn({1024, 1024});
    for (int i = 0; i < 3; ++i) benchmark::DoNotOptimize(torch::mm(a, b).data_ptr());
    std::vector<double> rates;
    for (int block = 0; block < 5; ++block) {
        const auto t0 = std::chrono::steady_clock::now();
        int n = 0;
        double dt = 0;
        do {
            benchmark::DoNotOptimize(torch::mm(a, b).data_ptr());
            ++n;
            dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        } while (dt < seconds);
        rates.push_back(n / dt);
    }
    return cv(rates);
}

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

double cv(const std::vector<double>& v) {
    if (v.size() < 2) return 0;
    double mean = 0, var = 0;
    for (double x : v) mean += x / static_cast<double>(v.size());
    for (double x : v) var += (x - mean) * (x - mean) / static_cast<double>(v.size() - 1);
    return std::sqrt(var) / mean;
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
    const double noise_before = smoke ? 0 : gemm_noise(2.0);
    const std::vector<std::string> models = {"stories260K", "llama50M", "d2048"};
    const std::vector<std::string> methods = {"frozen", "hra", "lora"};
    for (const auto& model : models)
        for (const auto& meth : methods) {
            if (smoke && model != "stories260K") continue;
            auto* b = benchmark::RegisterBenchmark(("train_step/" + model + "/" + meth).c_str(),
                                                   [model, meth](benchmark::State& s) { train_step(s, model, meth); })
                          ->Unit(benchmark::kMillisecond)
                          ->UseRealTime();
            if (smoke)
                b->Iterations(1);
            else if (model == "stories260K")
                b->MinTime(0.5)->Repetitions(5);
            else
                b->Iterations(model == "d2048" ? 1 : 3)->Repetitions(5);
        }
    // Before Initialize, which takes the --benchmark_* flags out of argv.
    auto reporter = hra::bench::reporter_for(argc, argv, [](const hra::bench::Runs& runs) {
        for (const auto& r : runs) {
            if (r.error_occurred || r.run_type != benchmark::BenchmarkReporter::Run::RT_Iteration) continue;
            auto name = r.run_name.function_name;
            name = name.substr(name.find('/') + 1);
            auto& row = g_rows[name];
            row.reps.push_back(r.counters.at("tokens/s"));
            row.tokens_per_s = median(row.reps);
            row.cv = cv(row.reps);
            row.flops_per_token = r.counters.at("flops/token");
            row.gemm_eff = row.tokens_per_s * row.flops_per_token / g_rate;
        }
        return runs;
    });
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks(reporter.get());
    g_setup.reset();
    const double noise = smoke ? 0 : std::max(noise_before, gemm_noise(2.0));
    // The peer, after every hra case (never two timings at once).
    if (!smoke)
        for (const auto& model : models)
            for (const auto& meth : methods)
                if (kShapes.count(model) && g_rows.count(model + "/" + meth)) g_rows[model + "/" + meth].peer = run_peer(model, meth);

    std::fprintf(stderr, "\ntraining step, batch %lld x %lld tokens (adapters r=8 on q_proj, v_proj); medians of %s\n",
                 static_cast<long long>(kBatch), static_cast<long long>(kLen), smoke ? "1 (smoke)" : "5 repetitions");
    std::fprintf(stderr, "%-12s %-7s %10s %10s %6s %8s %8s %9s %8s %10s %8s\n", "model", "method", "trainable", "tokens/s", "CV",
                 "GEMM eff", "peak MB", "vs frozen", "vs LoRA", "peer tok/s", "vs peer");
    for (const auto& m : models)
        for (const auto& method : methods) {
            const std::string key = m + "/" + method;
            if (!g_rows.count(key) || g_rows[key].tokens_per_s == 0) continue;
            const auto& r = g_rows[key];
            const double frozen = g_rows.count(m + "/frozen") ? g_rows[m + "/frozen"].tokens_per_s : 0;
            const double lora = g_rows.count(m + "/lora") ? g_rows[m + "/lora"].tokens_per_s : 0;
            std::fprintf(stderr, "%-12s %-7s %10lld %10.0f %5.1f%% %7.1f%% %8.0f %8.2fx %7.2fx %10.0f %7.2fx\n", m.c_str(),
                         method.c_str(), static_cast<long long>(r.trainable), r.tokens_per_s, 100 * r.cv, 100 * r.gemm_eff, r.peak_mb,
                         frozen > 0 ? r.tokens_per_s / frozen : 0, lora > 0 ? r.tokens_per_s / lora : 0, r.peer,
                         r.peer > 0 ? r.tokens_per_s / r.peer : 0);
        }
    std::fprintf(stderr, "GEMM eff: the step's matrix FLOP/s over the float32 GEMM rate this machine measured at start-up\n"
                         "(%.1f GFLOP/s, median over 1 s), not over the hardware's peak. Peer: PyTorch eager + PEFT, mean of 5\n"
                         "steps after one (py_llama_peer.py). %s\n",
                 g_rate / 1e9, hra::describe(info).c_str());
    bool missed = false;
    if (!smoke) {
        std::fprintf(stderr, "\ntargets:\n");
        auto target = [&](const std::string& what, double value, double at_least) {
            if (value <= 0) {
                std::fprintf(stderr, "  %-40s not measured\n", what.c_str());
                return;
            }
            const bool met = value >= at_least;
            missed = missed || !met;
            std::fprintf(stderr, "  %-40s %6.3f  (target >= %.2f)  %s\n", what.c_str(), value, at_least, met ? "met" : "MISSED");
        };
        auto tps = [&](const std::string& key) { return g_rows.count(key) ? g_rows[key].tokens_per_s : 0.0; };
        auto peer = [&](const std::string& key) { return g_rows.count(key) ? g_rows[key].peer : 0.0; };
        auto ratio = [](double a, double b) { return a > 0 && b > 0 ? a / b : 0.0; };
        target("llama50M lora / peer lora", ratio(tps("llama50M/lora"), peer("llama50M/lora")), 1.0);
        target("llama50M hra / hra lora", ratio(tps("llama50M/hra"), tps("llama50M/lora")), 0.97);
        target("llama50M hra / peer hra (PEFT)", ratio(tps("llama50M/hra"), peer("llama50M/hra")), 1.1);
        target("d2048 hra / peer hra (PEFT)", ratio(tps("d2048/hra"), peer("d2048/hra")), 2.0);
        if (g_rows.count("d2048/hra") && peer("d2048/hra") > 0)
            std::fprintf(stderr, "    (d2048 hra at 100%% GEMM eff would be %.0f tokens/s: %.2fx the peer)\n",
                         g_rate / g_rows["d2048/hra"].flops_per_token, g_rate / g_rows["d2048/hra"].flops_per_token / peer("d2048/hra"));
        // A step cannot vary less than the machine under it: with the GEMM loop's own CV above 3%,
        // the CV target is reported but cannot be decided here and does not fail the run.
        const bool decidable = noise <= 0.03;
        std::fprintf(stderr, "  this machine's 1024^3 GEMM rate over 5 blocks of 2 s (before and after the cases, larger): CV %.1f%%%s\n",
                     100 * noise, decidable ? "" : ": the CV targets below cannot be decided on this machine now");
        for (const auto& [key, r] : g_rows)
            if (r.reps.size() >= 5 && kShapes.count(key.substr(0, key.find('/')))) {
                const bool met = r.cv <= 0.03;
                if (decidable) missed = missed || !met;
                std::fprintf(stderr, "  %-40s %5.1f%%  (target <= 3%%)  %s\n", ("CV of " + key).c_str(), 100 * r.cv,
                             met ? "met" : decidable ? "MISSED" : "above 3%, machine noise above 3%");
            }
    }
    std::error_code ec;
    std::filesystem::remove_all(g_tmp, ec);
    return missed ? 1 : 0;
}
