// One training step (forward + backward: input gradient and adapter
// gradient, base weight frozen) of a single adapted Linear layer, for
//   frozen         the layer without adapter (the baseline of every row),
//   hra_wy         HRA, compact-WY path chosen automatically,
//   hra_reference  HRA, PEFT's loop (materialised H, then W·H),
//   lora           LoRA with the same r,
// at in = out ∈ {1024, 4096}, r ∈ {8, 32}, tokens ∈ {16, 512}. After the
// Google Benchmark output, a table compares each method with `frozen` and
// `lora` from the same run, and checks the targets at 4096/8/512 and, timed
// in pairs with the frozen layer, at 1024/16 tokens (issue 15; exit status 1
// when one is missed).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "report.h"
#include "smoke.h"
#include "adapters/hra.h"
#include "adapters/layers.h"
#include "adapters/lora.h"
#include "common/runtime.h"

namespace {

const char* const kMethods[] = {"frozen", "hra_wy", "hra_reference", "lora"};

struct Setup {
    hra::Linear layer{nullptr};
    torch::Tensor x, grad_out;
};

Setup make_setup(const std::string& method, int64_t in, int64_t out, int64_t r, int64_t tokens) {
    torch::manual_seed(0);
    Setup s;
    s.layer = hra::Linear(in, out);
    s.layer->weight.set_requires_grad(false);
    s.layer->bias.set_requires_grad(false);
    const auto opts = torch::TensorOptions().dtype(torch::kFloat);
    if (method == "hra_wy" || method == "hra_reference") {
        s.layer->add_adapter("default", std::make_shared<hra::HraAdapterImpl>(s.layer->shape(), r, false, false, opts));
        s.layer->strategy = method == "hra_wy" ? hra::MultiplyPath::Auto : hra::MultiplyPath::Reference;
    } else if (method == "lora") {
        hra::LoraOptions lo;
        lo.r = r;
        lo.lora_alpha = 2.0 * r;
        lo.init_lora_weights = false;
        s.layer->add_adapter("default", std::make_shared<hra::LoraAdapterImpl>(s.layer->shape(), lo, opts));
    }
    s.layer->set_active({"default"});
    s.x = torch::randn({tokens, in}).set_requires_grad(true);
    s.grad_out = torch::randn({tokens, out});
    return s;
}

void one_step(Setup& s) {
    s.x.mutable_grad() = torch::Tensor();
    for (auto& p : s.layer->parameters()) p.mutable_grad() = torch::Tensor();
    auto y = s.layer->forward(s.x);
    y.backward(s.grad_out);
    benchmark::DoNotOptimize(s.x.grad().data_ptr());
}

void adapter_step(benchmark::State& state, const std::string& method, int64_t in, int64_t out, int64_t r,
                  int64_t tokens) {
    Setup s = make_setup(method, in, out, r, tokens);
    for (auto _ : state) one_step(s);
    state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsIterationInvariantRate);
}

// The real time in ms of each benchmark (the median of its repetitions, or its single run),
// for the comparison table; the reporter shows those lines only.
std::map<std::string, double> g_ms;

hra::bench::Runs keep_medians(const hra::bench::Runs& runs) {
    hra::bench::Runs shown;
    for (const auto& run : runs) {
        if (run.error_occurred) {
            shown.push_back(run);
            continue;
        }
        const bool single = run.run_type == benchmark::BenchmarkReporter::Run::RT_Iteration && run.repetitions <= 1;
        const bool median = run.run_type == benchmark::BenchmarkReporter::Run::RT_Aggregate && run.aggregate_name == "median";
        if (!single && !median) continue;
        g_ms[run.run_name.function_name] = 1e3 * run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
        shown.push_back(run);
    }
    return shown;
}

// method / frozen for one shape, timed in pairs: each round times a block of `steps` steps
// of each layer back to back (which goes first alternates), and the ratio is the median of
// the rounds' ratios, so that the machine's slow spells (its own GEMM rate moved by up to
// 12% between runs) fall on both sides of a ratio. Returns {median, lowest, highest}.
std::tuple<double, double, double> paired_ratio(const std::string& method, int64_t d, int64_t r, int64_t tokens,
                                                int rounds, int steps) {
    Setup a = make_setup(method, d, d, r, tokens), f = make_setup("frozen", d, d, r, tokens);
    auto block_ms = [&](Setup& s) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < steps; ++i) one_step(s);
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    };
    block_ms(a), block_ms(f);  // warm-up
    std::vector<double> ratios;
    for (int k = 0; k < rounds; ++k) {
        double ta, tf;
        if (k % 2 == 0) {
            ta = block_ms(a);
            tf = block_ms(f);
        } else {
            tf = block_ms(f);
            ta = block_ms(a);
        }
        ratios.push_back(ta / tf);
    }
    std::sort(ratios.begin(), ratios.end());
    return {ratios[ratios.size() / 2], ratios.front(), ratios.back()};
}

std::string name_of(const std::string& method, int64_t d, int64_t r, int64_t tokens) {
    return "adapter_step/" + method + "/in:" + std::to_string(d) + "/out:" + std::to_string(d) + "/r:" +
           std::to_string(r) + "/tokens:" + std::to_string(tokens);
}

}  // namespace

int main(int argc, char** argv) {
    const bool smoke = hra::bench::take_smoke_flag(argc, argv);
    const auto info = hra::init_runtime(0);
    std::fprintf(stderr, "runtime: %s\n", hra::describe(info).c_str());
    std::vector<int64_t> sizes{1024, 4096}, ranks{8, 32}, token_counts{16, 512};
    if (smoke) sizes = {1024}, ranks = {8}, token_counts = {16};
    for (int64_t d : sizes)
        for (int64_t r : ranks)
            for (int64_t t : token_counts)
                for (const char* m : kMethods) {
                    const std::string method = m;
                    auto* b = benchmark::RegisterBenchmark(
                        name_of(method, d, r, t).c_str(), [=](benchmark::State& st) { adapter_step(st, method, d, d, r, t); });
                    b->Unit(benchmark::kMillisecond)->UseRealTime();
                    if (smoke) {
                        b->Iterations(1);
                    } else if (method == "hra_reference") {  // PEFT's loop is 10-100x slower: one short measurement is enough
                        b->MinWarmUpTime(0.1)->MinTime(0.2);
                    } else {
                        b->MinWarmUpTime(0.1)->MinTime(0.3)->Repetitions(5)->ReportAggregatesOnly(true);
                    }
                }
    // Repetitions of the methods are interleaved at random, so that a slow
    // spell of the machine does not land on one method only.
    std::vector<char*> args(argv, argv + argc);
    std::string interleave = "--benchmark_enable_random_interleaving=true";
    args.insert(args.begin() + 1, interleave.data());
    argc = static_cast<int>(args.size());
    argv = args.data();
    auto reporter = hra::bench::reporter_for(argc, argv, keep_medians);  // before Initialize takes the flags out
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks(reporter.get());

    // Comparison table (times in ms per step; ratios against the same run's rows).
    std::fprintf(stderr, "\nadapter step, forward+backward, ms (ratios: method / frozen, hra_wy / lora)\n");
    std::fprintf(stderr, "%5s %3s %6s | %9s %9s %9s %9s | %7s %7s %8s | %7s\n", "in=out", "r", "tokens", "frozen", "hra_wy",
                "lora", "hra_ref", "wy/froz", "wy/lora", "ref/froz", "ref/wy");
    for (int64_t d : sizes)
        for (int64_t r : ranks)
            for (int64_t t : token_counts) {
                auto get = [&](const char* m) {
                    auto it = g_ms.find(name_of(m, d, r, t));
                    return it == g_ms.end() ? -1.0 : it->second;
                };
                const double f = get("frozen"), w = get("hra_wy"), l = get("lora"), ref = get("hra_reference");
                if (f < 0 || w < 0 || l < 0) continue;
                std::fprintf(stderr, "%6lld %3lld %6lld | %9.3f %9.3f %9.3f %9.3f | %7.3f %7.3f %8.2f | %7.1f\n",
                            static_cast<long long>(d), static_cast<long long>(r), static_cast<long long>(t), f, w, l,
                            ref, w / f, w / l, ref > 0 ? ref / f : -1, ref > 0 ? ref / w : -1);
            }
    const double f = g_ms.count(name_of("frozen", 4096, 8, 512)) ? g_ms[name_of("frozen", 4096, 8, 512)] : -1;
    const double w = g_ms.count(name_of("hra_wy", 4096, 8, 512)) ? g_ms[name_of("hra_wy", 4096, 8, 512)] : -1;
    const double l = g_ms.count(name_of("lora", 4096, 8, 512)) ? g_ms[name_of("lora", 4096, 8, 512)] : -1;
    bool missed = false;
    std::fprintf(stderr, "\ntargets:\n");
    if (f > 0 && w > 0 && l > 0) {
        // Targets against baselines measured in this run. PEFT's own layer is a Python peer
        // (tools/peers): its figure is in the README with its command, never divided into here.
        std::fprintf(stderr, "  at in=out=4096, 512 tokens, r=8: hra_wy / frozen = %.3f  (target <= 1.10)  %s\n", w / f,
                     w / f <= 1.10 ? "met" : "MISSED");
        std::fprintf(stderr, "  at in=out=4096, 512 tokens, r=8: hra_wy / lora   = %.3f  (target <= 1.20)  %s\n", w / l,
                     w / l <= 1.20 ? "met" : "MISSED");
        missed = w / f > 1.10 || w / l > 1.20;
    }
    // The small layer (issue 15), a step of well under a millisecond, where the table's ratio
    // of two medians taken at different moments moved by 0.2 between runs: the verdict uses
    // the paired ratio (paired_ratio: 9 rounds of 300 steps, about 0.3 s per block).
    // HRA's own multiply-adds, 2·d·r² (U'U and its backward) plus 6·tokens·d·r (three skinny
    // products each way), against the frozen layer's 2·tokens·d², are the floor of
    // hra_wy / frozen at equal GEMM efficiency.
    for (int64_t r : {int64_t{8}, int64_t{32}}) {
        if (smoke) continue;  // one iteration times nothing
        const auto [ratio, lo, hi] = paired_ratio("hra_wy", 1024, r, 16, 9, 300);
        const double d = 1024, t = 16, floor = 1 + (2 * d * r * r + 6 * t * d * r) / (2 * t * d * d);
        std::fprintf(stderr, "  at in=out=1024, 16 tokens, r=%lld: hra_wy / frozen = %.3f paired (rounds %.3f-%.3f)  ",
                     static_cast<long long>(r), ratio, lo, hi);
        if (floor <= 1.15) {
            std::fprintf(stderr, "(target <= 1.15)  %s\n", ratio <= 1.15 ? "met" : "MISSED");
            missed = missed || ratio > 1.15;
        } else {
            std::fprintf(stderr, "(target 1.15 unreachable: HRA's own multiply-adds at the frozen layer's rate make %.3f)\n",
                         floor);
        }
    }
    return missed ? 1 : 0;
}
