#include "demo/subject_demo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "demo/demo_util.h"
#include "diffusion/pipeline.h"
#include "diffusion/shape_world.h"
#include "io/atomic_file.h"
#include "io/png.h"
#include "train/engine.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;
using diffusion::Scene;

namespace {

using demo_util::say;
using demo_util::seconds_since;

// "a large green {noun} at the middle center": the world's caption with `noun` for the shape word.
std::string context_caption(const Scene& s, const std::string& noun) {
    return "a " + diffusion::world_sizes().at(static_cast<size_t>(s.size)) + " " + diffusion::world_colours().at(static_cast<size_t>(s.colour)) +
           " " + noun + " at the " + diffusion::world_rows().at(static_cast<size_t>(s.row)) + " " +
           diffusion::world_cols().at(static_cast<size_t>(s.col));
}
const char* kSubjectNoun = "qwe shape";  // DreamBooth's "qwe {class}"
const char* kClassNoun = "shape";

// Pretraining data: every large scene (the subject is large; small shapes
// would take the base longer to learn), `per` renders, captions alternating between
// the full caption and the class caption (the shape word replaced by "shape").
void write_pretraining_folder(int64_t size, int64_t per, const fs::path& dir) {
    fs::create_directories(dir);
    std::string meta;
    int64_t n = 0;
    for (const auto& s : diffusion::all_scenes())
        for (int64_t k = 0; k < per && s.size == 1; ++k, ++n) {
            const std::string name = strprintf("%05lld.png", static_cast<long long>(n));
            io::write_png((dir / name).string(), diffusion::render(s, size, static_cast<uint64_t>(n)));
            const std::string text = k % 2 == 0 ? diffusion::caption(s) : context_caption(s, kClassNoun);
            meta += json{{"file_name", name}, {"text", text}}.dump() + "\n";
        }
    io::write_file_atomically((dir / "metadata.jsonl").string(), meta);
}

// One image per prompt (DDIM, the world demo's steps and guidance), batches of 25 seeded seed·1000 + batch.
torch::Tensor generate_prompts(diffusion::StableDiffusion& sd, const std::vector<std::string>& prompts, const DiffusionDemoOptions& w,
                               uint64_t seed) {
    std::vector<torch::Tensor> out;
    const int64_t chunk = 25, n = static_cast<int64_t>(prompts.size());
    for (int64_t start = 0; start < n; start += chunk) {
        diffusion::GenerateOptions g;
        g.prompts.assign(prompts.begin() + start, prompts.begin() + std::min(n, start + chunk));
        g.steps = w.sample_steps;
        g.guidance = w.guidance;
        g.scheduler = w.scheduler;
        g.seed = seed * 1000 + static_cast<uint64_t>(start / chunk);
        out.push_back(diffusion::generate(sd, g).pixels);
    }
    return torch::cat(out);
}

struct Prompts {
    std::vector<Scene> contexts;  // the subject in each (shape kSubjectShape)
    std::vector<std::string> subject, cls;
    Scene instance;  // the training context, sampled `instance_images` times with the class prompts
    std::string instance_prompt;
    int64_t instance_images = 0;
};

Prompts prompts_for(const std::vector<Scene>& contexts) {
    Prompts p;
    p.contexts = contexts;
    for (const auto& s : contexts) p.subject.push_back(context_caption(s, kSubjectNoun)), p.cls.push_back(context_caption(s, kClassNoun));
    return p;
}

// Subject prompts scored against their scenes; class prompts (when `cls`) against the same contexts, any captioned shape.
struct Samples {
    SubjectScore score;
    torch::Tensor subject, cls;  // uint8 [N, H, W, 3]
};
Samples sample(diffusion::StableDiffusion& sd, const Prompts& p, const DiffusionDemoOptions& w, uint64_t seed, bool cls) {
    Samples out;
    torch::NoGradGuard ng;
    out.subject = generate_prompts(sd, p.subject, w, seed);
    if (cls) out.cls = generate_prompts(sd, p.cls, w, seed);
    auto& sc = out.score;
    auto context_of = [](const diffusion::CheckResult& r, const Scene& want) {
        return r.found && r.scene.colour == want.colour && r.scene.row == want.row && r.scene.col == want.col && r.scene.size == want.size;
    };
    if (cls && p.instance_images > 0) {
        const auto inst = generate_prompts(sd, std::vector<std::string>(static_cast<size_t>(p.instance_images), p.instance_prompt), w, seed + 500);
        for (int64_t i = 0; i < inst.size(0); ++i) {
            const auto r = diffusion::check_image(inst[i], true);
            ++sc.instance_images;
            sc.instance_bar += r.found && r.scene.shape == diffusion::kSubjectShape && context_of(r, p.instance);
        }
    }
    for (size_t i = 0; i < p.contexts.size(); ++i) {
        const Scene& want = p.contexts[i];
        auto in_context = [&](const diffusion::CheckResult& r) { return context_of(r, want); };
        const auto r = diffusion::check_image(out.subject[static_cast<int64_t>(i)], true);
        ++sc.images;
        const bool bar = r.found && r.scene.shape == diffusion::kSubjectShape;
        sc.subject += bar;
        sc.context += in_context(r);
        sc.both += bar && in_context(r);
        if (!cls) continue;
        const auto c = diffusion::check_image(out.cls[static_cast<int64_t>(i)], true);
        const bool c_bar = c.found && c.scene.shape == diffusion::kSubjectShape;
        sc.class_kept += in_context(c) && !c_bar;
        sc.class_leak += c_bar;
    }
    return out;
}

struct FineTuned {
    SubjectRun run;
    std::string adapter;
};

FineTuned fine_tune(const SubjectDemoOptions& o, const std::string& method, double lr, uint64_t seed, const std::string& base,
                    const std::string& instances, const std::string& classes, const std::string& instance_prompt,
                    const std::string& class_prompt, const fs::path& out) {
    TrainOptions t;
    t.task = "dreambooth";
    t.model = base;
    t.data = instances;
    t.out = out.string();
    t.set_method(method);
    t.adapter.r = method == "hra" ? o.hra_r : o.lora_r;
    t.adapter.target_modules = ModuleSelector::of(o.targets);
    t.instance_prompt = instance_prompt;
    t.class_prompt = class_prompt;
    t.class_data = classes;
    t.num_class_images = o.class_images;
    t.prior_loss_weight = 1.0;
    t.resolution = o.world.image_size;
    // The dreambooth task's defaults (the seed's run): constant lr, AdamW wd 1e-2, clip 1.0, batch 1 (+1 class image).
    t.lr = lr;
    t.schedule = Schedule::Constant;
    t.weight_decay = 1e-2;
    t.max_grad_norm = 1.0;
    t.batch_size = 1;
    t.max_steps = o.steps;
    t.seed = seed;
    t.overwrite = true;
    t.log_every = 1000000;
    TrainResult r;
    {
        ScopedLogLevel quiet(LogLevel::Warning);
        r = train(t);
    }
    FineTuned f;
    f.adapter = r.adapter_dir;
    f.run.method = method;
    f.run.seed = seed;
    f.run.lr = lr;
    f.run.trainable = r.result.at("config").at("task_config").at("trainable_params").get<int64_t>();
    double smoothed = 0;
    for (size_t i = 0; i < r.history.size(); ++i) {
        f.run.train_seconds += r.history[i].ms / 1000.0;
        smoothed = i == 0 ? r.history[i].loss : 0.95 * smoothed + 0.05 * r.history[i].loss;
    }
    if (!r.history.empty()) f.run.first_loss = r.history.front().loss;
    f.run.final_loss = smoothed;
    return f;
}

diffusion::StableDiffusion load_with_adapter(const std::string& base, const std::string& adapter) {
    auto sd = diffusion::load_stable_diffusion(base, torch::kFloat);
    diffusion::load_sd_adapters(sd, adapter, false);
    return sd;
}

std::string lr_text(double lr) { return strprintf("%g", lr); }

struct Spread {
    double mean = 0, min = 0, max = 0;
};
Spread spread(const std::vector<double>& v) {
    Spread s;
    if (v.empty()) return s;
    s.min = *std::min_element(v.begin(), v.end());
    s.max = *std::max_element(v.begin(), v.end());
    for (double x : v) s.mean += x / static_cast<double>(v.size());
    return s;
}

json score_json(const SubjectScore& s) {
    return {{"images", s.images},
            {"subject", s.share(s.subject)},
            {"context", s.share(s.context)},
            {"subject_in_context", s.share(s.both)},
            {"class_kept", s.share(s.class_kept)},
            {"class_leak", s.share(s.class_leak)},
            {"instance_bar", s.instance_images == 0 ? 0.0 : static_cast<double>(s.instance_bar) / static_cast<double>(s.instance_images)}};
}

}  // namespace

SubjectDemoResult run_subject_demo(const SubjectDemoOptions& o) {
    if (o.seeds.empty()) throw Error("the subject demo needs at least one seed");
    if (o.hra_lrs.empty() || o.lora_lrs.empty()) throw Error("the subject demo needs at least one learning rate per method");
    if (o.instance_images < 1 || o.class_images < 1 || o.steps < 1) throw Error("the subject demo needs instance images, class images and steps");
    const auto& w = o.world;
    const auto t_start = std::chrono::steady_clock::now();
    const fs::path out(o.out);
    fs::create_directories(out);
    SubjectDemoResult result;

    // 1. The subject, its prompts and the split of its contexts.
    const Scene instance{1, diffusion::kSubjectShape, 1, 1, 1};  // a large green bar at the middle center
    std::vector<Scene> contexts;
    for (int colour = 0; colour < 6; ++colour)
        for (int cell = 0; cell < 9; ++cell) {
            const Scene s{colour, diffusion::kSubjectShape, cell / 3, cell % 3, 1};
            if (!(s == instance)) contexts.push_back(s);
        }
    {
        std::mt19937_64 rng(0);  // Fisher-Yates on the raw output (std::shuffle differs between standard libraries)
        for (size_t i = contexts.size() - 1; i > 0; --i) std::swap(contexts[i], contexts[static_cast<size_t>(rng() % (i + 1))]);
    }
    if (o.validation_prompts < 1 || o.validation_prompts >= static_cast<int64_t>(contexts.size()))
        throw Error("--validation-prompts must be 1 to " + std::to_string(contexts.size() - 1));
    const auto val = prompts_for({contexts.begin(), contexts.begin() + o.validation_prompts});
    auto test = prompts_for({contexts.begin() + o.validation_prompts, contexts.end()});
    const std::string instance_prompt = context_caption(instance, kSubjectNoun), class_prompt = context_caption(instance, kClassNoun);
    test.instance = instance;
    test.instance_prompt = instance_prompt;
    test.instance_images = 8;

    // 2. Pretrain the base model on the world without the subject.
    const fs::path data = out / "pretrain-images", configs = out / "model-config", instances = out / "instance-images",
                   classes = out / "class-images";
    for (const auto& d : {data, configs, instances, classes}) fs::remove_all(d);
    TrainResult base_run;
    std::string base = o.base;
    double base_seconds = 0;
    if (base.empty()) {
        write_pretraining_folder(w.image_size, w.renders_per_caption, data);
        write_world_model_configs(w, configs.string());
        say(strprintf("hra demo --subject: pretraining the base on the %d large scenes x %lld renders (full and class captions; no %s), %.1f min",
                      162, static_cast<long long>(w.renders_per_caption), kSubjectNoun, o.base_minutes));
        DiffusionDemoOptions pre = w;
        pre.train_minutes = o.base_minutes;
        pre.max_steps = o.base_max_steps;
        {
            ScopedLogLevel quiet(LogLevel::Warning);
            base_run = train(world_pretrain_options(pre, configs.string(), data.string(), (out / "base").string(), 0));
        }
        base = base_run.adapter_dir;
        for (const auto& h : base_run.history) base_seconds += h.ms / 1000.0;
    } else {
        say("hra demo --subject: the base model of an earlier run, " + base);
    }

    // 3. Instance images; class images from the base (the world's sampler), which the dreambooth task then reuses.
    fs::create_directories(instances);
    std::vector<torch::Tensor> instance_pixels;
    for (int64_t k = 0; k < o.instance_images; ++k) {
        instance_pixels.push_back(diffusion::render(instance, w.image_size, static_cast<uint64_t>(1000 + k)));
        io::write_png((instances / strprintf("instance-%02lld.png", static_cast<long long>(k))).string(), instance_pixels.back());
    }
    auto base_sd = diffusion::load_stable_diffusion(base, torch::kFloat);
    torch::Tensor class_pixels;
    {
        torch::NoGradGuard ng;
        class_pixels = generate_prompts(base_sd, std::vector<std::string>(static_cast<size_t>(o.class_images), class_prompt), w, 7);
    }
    fs::create_directories(classes);
    for (int64_t k = 0; k < o.class_images; ++k)
        io::write_png((classes / strprintf("class-%05lld.png", static_cast<long long>(k))).string(), class_pixels[k],
                      {{"prompt", class_prompt}, {"hra", "demo --subject class image (the base model, ddim)"}});

    // 4. Before: the base model on the test prompts.
    const auto before = sample(base_sd, test, w, 0, true);
    result.base = before.score;
    say(strprintf("base model (%lld steps, %.0f s): test prompts: bar %.3f, context %.3f, bar in context %.3f; class prompts kept %.3f",
                  static_cast<long long>(base_run.steps), base_seconds, before.score.share(before.score.subject),
                  before.score.share(before.score.context), before.score.share(before.score.both), before.score.share(before.score.class_kept)));

    // 5. Learning rates on the validation prompts (seed 0 of the list), then every seed at the chosen one.
    std::vector<Samples> first_samples;
    for (const std::string method : {"hra", "lora"}) {
        const auto& grid = method == "hra" ? o.hra_lrs : o.lora_lrs;
        auto& table = method == "hra" ? result.hra_grid : result.lora_grid;
        double best = -1, best_lr = grid.front();
        FineTuned best_run;
        for (double lr : grid) {
            auto f = fine_tune(o, method, lr, o.seeds.front(), base, instances.string(), classes.string(), instance_prompt, class_prompt,
                               out / (method + "-lr" + lr_text(lr) + "-seed" + std::to_string(o.seeds.front())));
            auto sd = load_with_adapter(base, f.adapter);
            const auto v = sample(sd, val, w, 1, false).score;
            const double got = v.share(v.both);
            table.emplace_back(lr_text(lr), got);
            say(strprintf("%s lr %g: validation bar in context %.3f (bar %.3f, context %.3f), loss %.4f, %.0f s", method.c_str(), lr, got,
                          v.share(v.subject), v.share(v.context), f.run.final_loss, f.run.train_seconds));
            if (got > best) best = got, best_lr = lr, best_run = f;
        }
        (method == "hra" ? result.hra_lr : result.lora_lr) = best_lr;
        if (best_lr == grid.front() || best_lr == grid.back())
            say(strprintf("warning: %s's chosen learning rate %g is at the edge of its grid", method.c_str(), best_lr));
        for (const auto seed : o.seeds) {
            auto f = seed == o.seeds.front() ? best_run
                                              : fine_tune(o, method, best_lr, seed, base, instances.string(), classes.string(), instance_prompt,
                                                          class_prompt, out / (method + "-lr" + lr_text(best_lr) + "-seed" + std::to_string(seed)));
            auto sd = load_with_adapter(base, f.adapter);
            auto s = sample(sd, test, w, 0, true);
            f.run.test = s.score;
            if (seed == o.seeds.front()) first_samples.push_back(s);
            say(strprintf("%s seed %llu (lr %g, %lld trainable): instance prompt bar %lld/%lld; test bar in context %.3f (bar %.3f, context %.3f); class prompts kept %.3f, bar %.3f",
                          method.c_str(), static_cast<unsigned long long>(seed), best_lr, static_cast<long long>(f.run.trainable),
                          static_cast<long long>(s.score.instance_bar), static_cast<long long>(s.score.instance_images),
                          s.score.share(s.score.both), s.score.share(s.score.subject), s.score.share(s.score.context),
                          s.score.share(s.score.class_kept), s.score.share(s.score.class_leak)));
            result.runs.push_back(f.run);
        }
    }
    const int64_t hra_params = result.runs.front().trainable, lora_params = result.runs.back().trainable;
    if (std::abs(hra_params - lora_params) * 20 > std::max(hra_params, lora_params))
        throw Error(strprintf("the subject demo compares budgets within 5%%, but HRA r %lld trains %lld parameters and LoRA r %lld %lld",
                              static_cast<long long>(o.hra_r), static_cast<long long>(hra_params), static_cast<long long>(o.lora_r),
                              static_cast<long long>(lora_params)));

    // 6. The grid: instance and class images; then base, HRA, LoRA (seed 0) on 8 test prompts, subject then class.
    {
        const int64_t cols = 8, k = std::min<int64_t>(cols, static_cast<int64_t>(test.contexts.size()));
        auto row = [&](const torch::Tensor& images) {
            auto r = torch::full({cols, w.image_size, w.image_size, 3}, 255, torch::kUInt8);
            r.slice(0, 0, std::min(cols, images.size(0))).copy_(images.slice(0, 0, std::min(cols, images.size(0))));
            return r;
        };
        const int64_t ni = std::min<int64_t>(4, o.instance_images), nc = std::min<int64_t>(cols - ni, o.class_images);
        std::vector<torch::Tensor> rows = {row(torch::cat({torch::stack(instance_pixels).slice(0, 0, ni), class_pixels.slice(0, 0, nc)}))};
        for (const Samples* s : std::initializer_list<const Samples*>{&before, &first_samples[0], &first_samples[1]}) rows.push_back(row(s->subject.slice(0, 0, k)));
        for (const Samples* s : std::initializer_list<const Samples*>{&before, &first_samples[0], &first_samples[1]}) rows.push_back(row(s->cls.slice(0, 0, k)));
        result.grid = (out / "subject-grid.png").string();
        io::write_png(result.grid, io::image_grid(torch::cat(rows), cols), {{"hra", "demo --subject"}});
        std::string legend = "row 1: " + std::to_string(ni) + " instance images (\"" + instance_prompt + "\"), " + std::to_string(nc) +
                             " class images (\"" + class_prompt + "\", made by the base)\n";
        legend += "rows 2-4: base, HRA, LoRA (seed " + std::to_string(o.seeds.front()) + ") on the test prompts; rows 5-7: the same on their class prompts\n";
        for (int64_t i = 0; i < k; ++i) legend += "column " + std::to_string(i + 1) + ": " + test.subject[static_cast<size_t>(i)] + "\n";
        io::write_file_atomically((out / "subject-grid.txt").string(), legend);
    }

    // 7. The table and its JSON line.
    const double chance = 1.0 / (4.0 * 6.0 * 9.0 * 2.0);
    std::string table = "\nhra demo --subject: DreamBooth on the shape world (" + std::to_string(w.image_size) + " px, pixel space), " +
                        std::to_string(o.steps) + " steps of batch 1 + 1 class image, prior loss weight 1\n";
    table += "subject \"" + std::string(kSubjectNoun) + "\": a bar the base never saw; instance prompt \"" + instance_prompt + "\"; " +
             std::to_string(test.contexts.size()) + " test prompts put it in other colours and cells (" +
             std::to_string(val.contexts.size()) + " more chose the learning rates)\n";
    std::string targets;
    for (const auto& t : o.targets) targets += (targets.empty() ? "" : ", ") + t;
    table += strprintf("HRA r %lld (%lld trainable parameters) and LoRA r %lld (%lld) on %s; sampler %s %lld steps, guidance %.1f\n\n",
                       static_cast<long long>(o.hra_r), static_cast<long long>(hra_params), static_cast<long long>(o.lora_r),
                       static_cast<long long>(lora_params), targets.c_str(), w.scheduler.c_str(),
                       static_cast<long long>(w.sample_steps), w.guidance);
    auto instance_share = [](const SubjectScore& s) {
        return s.instance_images == 0 ? 0.0 : static_cast<double>(s.instance_bar) / static_cast<double>(s.instance_images);
    };
    table += "model  lr       seed  loss             instance  bar    context  bar in context  class kept  class -> bar\n";
    auto line = [&](const std::string& name, const std::string& lr, const std::string& seed, const std::string& loss, const SubjectScore& s) {
        table += strprintf("%-5s  %-7s  %-4s  %-15s  %8.3f  %5.3f  %7.3f  %14.3f  %10.3f  %12.3f\n", name.c_str(), lr.c_str(), seed.c_str(),
                           loss.c_str(), instance_share(s), s.share(s.subject), s.share(s.context), s.share(s.both), s.share(s.class_kept),
                           s.share(s.class_leak));
    };
    line("base", "-", "-", "-", before.score);
    json methods = json::object();
    for (const std::string method : {"hra", "lora"}) {
        std::vector<double> both, subject, context, kept, leak, inst;
        json seeds = json::array();
        for (const auto& r : result.runs) {
            if (r.method != method) continue;
            line(method == "hra" ? "HRA" : "LoRA", lr_text(r.lr), std::to_string(r.seed), strprintf("%.4f -> %.4f", r.first_loss, r.final_loss), r.test);
            both.push_back(r.test.share(r.test.both)), subject.push_back(r.test.share(r.test.subject)), context.push_back(r.test.share(r.test.context));
            kept.push_back(r.test.share(r.test.class_kept)), leak.push_back(r.test.share(r.test.class_leak)), inst.push_back(instance_share(r.test));
            auto j = score_json(r.test);
            j["seed"] = r.seed;
            j["train_seconds"] = r.train_seconds;
            j["final_loss"] = r.final_loss;
            seeds.push_back(j);
        }
        const auto b = spread(both), s = spread(subject), c = spread(context), k = spread(kept), l = spread(leak), in = spread(inst);
        table += strprintf("%-5s  mean over %zu seeds        %8.3f  %5.3f  %7.3f  %.3f (%.3f-%.3f)  %10.3f  %12.3f\n", method == "hra" ? "HRA" : "LoRA",
                           both.size(), in.mean, s.mean, c.mean, b.mean, b.min, b.max, k.mean, l.mean);
        const auto& grid = method == "hra" ? result.hra_grid : result.lora_grid;
        json g = json::object();
        for (const auto& [lr, v] : grid) g[lr] = v;
        methods[method] = {{"lr", method == "hra" ? result.hra_lr : result.lora_lr},
                           {"r", method == "hra" ? o.hra_r : o.lora_r},
                           {"lr_grid_validation", g},
                           {"subject_in_context", b.mean},
                           {"subject_in_context_min", b.min},
                           {"subject_in_context_max", b.max},
                           {"subject", s.mean},
                           {"context", c.mean},
                           {"class_kept", k.mean},
                           {"class_leak", l.mean},
                           {"instance_bar", in.mean},
                           {"seeds", seeds}};
    }
    table += "\ninstance: of 8 images of the instance prompt itself, those with the bar in its context; on the test prompts, bar: the checker\n"
             "finds the subject's shape; context: colour, cell and size as the prompt asks; class kept: the class prompt (\"a large red shape\n"
             "at the top left\") still gives a captioned shape in its context; class -> bar: it gives the subject\n";
    auto grid_text = [](const std::vector<std::pair<std::string, double>>& g) {
        std::string s;
        for (const auto& [lr, v] : g) s += (s.empty() ? "" : ", ") + lr + ": " + strprintf("%.3f", v);
        return s;
    };
    table += "learning rates (validation bar in context, seed " + std::to_string(o.seeds.front()) + "): HRA " + grid_text(result.hra_grid) +
             "; LoRA " + grid_text(result.lora_grid) + "\n";
    table += strprintf("chance for bar in context: %.4f (1/432: 4 shapes x 6 colours x 9 cells x 2 sizes)\n", chance);
    table += "image grid: " + result.grid + " (legend in subject-grid.txt)\n";
    const double total = seconds_since(t_start);
    table += strprintf("base pretraining %lld steps in %.0f s; total %.0f s\n", static_cast<long long>(base_run.steps), base_seconds, total);
    result.json = {{"demo", "subject"},
                   {"base", score_json(before.score)},
                   {"hra", methods["hra"]},
                   {"lora", methods["lora"]},
                   {"trainable_params", {{"hra", hra_params}, {"lora", lora_params}}},
                   {"targets", o.targets},
                   {"steps", o.steps},
                   {"test_prompts", test.contexts.size()},
                   {"validation_prompts", val.contexts.size()},
                   {"instance_prompt", instance_prompt},
                   {"class_prompt", class_prompt},
                   {"chance", chance},
                   {"base_pretrain_steps", base_run.steps},
                   {"grid", result.grid},
                   {"total_seconds", total}};
    table += result.json.dump() + "\n";
    result.table = table;
    return result;
}

}  // namespace hra
