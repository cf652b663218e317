// GLUE-style training speed of DeBERTa-v3 classifiers: examples/s of one
// optimizer step (forward, backward, AdamW) with random weights, for
//   frozen  the model alone, with the gradient taken down to the embedding
//           LayerNorm so that backward crosses every layer (the baseline),
//   hra     HRA r=8 on the paper's targets (q/k/v, attention output,
//           intermediate, output dense) plus pooler and classifier,
//   lora    LoRA r=8 on the same targets plus pooler and classifier,
// in one run (medians of 3 repetitions), for deberta-v3-base's shape (batch 8 x 128 tokens, a few
// steps; one step takes seconds on 2 cores) and the NLU demo's tiny model
// (batch 32 x 64 tokens).
#include <unistd.h>

#include <cstdio>
#include <map>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include "report.h"
#include "smoke.h"
#include "adapters/peft_model.h"
#include "common/runtime.h"
#include "models/deberta.h"
#include "train/tasks/glue.h"
#include "train/optim.h"

namespace {

struct Shape {
    const char* name;
    const char* config;
    int64_t batch, len;
};

const Shape kShapes[] = {
    {"base",
     R"({"model_type": "deberta-v2", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
         "intermediate_size": 3072, "vocab_size": 128100, "relative_attention": true, "position_buckets": 256,
         "norm_rel_ebd": "layer_norm", "share_att_key": true, "pos_att_type": "p2c|c2p", "position_biased_input": false,
         "max_relative_positions": -1, "num_labels": 2})",
     8, 128},
    {"tiny",
     R"({"model_type": "deberta-v2", "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
         "intermediate_size": 512, "vocab_size": 2000, "relative_attention": true, "position_buckets": 64,
         "norm_rel_ebd": "layer_norm", "share_att_key": true, "pos_att_type": "p2c|c2p", "position_biased_input": false,
         "max_relative_positions": -1, "num_labels": 2})",
     32, 64},
};

std::map<std::string, double> g_rate;  // "shape/method" -> examples/s
std::map<std::string, int64_t> g_trainable;

void train_step(benchmark::State& state, const Shape& shape, const std::string& method) {
    auto cfg = hra::parse_deberta_config(shape.config, shape.name);
    torch::manual_seed(0);
    std::shared_ptr<hra::DebertaForSequenceClassificationImpl> model;
    {
        hra::SkipInitGuard skip;
        model = std::make_shared<hra::DebertaForSequenceClassificationImpl>(cfg);
        torch::NoGradGuard ng;
        for (auto& p : model->parameters()) p.normal_(0, 0.02);
    }
    for (auto& p : model->parameters()) p.set_requires_grad(false);
    hra::PeftModel peft(model, hra::glue::classifier_inject_options());
    std::vector<torch::Tensor> params;
    if (method == "frozen") {
        model->deberta->embeddings->LayerNorm->weight.set_requires_grad(true);
    } else {
        auto c = hra::AdapterConfig::of(method);
        c.r = 8;
        c.set(method == "hra" ? "init_weights" : "init_lora_weights", false);
        c.target_modules = hra::ModuleSelector::regex(hra::kGlueTargetRegex);
        c.modules_to_save = std::vector<std::string>{"pooler", "classifier"};
        peft.add_adapter("default", c);
        params = peft.trainable_parameters();
    }
    g_trainable[std::string(shape.name) + "/" + method] = method == "frozen" ? 0 : peft.trainable_parameter_count();
    model->train();
    auto ids = torch::randint(5, cfg.vocab_size, {shape.batch, shape.len}, torch::kLong);
    auto mask = torch::ones_like(ids);
    auto labels = torch::randint(0, 2, {shape.batch}, torch::kLong);
    hra::AdamW opt(params, {0.9, 0.999, 1e-6, 0.01});
    for (auto _ : state) {
        auto loss = hra::deberta_classification_loss(cfg, model->forward(ids, mask).logits, labels);
        loss.backward();
        if (!params.empty()) {
            opt.step(1e-3);
            opt.zero_grad();
        } else {
            model->deberta->embeddings->LayerNorm->weight.mutable_grad() = torch::Tensor();
        }
        benchmark::DoNotOptimize(loss.data_ptr());
    }
    state.counters["examples/s"] = benchmark::Counter(static_cast<double>(shape.batch), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
    const bool smoke = hra::bench::take_smoke_flag(argc, argv);
    const auto info = hra::init_runtime(0);
    std::fprintf(stderr, "runtime: %s\n", hra::describe(info).c_str());
    for (const auto& shape : kShapes)
        for (const char* method : {"frozen", "hra", "lora"}) {
            const std::string meth = method;
            const bool base = std::string(shape.name) == "base";
            if (smoke && base) continue;
            auto* b = benchmark::RegisterBenchmark((std::string("deberta_step/") + shape.name + "/" + meth).c_str(),
                                                   [&shape, meth](benchmark::State& s) { train_step(s, shape, meth); })
                          ->Unit(benchmark::kMillisecond)
                          ->UseRealTime();
            if (smoke)
                b->Iterations(1);
            else
                b->MinWarmUpTime(base ? 4.0 : 0.5)  // base: about one step of warm-up, then two measured
                    ->MinTime(base ? 8.0 : 2.0)
                    ->Repetitions(3)
                    ->ReportAggregatesOnly(true);
        }
    // Before Initialize, which takes the --benchmark_* flags out of argv.
    auto reporter = hra::bench::reporter_for(argc, argv, [](const hra::bench::Runs& runs) {
        for (const auto& r : runs) {
            if (r.error_occurred || r.aggregate_name != "median") continue;
            auto name = r.run_name.function_name;
            g_rate[name.substr(name.find('/') + 1)] = r.counters.at("examples/s");
        }
        return runs;
    });
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks(reporter.get());
    std::fprintf(stderr, "\nDeBERTa-v3 classifier training step (adapters r=8 on the paper's 6 targets per layer, plus pooler and classifier)\n");
    std::fprintf(stderr, "%-6s %-7s %7s %12s %13s %10s %9s\n", "model", "method", "batch", "trainable", "examples/s", "vs frozen", "vs LoRA");
    for (const auto& shape : kShapes)
        for (const char* method : {"frozen", "hra", "lora"}) {
            const std::string key = std::string(shape.name) + "/" + method;
            if (!g_rate.count(key)) continue;
            const double frozen = g_rate[std::string(shape.name) + "/frozen"], lora = g_rate[std::string(shape.name) + "/lora"];
            std::fprintf(stderr, "%-6s %-7s %4lldx%-3lld %12lld %13.1f %9.2fx %8.2fx\n", shape.name, method,
                        static_cast<long long>(shape.batch), static_cast<long long>(shape.len),
                        static_cast<long long>(g_trainable[key]), g_rate[key], frozen > 0 ? g_rate[key] / frozen : 0,
                        lora > 0 ? g_rate[key] / lora : 0);
        }
    return 0;
}
