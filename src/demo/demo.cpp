#include "demo/demo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "common/log.h"
#include "demo/demo_util.h"
#include "io/atomic_file.h"
#include "models/generate.h"
#include "models/llama2c.h"
#include "models/pipeline.h"
#include "train/engine.h"
#include "train/plot.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;
using demo_util::say;
using demo_util::seconds_since;

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

// Summed log-probability of `text`'s tokens after the first (BOS).
double log_likelihood(LlamaForCausalLMImpl& model, const Tokenizer& tok, const std::string& text) {
    torch::NoGradGuard no_grad;
    const auto ids = tok.encode(text, true);
    LlamaInputs in;
    in.input_ids = torch::tensor(ids, torch::kLong).unsqueeze(0);
    auto logp = torch::log_softmax(model.forward(in).logits[0].slice(0, 0, -1).to(torch::kDouble), -1);
    return logp.gather(1, in.input_ids[0].slice(0, 1).unsqueeze(1)).sum().item<double>();
}

DemoScore score(LlamaForCausalLMImpl& model, const Tokenizer& tok, const std::vector<ComparisonItem>& items) {
    SamplingOptions s;
    s.max_new_tokens = 4;
    s.stop = {".", "\n"};
    int64_t generated = 0, likelier = 0;
    for (const auto& it : items) {
        const std::string prompt = prompt_of(it.query);
        auto r = generate(model, tok, tok.encode(prompt, true), s);
        std::string word = r.text;
        const size_t b = word.find_first_not_of(' ');
        word = b == std::string::npos ? "" : word.substr(b);
        word = word.substr(0, word.find_first_of(" ."));
        generated += word == it.answer;
        likelier += log_likelihood(model, tok, prompt + " " + it.answer) > log_likelihood(model, tok, prompt + " " + it.other);
    }
    const double n = static_cast<double>(items.size());
    return {static_cast<double>(generated) / n, static_cast<double>(likelier) / n};
}

std::string write_jsonl(const std::string& path, const std::vector<ComparisonItem>& items) {
    std::string out;
    for (const auto& it : items) out += json{{"query", it.query}, {"response", " " + it.answer + "."}}.dump() + "\n";
    io::write_file_atomically(path, out);
    return path;
}

json to_json(const DemoScore& s) { return {{"generation", s.generation}, {"likelihood", s.likelihood}}; }

std::string percent_range(double mean, double lo, double hi, size_t n) {
    return n > 1 ? strprintf("%5.1f%% [%4.1f, %4.1f]", 100 * mean, 100 * lo, 100 * hi) : strprintf("%5.1f%%", 100 * mean);
}

}  // namespace

std::vector<ComparisonItem> comparison_pool(uint64_t seed) {
    std::vector<ComparisonItem> out;
    for (size_t a = 0; a < 8; ++a)
        for (size_t b = 0; b < 8; ++b)
            for (int x = 1; x <= 9; ++x)
                for (int y = 1; y <= 9; ++y)
                    for (const char* thing : kThings) {
                        if (a == b || x == y) continue;
                        ComparisonItem it;
                        it.query = std::string(kNames[a]) + " has " + std::to_string(x) + " " + thing + ". " + kNames[b] +
                                   " has " + std::to_string(y) + " " + thing + ". Who has more " + thing + "?";
                        it.first_wins = x > y;
                        it.answer = it.first_wins ? kNames[a] : kNames[b];
                        it.other = it.first_wins ? kNames[b] : kNames[a];
                        out.push_back(it);
                    }
    uint64_t s = seed * 1000003ull + 17;
    for (size_t i = out.size() - 1; i > 0; --i) std::swap(out[i], out[mix(s) % (i + 1)]);  // Fisher-Yates
    return out;
}

DemoSplit demo_split(const DemoOptions& o) {
    auto pool = comparison_pool(o.data_seed);
    const auto n = static_cast<int64_t>(pool.size());
    auto fits = [n](int64_t k) { return k > 0 && k <= n; };
    const bool sizes_ok = fits(o.train_examples) && fits(o.val_examples) && fits(o.test_examples);  // then the sum cannot overflow
    const int64_t need = sizes_ok ? o.train_examples + o.val_examples + o.test_examples : 0;
    if (!sizes_ok || need > n)
        throw Error(strprintf("the demo's splits need positive sizes and at most %zu questions in all (asked: %lld, %lld, %lld)",
                              pool.size(), static_cast<long long>(o.train_examples), static_cast<long long>(o.val_examples),
                              static_cast<long long>(o.test_examples)));
    DemoSplit d;
    auto at = pool.begin();
    auto take = [&](int64_t n, std::vector<ComparisonItem>& to) {
        to.assign(at, at + n);
        at += n;
    };
    take(o.train_examples, d.train);
    take(o.val_examples, d.val);
    take(o.test_examples, d.test);
    return d;
}

DemoResult run_demo(const DemoOptions& o) {
    const auto t_start = std::chrono::steady_clock::now();
    if (o.seeds.empty()) throw Error("the demo needs at least one seed");
    if (o.hra_lrs.empty() || o.lora_lrs.empty()) throw Error("the demo needs at least one learning rate per method");
    DemoResult res;
    if (fs::exists(o.out) && !fs::is_empty(o.out) && !fs::exists(fs::path(o.out) / "demo.json") &&
        !fs::exists(fs::path(o.out) / "model"))
        throw Error("output folder exists and is not a demo run; choose another --out", {o.out});
    const auto split = demo_split(o);
    fs::remove_all(o.out);
    io::make_dirs(o.out);
    const std::string model_dir = (fs::path(o.out) / "model").string();
    convert_llama2c((fs::path(o.data_dir) / "stories260K/stories260K.bin").string(),
                    (fs::path(o.data_dir) / "stories260K/tok512.bin").string(), model_dir, true);
    const std::string train_path = write_jsonl((fs::path(o.out) / "train.jsonl").string(), split.train);
    const std::string val_path = write_jsonl((fs::path(o.out) / "val.jsonl").string(), split.val);
    write_jsonl((fs::path(o.out) / "test.jsonl").string(), split.test);
    int64_t first = 0;
    for (const auto& it : split.test) first += it.first_wins;
    res.majority = static_cast<double>(std::max(first, o.test_examples - first)) / static_cast<double>(o.test_examples);

    auto tok = load_tokenizer(model_dir);
    {
        auto base = load_llama(model_dir);
        res.before = score(*base.model, *tok, split.test);
    }
    say(strprintf("hra demo: base model on %lld held-out questions: generation %.1f%%, likelihood %.1f%% (chance 50%%, majority %.1f%%)",
                  static_cast<long long>(o.test_examples), 100 * res.before.generation, 100 * res.before.likelihood,
                  100 * res.majority));

    auto train_one = [&](const std::string& method, double lr, uint64_t seed) {
        TrainOptions t;
        t.model = model_dir;
        t.data = train_path;
        t.val_data = val_path;
        t.out = (fs::path(o.out) / strprintf("%s-lr%g-seed%llu", method.c_str(), lr, static_cast<unsigned long long>(seed))).string();
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
        t.seed = seed;
        const auto t0 = std::chrono::steady_clock::now();
        TrainResult tr;
        {
            ScopedLogLevel quiet(LogLevel::Warning);  // the runs print no step lines
            tr = train(t);
        }
        DemoRun run;
        run.method = method;
        run.lr = lr;
        run.seed = seed;
        run.seconds = seconds_since(t0);
        run.val_loss = tr.final_val_loss.value_or(NAN);
        run.adapter_dir = tr.adapter_dir;
        auto m = load_with_adapters(model_dir, {tr.adapter_dir});
        for (const auto& [k, l] : m.peft->adaptable_layers())
            for (const auto& a : l->adapter_names())
                for (const auto& p : l->adapter(a)->parameters()) run.parameters += p.numel();
        return std::make_pair(run, tr.history);
    };
    auto score_run = [&](const DemoRun& run, const std::vector<ComparisonItem>& items) {
        auto m = load_with_adapters(model_dir, {run.adapter_dir});
        return score(*m.base.model, *tok, items);
    };

    std::vector<std::pair<std::string, std::vector<StepRecord>>> curves;
    for (const std::string method : {"hra", "lora"}) {
        const auto& grid = method == "hra" ? o.hra_lrs : o.lora_lrs;
        // Learning rate: validation accuracy (generation) with the first seed; ties keep the grid's first.
        std::vector<double> scores;
        size_t best = 0;
        std::vector<StepRecord> best_curve;
        for (double lr : grid) {
            auto [run, history] = train_one(method, lr, o.seeds.front());
            run.val = score_run(run, split.val);
            run.validated = true;
            say(strprintf("hra demo: %-4s lr %-6g seed %llu: val loss %.4f, val accuracy %.1f%% (generation), %.1f%% (likelihood), %.0f s",
                          method.c_str(), lr, static_cast<unsigned long long>(o.seeds.front()), run.val_loss,
                          100 * run.val.generation, 100 * run.val.likelihood, run.seconds));
            scores.push_back(run.val.generation);
            if (scores.size() == 1 || scores.back() > scores[best]) best = scores.size() - 1, best_curve = history;
            res.runs.push_back(run);
        }
        DemoRow row;
        row.method = method;
        row.lr = grid[best];
        row.lr_note = demo_util::lr_note(grid, scores, row.lr, "answered a validation question");
        if (!row.lr_note.empty()) say("hra demo: warning: " + method + ": " + row.lr_note);
        for (const uint64_t seed : o.seeds) {
            size_t at = res.runs.size();
            for (size_t i = 0; i < res.runs.size(); ++i)
                if (res.runs[i].method == method && res.runs[i].lr == row.lr && res.runs[i].seed == seed) at = i;
            if (at == res.runs.size()) res.runs.push_back(train_one(method, row.lr, seed).first);
            DemoRun& run = res.runs[at];
            run.test = score_run(run, split.test);
            run.tested = true;
            row.parameters = run.parameters;
            row.test.push_back(run.test);
            say(strprintf("hra demo: %-4s lr %-6g seed %llu: test accuracy %.1f%% (generation), %.1f%% (likelihood)", method.c_str(),
                          row.lr, static_cast<unsigned long long>(seed), 100 * run.test.generation, 100 * run.test.likelihood));
        }
        auto stat = [&](double DemoScore::*field, double& mean, double& lo, double& hi) {
            mean = 0, lo = 1, hi = 0;
            for (const auto& s : row.test) mean += s.*field, lo = std::min(lo, s.*field), hi = std::max(hi, s.*field);
            mean /= static_cast<double>(row.test.size());
        };
        stat(&DemoScore::generation, row.mean.generation, row.min.generation, row.max.generation);
        stat(&DemoScore::likelihood, row.mean.likelihood, row.min.likelihood, row.max.likelihood);
        res.rows.push_back(row);
        curves.emplace_back(strprintf("%s (lr %g)", method.c_str(), row.lr), best_curve);
    }
    io::write_file_atomically((fs::path(o.out) / "loss.svg").string(),
                              loss_curve_svg(curves, "stories260K, who-has-more task: training loss"));

    // The table.
    std::string seeds;
    for (const auto s : o.seeds) seeds += (seeds.empty() ? "" : " ") + std::to_string(s);
    std::string t = strprintf("\nstories260K fine-tuned on \"who has more\" questions: %lld training, %lld validation, %lld test "
                              "questions, disjoint slices of one de-duplicated pool\nheld-out test accuracy%s\n\n",
                              static_cast<long long>(o.train_examples), static_cast<long long>(o.val_examples),
                              static_cast<long long>(o.test_examples),
                              o.seeds.size() > 1 ? (", mean [min, max] over seeds " + seeds).c_str() : "");
    t += strprintf("%-22s %10s %8s  %-22s %-22s\n", "", "trainable", "lr", "generated answer", "likelier name");
    auto plain = [&](const char* label, const char* params, double g, double l) {
        t += strprintf("%-22s %10s %8s  %-22s %-22s\n", label, params, "-", strprintf("%5.1f%%", 100 * g).c_str(),
                       strprintf("%5.1f%%", 100 * l).c_str());
    };
    plain("chance", "-", 0.5, 0.5);
    plain("majority answer", "-", res.majority, res.majority);
    plain("base model (before)", "0", res.before.generation, res.before.likelihood);
    for (const auto& r : res.rows)
        t += strprintf("%-22s %10lld %8g  %-22s %-22s\n",
                       (r.method == "hra" ? "HRA r=" + std::to_string(o.hra_r) : "LoRA r=" + std::to_string(o.lora_r)).c_str(),
                       static_cast<long long>(r.parameters), r.lr,
                       percent_range(r.mean.generation, r.min.generation, r.max.generation, r.test.size()).c_str(),
                       percent_range(r.mean.likelihood, r.min.likelihood, r.max.likelihood, r.test.size()).c_str());
    for (const auto& r : res.rows)
        if (!r.lr_note.empty()) t += "note (" + r.method + "): " + r.lr_note + "\n";
    const double total = seconds_since(t_start);
    std::string grids;
    for (const auto* g : {&o.hra_lrs, &o.lora_lrs}) {
        std::string list;
        for (double lr : *g) list += (list.empty() ? "" : " ") + strprintf("%g", lr);
        grids += (grids.empty() ? "HRA " : ", LoRA ") + list;
    }
    t += strprintf("\n%lld steps of %lld examples per run; learning rates (%s) chosen on validation accuracy with seed %llu; "
                   "%zu runs, %.0f s in all\n",
                   static_cast<long long>(o.steps), static_cast<long long>(o.batch_size), grids.c_str(),
                   static_cast<unsigned long long>(o.seeds.front()), res.runs.size(), total);
    t += "loss curves: " + (fs::path(o.out) / "loss.svg").string() + "\n";
    res.table = t;

    json& summary = res.summary;
    summary["demo"] = "who-has-more";
    summary["split"] = {{"train", o.train_examples}, {"val", o.val_examples}, {"test", o.test_examples}, {"data_seed", o.data_seed}};
    summary["seeds"] = o.seeds;
    summary["chance"] = res.chance;
    summary["majority"] = res.majority;
    summary["before"] = to_json(res.before);
    for (const auto& r : res.rows) {
        json row = {{"method", r.method},       {"parameters", r.parameters}, {"lr", r.lr},         {"lr_note", r.lr_note},
                    {"mean", to_json(r.mean)}, {"min", to_json(r.min)},     {"max", to_json(r.max)}, {"test", json::array()}};
        for (const auto& s : r.test) row["test"].push_back(to_json(s));
        summary["rows"].push_back(row);
    }
    for (const auto& r : res.runs) {
        json run = {{"method", r.method},   {"lr", r.lr},           {"seed", r.seed},
                    {"parameters", r.parameters}, {"seconds", r.seconds}, {"val_loss", r.val_loss}};
        if (r.validated) run["val"] = to_json(r.val);
        if (r.tested) run["test"] = to_json(r.test);
        summary["runs"].push_back(run);
    }
    summary["seconds"] = total;
    io::write_file_atomically((fs::path(o.out) / "demo.json").string(), summary.dump(2) + "\n");
    return res;
}

}  // namespace hra
