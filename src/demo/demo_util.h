// Small helpers the demos share: progress lines on stderr, wall-clock seconds, loss summaries.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "demo/diffusion_demo.h"
#include "diffusion/pipeline.h"
#include "io/png.h"
#include "train/engine.h"

namespace hra::demo_util {

// One progress line on stderr, flushed (stdout holds the table and its JSON line).
inline void say(const std::string& s) {
    std::fprintf(stderr, "%s\n", s.c_str());
    std::fflush(stderr);
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A run's first loss, its last loss smoothed (an exponential moving average with `decay`) and its summed step time.
struct LossSummary {
    double first = 0, last = 0, seconds = 0;
};
inline LossSummary summarize(const std::vector<StepRecord>& history, double decay) {
    LossSummary s;
    for (size_t i = 0; i < history.size(); ++i) {
        s.seconds += history[i].ms / 1000.0;
        s.last = i == 0 ? history[i].loss : decay * s.last + (1 - decay) * history[i].loss;
    }
    if (!history.empty()) s.first = history.front().loss;
    return s;
}

// What a reader of a learning-rate sweep should know about the choice of `best_lr`
// (the first of the best `scores`, in `grid` order): "" when nothing, else that
// nothing scored (`none`: what scoring means), that several tie, or that the
// choice sits at an edge of the grid, where the best may lie beyond it.
inline std::string lr_note(const std::vector<double>& grid, const std::vector<double>& scores, double best_lr, const char* none) {
    const double best = scores.empty() ? 0 : *std::max_element(scores.begin(), scores.end());
    const auto ties = std::count(scores.begin(), scores.end(), best);
    if (best == 0) return strprintf("no learning rate %s on the validation split; the grid's first, %g, is kept", none, best_lr);
    if (ties > 1) return strprintf("%lld learning rates tie at %.3f; the first in the grid, %g, is kept", static_cast<long long>(ties), best, best_lr);
    if (grid.size() > 1 && best_lr == *std::min_element(grid.begin(), grid.end()))
        return strprintf("the chosen learning rate %g is the grid's lowest: the best may lie below it", best_lr);
    if (grid.size() > 1 && best_lr == *std::max_element(grid.begin(), grid.end()))
        return strprintf("the chosen learning rate %g is the grid's highest: the best may lie above it", best_lr);
    return "";
}

inline std::string lr_text(double lr) { return strprintf("%g", lr); }

// The start-up checks the adapter demos share (`name`: "subject", "control").
inline void check_seeds_and_grids(const char* name, const std::vector<uint64_t>& seeds, const std::vector<double>& hra_lrs,
                                  const std::vector<double>& lora_lrs) {
    if (seeds.empty()) throw Error(strprintf("the %s demo needs at least one seed", name));
    if (std::set<uint64_t>(seeds.begin(), seeds.end()).size() != seeds.size()) throw Error(strprintf("the %s demo's seeds must differ", name));
    if (hra_lrs.empty() || lora_lrs.empty()) throw Error(strprintf("the %s demo needs at least one learning rate per method", name));
}

// One fine-tuning run of an adapter demo.
struct RunSpec {
    std::string method;
    double lr = 0;
    uint64_t seed = 0;
    std::string name() const { return method + "-lr" + lr_text(lr) + "-seed" + std::to_string(seed); }
};

// What the learning-rate protocol chose for one method.
template <class Run>
struct LrChoice {
    double lr = 0;
    std::vector<std::pair<std::string, double>> grid;  // lr_text(lr) -> validation score
    std::string note;                                   // lr_note(), "" when nothing to say
    std::vector<Run> runs;                              // the chosen rate, one per seed
};

// The learning-rate protocol the adapter demos share. For each method of `grids`, in order: every rate of its grid
// trains with the first seed; `validate` scores each run on the validation split (higher is better; ties keep the
// grid's first, which lr_note then reports; `none` says what a zero means); then the other seeds train at the chosen
// rate. `train_all` trains a list of runs and returns them in its order (the subject demo: side by side in children).
template <class Run>
std::vector<LrChoice<Run>> choose_learning_rates(const std::vector<std::pair<std::string, std::vector<double>>>& grids,
                                                 const std::vector<uint64_t>& seeds,
                                                 const std::function<std::vector<Run>(const std::vector<RunSpec>&)>& train_all,
                                                 const std::function<double(const RunSpec&, const Run&)>& validate, const char* none) {
    std::vector<RunSpec> first;
    for (const auto& [method, grid] : grids)
        for (double lr : grid) first.push_back({method, lr, seeds.front()});
    const std::vector<Run> first_runs = train_all(first);
    std::vector<LrChoice<Run>> out(grids.size());
    std::vector<size_t> chosen(grids.size());
    std::vector<RunSpec> others;
    size_t next = 0;
    for (size_t m = 0; m < grids.size(); ++m) {
        const auto& [method, grid] = grids[m];
        double best = -1;
        std::vector<double> scores;
        for (double lr : grid) {
            const double got = validate(first[next], first_runs[next]);
            out[m].grid.emplace_back(lr_text(lr), got);
            scores.push_back(got);
            if (got > best) best = got, out[m].lr = lr, chosen[m] = next;
            ++next;
        }
        out[m].note = lr_note(grid, scores, out[m].lr, none);
        if (!out[m].note.empty()) say("warning: " + method + ": " + out[m].note);
        for (size_t i = 1; i < seeds.size(); ++i) others.push_back({method, out[m].lr, seeds[i]});
    }
    const std::vector<Run> other_runs = train_all(others);
    next = 0;
    for (size_t m = 0; m < grids.size(); ++m) {
        out[m].runs.push_back(first_runs[chosen[m]]);
        for (size_t i = 1; i < seeds.size(); ++i) out[m].runs.push_back(other_runs[next++]);
    }
    return out;
}

// The base model of a shape-world adapter demo: `given` (an earlier run's checkpoint), or the world model of `w`
// pretrained on the captioned folder `data` for `max_steps` steps (0: `minutes`), its configs written to `configs`
// and its run to `run_dir`. The progress line names the demo (`demo`: "hra demo --subject") and the data (`data_text`).
struct WorldBase {
    std::string dir;
    int64_t steps = 0;
    double seconds = 0;
};
inline WorldBase pretrain_world_base(const std::string& given, const DiffusionDemoOptions& w, int64_t max_steps, double minutes,
                                     const std::string& configs, const std::string& data, const std::string& run_dir,
                                     const std::string& demo, const std::string& data_text) {
    WorldBase b;
    if (!given.empty()) {
        say(demo + ": the base model of an earlier run, " + given);
        b.dir = given;
        return b;
    }
    write_world_model_configs(w, configs);
    say(demo + ": pretraining the base on " + data_text + ", " +
        (max_steps > 0 ? strprintf("%lld steps", static_cast<long long>(max_steps)) : strprintf("%.1f min", minutes)));
    DiffusionDemoOptions pre = w;
    pre.train_minutes = minutes;
    pre.max_steps = max_steps;
    TrainResult r;
    {
        ScopedLogLevel quiet(LogLevel::Warning);
        r = train(world_pretrain_options(pre, configs, data, run_dir, 0));
    }
    b.dir = r.adapter_dir;
    b.steps = r.steps;
    b.seconds = summarize(r.history, 0.98).seconds;
    return b;
}

// The adapter fine-tuning the diffusion demos share: `method` (hra, lora) with rank r on `targets`, a constant
// learning rate, AdamW wd 1e-2, `steps` steps of `batch`, clipping at `max_grad_norm` (0: none), quiet logs.
// The caller adds what its task needs (class images, ...).
inline TrainOptions finetune_options(const std::string& task, const std::string& model, const std::string& data, const std::string& out,
                                     const std::string& method, int64_t r, const std::vector<std::string>& targets, int64_t resolution,
                                     double lr, uint64_t seed, int64_t steps, int64_t batch, double max_grad_norm) {
    TrainOptions t;
    t.task = task;
    t.model = model;
    t.data = data;
    t.out = out;
    t.set_method(method);
    t.adapter.r = r;
    t.adapter.target_modules = ModuleSelector::of(targets);
    t.resolution = resolution;
    t.lr = lr;
    t.schedule = Schedule::Constant;
    t.weight_decay = 1e-2;
    t.max_grad_norm = max_grad_norm;
    t.batch_size = batch;
    t.max_steps = steps;
    t.seed = seed;
    t.overwrite = true;
    t.log_every = 1000000;
    return t;
}

// One job of run_forked: `run` returns its result as JSON, which the child writes to `result_file`.
struct ForkedJob {
    std::string name;         // for errors
    std::string result_file;  // replaced
    std::function<nlohmann::json()> run;
};
// Runs each job in a child process (fork), at most `parallel` at once, each child with one intra-op thread, and
// returns their results in the jobs' order; a job that throws or dies is an error naming it, after all have ended.
// The demos' fine-tuning runs are small (batch 1 + 1 at 32 px): one thread trains one as fast as two (the subject
// demo's HRA run 26 s vs 30 s, LoRA 24 s vs 25 s here), so two side by side halve the wall time. Children rather
// than threads: the engine seeds torch's global generator, which threads would share. A run on one thread rounds
// differently from one on two, so a run's numbers no longer depend on the machine's cores (an lr that diverges
// gives other numbers than it gave in process on two threads). The caller computes nothing meanwhile.
std::vector<nlohmann::json> run_forked(const std::vector<ForkedJob>& jobs, int64_t parallel);

// A run of the engine with warnings only, and its losses (the last smoothed with `decay`).
struct QuietRun {
    TrainResult result;
    LossSummary losses;
};
inline QuietRun train_quietly(const TrainOptions& t, double decay = 0.95) {
    QuietRun q;
    {
        ScopedLogLevel quiet(LogLevel::Warning);
        q.result = train(t);
    }
    q.losses = summarize(q.result.history, decay);
    return q;
}

// Mean, lowest and highest of per-seed numbers.
struct Spread {
    double mean = 0, min = 0, max = 0;
};
inline Spread spread(const std::vector<double>& v) {
    Spread s;
    if (v.empty()) return s;
    s.min = *std::min_element(v.begin(), v.end());
    s.max = *std::max_element(v.begin(), v.end());
    for (double x : v) s.mean += x / static_cast<double>(v.size());
    return s;
}

// One image of a captioned folder: DIR/NAME as PNG, and its metadata.jsonl line appended to `meta`.
inline void add_captioned(const std::filesystem::path& dir, const std::string& name, const torch::Tensor& pixels, const std::string& text,
                          std::string& meta, const std::map<std::string, std::string>& png_text = {}) {
    io::write_png((dir / name).string(), pixels, png_text);
    meta += nlohmann::json{{"file_name", name}, {"text", text}}.dump() + "\n";
}

// One image per prompt with the world demo's sampler (its steps, guidance and scheduler), in batches of 25
// seeded seed·1000 + batch; `residual` (when defined): one input residual per prompt (a control hint, encoded).
inline torch::Tensor generate_prompts(diffusion::StableDiffusion& sd, const std::vector<std::string>& prompts, const DiffusionDemoOptions& w,
                                      uint64_t seed, const torch::Tensor& residual = {}) {
    std::vector<torch::Tensor> out;
    const int64_t chunk = 25, n = static_cast<int64_t>(prompts.size());
    for (int64_t start = 0; start < n; start += chunk) {
        const int64_t end = std::min(n, start + chunk);
        diffusion::GenerateOptions g;
        g.prompts.assign(prompts.begin() + start, prompts.begin() + end);
        g.steps = w.sample_steps;
        g.guidance = w.guidance;
        g.scheduler = w.scheduler;
        g.seed = seed * 1000 + static_cast<uint64_t>(start / chunk);
        if (residual.defined()) g.input_residual = residual.slice(0, start, end);
        out.push_back(diffusion::generate(sd, g).pixels);
    }
    return torch::cat(out);
}

}  // namespace hra::demo_util
