// Small helpers the demos share: progress lines on stderr, wall-clock seconds, loss summaries.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/log.h"
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
// than threads: the engine seeds torch's global generator, which threads would share, and a child gives the same
// numbers as the run in process. The caller computes nothing meanwhile.
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
