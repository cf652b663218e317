#include "demo/demo.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "common/log.h"
#include "io/atomic_file.h"
#include "models/generate.h"
#include "models/llama2c.h"
#include "models/pipeline.h"
#include "train/plot.h"
#include "train/engine.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* const kNames[] = {"Lily", "Tom", "Ben", "Sue", "Anna", "Max", "Mia", "Sam"};
const char* const kThings[] = {"balls", "apples", "toys", "cookies", "flowers"};
const char* const kTemplate = "{query}\nAnswer:";

uint64_t mix(uint64_t& s) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

std::string prompt_of(const std::string& query) {
    std::string p = kTemplate;
    p.replace(p.find("{query}"), 7, query);
    return p;
}

// Greedy answer: the first word generated, without punctuation.
double accuracy(LlamaForCausalLMImpl& model, const Tokenizer& tok, const std::vector<ComparisonItem>& items) {
    SamplingOptions s;
    s.max_new_tokens = 4;
    s.stop = {".", "\n"};
    int64_t correct = 0;
    for (const auto& it : items) {
        auto r = generate(model, tok, tok.encode(prompt_of(it.query), true), s);
        std::string word = r.text;
        const size_t b = word.find_first_not_of(' ');
        word = b == std::string::npos ? "" : word.substr(b);
        word = word.substr(0, word.find(' '));
        correct += word == it.answer;
    }
    return static_cast<double>(correct) / static_cast<double>(items.size());
}

std::string write_jsonl(const std::string& path, const std::vector<ComparisonItem>& items) {
    std::string out;
    for (const auto& it : items) out += json{{"query", it.query}, {"response", " " + it.answer + "."}}.dump() + "\n";
    io::write_file_atomically(path, out);
    return path;
}

}  // namespace

std::vector<ComparisonItem> comparison_items(int64_t n, uint64_t seed) {
    std::vector<ComparisonItem> out;
    uint64_t s = seed * 1000003ull + 17;
    for (int64_t i = 0; i < n; ++i) {
        const size_t a = mix(s) % 8;
        size_t b = mix(s) % 7;
        if (b >= a) ++b;
        const int x = 1 + static_cast<int>(mix(s) % 9);
        int y = 1 + static_cast<int>(mix(s) % 8);
        if (y >= x) ++y;
        const std::string thing = kThings[mix(s) % 5];
        ComparisonItem it;
        it.query = std::string(kNames[a]) + " has " + std::to_string(x) + " " + thing + ". " + kNames[b] + " has " +
                   std::to_string(y) + " " + thing + ". Who has more " + thing + "?";
        it.first_wins = x > y;
        it.answer = it.first_wins ? kNames[a] : kNames[b];
        out.push_back(it);
    }
    return out;
}

DemoResult run_demo(const DemoOptions& o) {
    const auto t_start = std::chrono::steady_clock::now();
    DemoResult res;
    if (fs::exists(o.out) && !fs::is_empty(o.out) && !fs::exists(fs::path(o.out) / "demo.json") &&
        !fs::exists(fs::path(o.out) / "model"))
        throw Error("output folder exists and is not a demo run; choose another --out", {o.out});
    fs::remove_all(o.out);
    io::make_dirs(o.out);
    const std::string model_dir = (fs::path(o.out) / "model").string();
    convert_llama2c((fs::path(o.data_dir) / "stories260K/stories260K.bin").string(),
                    (fs::path(o.data_dir) / "stories260K/tok512.bin").string(), model_dir, true);

    // Data: training and validation from one seed, the test set from another.
    auto train_items = comparison_items(o.train_examples + o.val_examples, o.seed + 1);
    std::vector<ComparisonItem> val_items(train_items.end() - o.val_examples, train_items.end());
    train_items.resize(static_cast<size_t>(o.train_examples));
    const auto test_items = comparison_items(o.test_examples, o.seed + 2);
    const std::string train_path = write_jsonl((fs::path(o.out) / "train.jsonl").string(), train_items);
    const std::string val_path = write_jsonl((fs::path(o.out) / "val.jsonl").string(), val_items);
    write_jsonl((fs::path(o.out) / "test.jsonl").string(), test_items);
    int64_t first = 0;
    for (const auto& it : test_items) first += it.first_wins;
    res.majority = std::max(first, o.test_examples - first) / static_cast<double>(o.test_examples);

    auto base = load_llama(model_dir);
    auto tok = load_tokenizer(model_dir);
    res.before_accuracy = accuracy(*base.model, *tok, test_items);
    log_info(strprintf("hra demo: base model %.1f%% on %lld held-out questions (chance 50%%, majority %.1f%%)",
                       100 * res.before_accuracy, static_cast<long long>(o.test_examples), 100 * res.majority));

    std::vector<std::pair<std::string, std::vector<StepRecord>>> curves;
    for (const std::string method : {"hra", "lora"}) {
        DemoRow best;
        std::vector<StepRecord> best_curve;
        std::string best_dir;
        for (double lr : method == "hra" ? o.hra_lrs : o.lora_lrs) {
            TrainOptions t;
            t.model = model_dir;
            t.data = train_path;
            t.val_data = val_path;
            char name[64];
            std::snprintf(name, sizeof name, "%s-lr%g", method.c_str(), lr);
            t.out = (fs::path(o.out) / name).string();
            t.data_options.format = "metamath";
            t.data_options.prompt_template = kTemplate;
            t.data_options.max_length = 64;
            t.set_method(method);
            t.adapter.r = method == "hra" ? o.hra_r : o.lora_r;
            if (method == "lora") t.adapter.set("lora_alpha", 2 * o.lora_r);
            t.adapter.target_modules = ModuleSelector::regex("all-linear");
            t.lr = lr;
            t.schedule = Schedule::Cosine;
            t.warmup_ratio = 0.05;
            t.batch_size = o.batch_size;
            t.max_steps = o.steps;
            t.eval_every = std::max<int64_t>(1, o.steps / 6);
            t.seed = o.seed;
            const auto t0 = std::chrono::steady_clock::now();
            TrainResult tr;
            {
                ScopedLogLevel quiet(LogLevel::Warning);  // the sweep's runs print no step lines
                tr = train(t);
            }
            DemoRow row;
            row.method = method;
            row.lr = lr;
            row.train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            auto m = load_with_adapters(model_dir, {tr.adapter_dir});
            for (const auto& [k, l] : m.peft->adaptable_layers())
                for (const auto& a : l->adapter_names())
                    for (const auto& p : l->adapter(a)->parameters()) row.parameters += p.numel();
            row.val_accuracy = accuracy(*m.base.model, *tok, val_items);
            log_info(strprintf("hra demo: %-4s lr %-6g  val loss %.4f  val accuracy %5.1f%%  (%.0f s)", method.c_str(), lr,
                               tr.final_val_loss.value_or(NAN), 100 * row.val_accuracy, row.train_seconds));
            res.sweep.push_back(row);
            if (best.method.empty() || row.val_accuracy > best.val_accuracy) {
                best = row;
                best_curve = tr.history;
                best_dir = tr.adapter_dir;
            }
        }
        auto m = load_with_adapters(model_dir, {best_dir});
        best.test_accuracy = accuracy(*m.base.model, *tok, test_items);
        res.rows.push_back(best);
        char label[64];
        std::snprintf(label, sizeof label, "%s (lr %g)", method.c_str(), best.lr);
        curves.emplace_back(label, best_curve);
    }
    io::write_file_atomically((fs::path(o.out) / "loss.svg").string(),
                              loss_curve_svg(curves, "stories260K, who-has-more task: training loss"));

    char buf[256];
    std::string t = "\nstories260K fine-tuned on \"who has more\" questions; held-out test set of " +
                    std::to_string(o.test_examples) + " (different seed)\n\n";
    std::snprintf(buf, sizeof buf, "%-22s %10s %8s %10s %10s\n", "", "trainable", "lr", "val acc", "test acc");
    t += buf;
    std::snprintf(buf, sizeof buf, "%-22s %10s %8s %10s %9.1f%%\n", "chance", "-", "-", "-", 50.0);
    t += buf;
    std::snprintf(buf, sizeof buf, "%-22s %10s %8s %10s %9.1f%%\n", "majority answer", "-", "-", "-", 100 * res.majority);
    t += buf;
    std::snprintf(buf, sizeof buf, "%-22s %10s %8s %10s %9.1f%%\n", "base model (before)", "0", "-", "-", 100 * res.before_accuracy);
    t += buf;
    for (const auto& r : res.rows) {
        std::snprintf(buf, sizeof buf, "%-22s %10lld %8g %9.1f%% %9.1f%%\n",
                      (r.method == "hra" ? "HRA r=" + std::to_string(o.hra_r) : "LoRA r=" + std::to_string(o.lora_r)).c_str(),
                      static_cast<long long>(r.parameters), r.lr, 100 * r.val_accuracy, 100 * r.test_accuracy);
        t += buf;
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::snprintf(buf, sizeof buf, "\n%lld steps of %lld examples per run, learning rates tried: %zu per method; %.0f s in all\n",
                  static_cast<long long>(o.steps), static_cast<long long>(o.batch_size), o.hra_lrs.size(), total);
    t += buf;
    t += "loss curves: " + (fs::path(o.out) / "loss.svg").string() + "\n";
    res.table = t;

    json summary;
    summary["before_accuracy"] = res.before_accuracy;
    summary["majority"] = res.majority;
    summary["chance"] = 0.5;
    for (const auto& r : res.sweep)
        summary["runs"].push_back({{"method", r.method}, {"lr", r.lr}, {"parameters", r.parameters},
                                   {"val_accuracy", r.val_accuracy}, {"seconds", r.train_seconds}});
    for (const auto& r : res.rows)
        summary["best"].push_back({{"method", r.method}, {"lr", r.lr}, {"parameters", r.parameters},
                                   {"val_accuracy", r.val_accuracy}, {"test_accuracy", r.test_accuracy}});
    summary["seconds"] = total;
    io::write_file_atomically((fs::path(o.out) / "demo.json").string(), summary.dump(2) + "\n");
    return res;
}

}  // namespace hra
