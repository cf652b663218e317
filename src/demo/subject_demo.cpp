#include "demo/subject_demo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <ATen/Parallel.h>
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

using demo_util::add_captioned;
using demo_util::generate_prompts;
using demo_util::lr_text;
using demo_util::spread;
using demo_util::say;
using demo_util::seconds_since;

// "\"a\", \"b\"" for the table and the grid's legend.
std::string quoted_list(const std::vector<std::string>& items) {
    std::vector<std::string> q;
    for (const auto& s : items) q.push_back("\"" + s + "\"");
    return join_names(q);
}

// "a large green {noun} at the middle center": the world's caption with `noun` for the shape word.
std::string context_caption(const Scene& s, const std::string& noun) {
    return "a " + diffusion::world_sizes().at(static_cast<size_t>(s.size)) + " " + diffusion::world_colours().at(static_cast<size_t>(s.colour)) +
           " " + noun + " at the " + diffusion::world_rows().at(static_cast<size_t>(s.row)) + " " +
           diffusion::world_cols().at(static_cast<size_t>(s.col));
}
// DreamBooth's rare identifier before the class noun ("a photo of sks dog"). "sks" is one CLIP token; the
// seed's "qwe" is two (q, we</w>). The demo's text encoder has no layers, so a word shifted by a position
// reads differently: the pretraining's full captions ("a large red circle shape at the top left") put the
// shape word where the identifier goes, and the subject prompt's context words sit where the base learnt them.
const char* kSubjectNoun = "sks shape";
const char* kClassNoun = "shape";

// Pretraining data: every large scene (the subject is large; small shapes
// would take the base longer to learn), `per` renders, captions alternating between
// the full caption with the class noun ("a large red circle shape at the top left") and the class caption
// ("a large red shape at the top left").
void write_pretraining_folder(int64_t size, int64_t per, const fs::path& dir) {
    fs::create_directories(dir);
    std::string meta;
    int64_t n = 0;
    for (const auto& s : diffusion::all_scenes())
        for (int64_t k = 0; k < per && s.size == 1; ++k, ++n) {
            const std::string text =
                k % 2 == 0 ? context_caption(s, diffusion::world_shapes().at(static_cast<size_t>(s.shape)) + " " + kClassNoun)
                           : context_caption(s, kClassNoun);
            add_captioned(dir, strprintf("%05lld.png", static_cast<long long>(n)), diffusion::render(s, size, static_cast<uint64_t>(n)), text,
                          meta);
        }
    io::write_file_atomically((dir / "metadata.jsonl").string(), meta);
}

struct Prompts {
    std::vector<Scene> contexts;  // the subject in each (shape kSubjectShape)
    std::vector<std::string> subject, cls;
    std::vector<Scene> instances;  // the training contexts, sampled `instance_images` times in turn with the class prompts
    std::vector<std::string> instance_prompts;
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
        std::vector<std::string> prompts;
        for (int64_t i = 0; i < p.instance_images; ++i) prompts.push_back(p.instance_prompts[static_cast<size_t>(i) % p.instances.size()]);
        const auto inst = generate_prompts(sd, prompts, w, seed + 500);
        for (int64_t i = 0; i < inst.size(0); ++i) {
            const auto r = diffusion::check_image(inst[i], true);
            ++sc.instance_images;
            sc.instance_bar += r.found && r.scene.shape == diffusion::kSubjectShape && context_of(r, p.instances[static_cast<size_t>(i) % p.instances.size()]);
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
                    const std::string& instances, const std::string& classes, const fs::path& out) {
    // The dreambooth task's defaults (the seed's run): constant lr, AdamW wd 1e-2, clip 1.0, batch 1 (+1 class image).
    TrainOptions t = demo_util::finetune_options("dreambooth", base, instances, out.string(), method, method == "hra" ? o.hra_r : o.lora_r,
                                                 o.targets, o.world.image_size, lr, seed, o.steps, 1, 1.0);
    // The prompts are the folders' captions (metadata.jsonl): each image its own context.
    t.class_data = classes;
    t.num_class_images = o.class_images;
    t.prior_loss_weight = 1.0;
    const auto q = demo_util::train_quietly(t);
    const TrainResult& r = q.result;
    FineTuned f;
    f.adapter = r.adapter_dir;
    f.run.method = method;
    f.run.seed = seed;
    f.run.lr = lr;
    f.run.trainable = r.result.at("config").at("task_config").at("trainable_params").get<int64_t>();
    f.run.train_seconds = q.losses.seconds;
    f.run.first_loss = q.losses.first;
    f.run.final_loss = q.losses.last;
    return f;
}

diffusion::StableDiffusion load_with_adapter(const std::string& base, const std::string& adapter) {
    auto sd = diffusion::load_stable_diffusion(base, torch::kFloat);
    diffusion::load_sd_adapters(sd, adapter, false);
    return sd;
}

json score_json(const SubjectScore& s) {
    return {{"images", s.images},
            {"subject", s.share(s.subject)},
            {"context", s.share(s.context)},
            {"subject_in_context", s.share(s.both)},
            {"class_kept", s.share(s.class_kept)},
            {"class_leak", s.share(s.class_leak)},
            {"instance_bar", s.instance_share()}};
}

}  // namespace

SubjectDemoResult run_subject_demo(const SubjectDemoOptions& o) {
    demo_util::check_seeds_and_grids("subject", o.seeds, o.hra_lrs, o.lora_lrs);
    if (o.instance_images < 1 || o.class_images < 1 || o.steps < 1) throw Error("the subject demo needs instance images, class images and steps");
    const auto& w = o.world;
    const auto t_start = std::chrono::steady_clock::now();
    const fs::path out(o.out);
    fs::create_directories(out);
    SubjectDemoResult result;

    // 1. The subject, its prompts and the split of its contexts. The instance contexts differ in colour, row and
    // column, as DreamBooth's photos show the subject in several settings; the test puts it in the others.
    const std::vector<Scene> all_instances = {{1, diffusion::kSubjectShape, 1, 1, 1}, {0, diffusion::kSubjectShape, 0, 0, 1},
                                              {2, diffusion::kSubjectShape, 2, 2, 1}, {3, diffusion::kSubjectShape, 0, 2, 1},
                                              {4, diffusion::kSubjectShape, 2, 0, 1}, {5, diffusion::kSubjectShape, 1, 0, 1}};
    if (o.instance_contexts < 1 || o.instance_contexts > static_cast<int64_t>(all_instances.size()) || o.instance_images < o.instance_contexts)
        throw Error(strprintf("--instance-contexts must be 1 to %zu and at most --instance-images", all_instances.size()));
    const std::vector<Scene> instance_scenes(all_instances.begin(), all_instances.begin() + o.instance_contexts);
    std::vector<Scene> contexts;
    for (int colour = 0; colour < 6; ++colour)
        for (int cell = 0; cell < 9; ++cell) {
            const Scene s{colour, diffusion::kSubjectShape, cell / 3, cell % 3, 1};
            if (std::find(instance_scenes.begin(), instance_scenes.end(), s) == instance_scenes.end()) contexts.push_back(s);
        }
    {
        std::mt19937_64 rng(0);  // Fisher-Yates on the raw output (std::shuffle differs between standard libraries)
        for (size_t i = contexts.size() - 1; i > 0; --i) std::swap(contexts[i], contexts[static_cast<size_t>(rng() % (i + 1))]);
    }
    if (o.validation_prompts < 1 || o.validation_prompts >= static_cast<int64_t>(contexts.size()))
        throw Error("--validation-prompts must be 1 to " + std::to_string(contexts.size() - 1));
    const auto val = prompts_for({contexts.begin(), contexts.begin() + o.validation_prompts});
    auto test = prompts_for({contexts.begin() + o.validation_prompts, contexts.end()});
    std::vector<std::string> instance_prompts, class_prompts;
    for (const auto& s : instance_scenes) instance_prompts.push_back(context_caption(s, kSubjectNoun)), class_prompts.push_back(context_caption(s, kClassNoun));
    test.instances = instance_scenes;
    test.instance_prompts = instance_prompts;
    test.instance_images = 8;
    const size_t K = instance_scenes.size();

    // 2. Pretrain the base model on the world without the subject.
    const fs::path data = out / "pretrain-images", configs = out / "model-config", instances = out / "instance-images",
                   classes = out / "class-images";
    for (const auto& d : {data, configs, instances, classes}) fs::remove_all(d);
    if (o.base.empty()) write_pretraining_folder(w.image_size, w.renders_per_caption, data);
    const auto base_model = demo_util::pretrain_world_base(
        o.base, w, o.base_max_steps, o.base_minutes, configs.string(), data.string(), (out / "base").string(),
        "hra demo --subject", strprintf("the %d large scenes x %lld renders (full and class captions; no %s)", 162,
                  static_cast<long long>(w.renders_per_caption), kSubjectNoun));
    const std::string& base = base_model.dir;

    // 3. Instance images; class images from the base (the world's sampler), which the dreambooth task then reuses.
    // Image k shows context k mod K; metadata.jsonl captions each with its context.
    fs::create_directories(instances);
    std::vector<torch::Tensor> instance_pixels;
    std::string instance_meta, class_meta;
    for (int64_t k = 0; k < o.instance_images; ++k) {
        const size_t c = static_cast<size_t>(k) % K;
        instance_pixels.push_back(diffusion::render(instance_scenes[c], w.image_size, static_cast<uint64_t>(1000 + k)));
        add_captioned(instances, strprintf("instance-%02lld.png", static_cast<long long>(k)), instance_pixels.back(), instance_prompts[c],
                      instance_meta);
    }
    io::write_file_atomically((instances / "metadata.jsonl").string(), instance_meta);
    auto base_sd = diffusion::load_stable_diffusion(base, torch::kFloat);
    std::vector<std::string> class_list;
    for (int64_t k = 0; k < o.class_images; ++k) class_list.push_back(class_prompts[static_cast<size_t>(k) % K]);
    torch::Tensor class_pixels;
    {
        torch::NoGradGuard ng;
        class_pixels = generate_prompts(base_sd, class_list, w, 7);
    }
    fs::create_directories(classes);
    for (int64_t k = 0; k < o.class_images; ++k) {
        const auto& text = class_list[static_cast<size_t>(k)];
        add_captioned(classes, strprintf("class-%05lld.png", static_cast<long long>(k)), class_pixels[k], text, class_meta,
                      {{"prompt", text}, {"hra", "demo --subject class image (the base model, ddim)"}});
    }
    io::write_file_atomically((classes / "metadata.jsonl").string(), class_meta);

    // 4. Before: the base model on the test prompts.
    const auto before = sample(base_sd, test, w, 0, true);
    result.base = before.score;
    say(strprintf("base model (%s): test prompts: bar %.3f, context %.3f, bar in context %.3f; class prompts kept %.3f",
                  o.base.empty() ? strprintf("%lld steps, %.0f s", static_cast<long long>(base_model.steps), base_model.seconds).c_str()
                                 : "an earlier run's",
                  before.score.share(before.score.subject),
                  before.score.share(before.score.context), before.score.share(before.score.both), before.score.share(before.score.class_kept)));

    // 5. Learning rates on the validation prompts (seed 0 of the list), then every seed at the chosen one. The runs
    // train side by side in child processes (demo_util::run_forked), one thread each; sampling runs here.
    auto train_all = [&](const std::vector<demo_util::RunSpec>& specs) {
        std::vector<demo_util::ForkedJob> jobs;
        for (const auto& sp : specs)
            jobs.push_back({sp.name(), (out / (sp.name() + ".result.json")).string(), [&o, sp, &base, &instances, &classes, &out]() {
                                const auto f = fine_tune(o, sp.method, sp.lr, sp.seed, base, instances.string(), classes.string(), out / sp.name());
                                return json{{"adapter", f.adapter}, {"trainable", f.run.trainable}, {"train_seconds", f.run.train_seconds},
                                            {"first_loss", f.run.first_loss}, {"final_loss", f.run.final_loss}};
                            }});
        const auto got = demo_util::run_forked(jobs, at::get_num_threads());
        std::vector<FineTuned> runs;
        for (size_t i = 0; i < specs.size(); ++i) {
            FineTuned f;
            f.run.method = specs[i].method, f.run.lr = specs[i].lr, f.run.seed = specs[i].seed;
            f.adapter = got[i].at("adapter").get<std::string>();
            f.run.trainable = got[i].at("trainable").get<int64_t>();
            f.run.train_seconds = got[i].at("train_seconds").get<double>();
            f.run.first_loss = got[i].at("first_loss").get<double>();
            f.run.final_loss = got[i].at("final_loss").get<double>();
            fs::remove(jobs[i].result_file);
            runs.push_back(f);
        }
        return runs;
    };
    auto validate = [&](const demo_util::RunSpec& sp, const FineTuned& f) {
        auto sd = load_with_adapter(base, f.adapter);
        const auto v = sample(sd, val, w, 1, false).score;
        say(strprintf("%s lr %g: validation bar in context %.3f (bar %.3f, context %.3f), loss %.4f, %.0f s", sp.method.c_str(), sp.lr,
                      v.share(v.both), v.share(v.subject), v.share(v.context), f.run.final_loss, f.run.train_seconds));
        return v.share(v.both);
    };
    const auto chosen = demo_util::choose_learning_rates<FineTuned>({{"hra", o.hra_lrs}, {"lora", o.lora_lrs}}, o.seeds, train_all, validate,
                                                                    "drew the subject in context");
    result.hra_lr = chosen[0].lr, result.hra_grid = chosen[0].grid, result.hra_lr_note = chosen[0].note;
    result.lora_lr = chosen[1].lr, result.lora_grid = chosen[1].grid, result.lora_lr_note = chosen[1].note;
    std::vector<Samples> first_samples;
    for (const auto& c : chosen) {
        for (auto f : c.runs) {
            auto sd = load_with_adapter(base, f.adapter);
            auto s = sample(sd, test, w, 0, true);
            f.run.test = s.score;
            if (f.run.seed == o.seeds.front()) first_samples.push_back(s);
            say(strprintf("%s seed %llu (lr %g, %lld trainable): instance prompt bar %lld/%lld; test bar in context %.3f (bar %.3f, context %.3f); class prompts kept %.3f, bar %.3f",
                          f.run.method.c_str(), static_cast<unsigned long long>(f.run.seed), f.run.lr, static_cast<long long>(f.run.trainable),
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
        std::string legend = "row 1: " + std::to_string(ni) + " instance images (" + quoted_list(instance_prompts) + "), " + std::to_string(nc) +
                             " class images (" + quoted_list(class_prompts) + ", made by the base)\n";
        legend += "rows 2-4: base, HRA, LoRA (seed " + std::to_string(o.seeds.front()) + ") on the test prompts; rows 5-7: the same on their class prompts\n";
        for (int64_t i = 0; i < k; ++i) legend += "column " + std::to_string(i + 1) + ": " + test.subject[static_cast<size_t>(i)] + "\n";
        io::write_file_atomically((out / "subject-grid.txt").string(), legend);
    }

    // 7. The table and its JSON line.
    const double chance = 1.0 / (4.0 * 6.0 * 9.0 * 2.0);
    std::string table = "\nhra demo --subject: DreamBooth on the shape world (" + std::to_string(w.image_size) + " px, pixel space), " +
                        std::to_string(o.steps) + " steps of batch 1 + 1 class image, prior loss weight 1\n";
    table += "subject \"" + std::string(kSubjectNoun) + "\": a bar the base never saw; " + std::to_string(o.instance_images) +
             " instance images in " + std::to_string(K) + " contexts (" + quoted_list(instance_prompts) + "); " +
             std::to_string(test.contexts.size()) + " test prompts put it in other colours and cells (" +
             std::to_string(val.contexts.size()) + " more chose the learning rates)\n";
    std::string targets;
    for (const auto& t : o.targets) targets += (targets.empty() ? "" : ", ") + t;
    table += strprintf("HRA r %lld (%lld trainable parameters) and LoRA r %lld (%lld) on %s; sampler %s %lld steps, guidance %.1f\n\n",
                       static_cast<long long>(o.hra_r), static_cast<long long>(hra_params), static_cast<long long>(o.lora_r),
                       static_cast<long long>(lora_params), targets.c_str(), w.scheduler.c_str(),
                       static_cast<long long>(w.sample_steps), w.guidance);
    table += "model  lr       seed  loss             instance  bar    context  bar in context  class kept  class -> bar\n";
    auto line = [&](const std::string& name, const std::string& lr, const std::string& seed, const std::string& loss, const SubjectScore& s) {
        table += strprintf("%-5s  %-7s  %-4s  %-15s  %8.3f  %5.3f  %7.3f  %14.3f  %10.3f  %12.3f\n", name.c_str(), lr.c_str(), seed.c_str(),
                           loss.c_str(), s.instance_share(), s.share(s.subject), s.share(s.context), s.share(s.both), s.share(s.class_kept),
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
            kept.push_back(r.test.share(r.test.class_kept)), leak.push_back(r.test.share(r.test.class_leak)), inst.push_back(r.test.instance_share());
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
        const auto& note = method == "hra" ? result.hra_lr_note : result.lora_lr_note;
        if (!note.empty()) table += std::string(method == "hra" ? "HRA" : "LoRA") + " learning rate: " + note + "\n";
        methods[method] = {{"lr", method == "hra" ? result.hra_lr : result.lora_lr},
                           {"lr_note", note},
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
    table += o.base.empty() ? strprintf("base pretraining %lld steps in %.0f s; total %.0f s\n", static_cast<long long>(base_model.steps), base_model.seconds, total)
                            : strprintf("base: an earlier run's (%s); total %.0f s\n", o.base.c_str(), total);
    result.json = {{"demo", "subject"},
                   {"base", score_json(before.score)},
                   {"hra", methods["hra"]},
                   {"lora", methods["lora"]},
                   {"trainable_params", {{"hra", hra_params}, {"lora", lora_params}}},
                   {"targets", o.targets},
                   {"steps", o.steps},
                   {"test_prompts", test.contexts.size()},
                   {"validation_prompts", val.contexts.size()},
                   {"instance_prompts", instance_prompts},
                   {"class_prompts", class_prompts},
                   {"chance", chance},
                   {"base_pretrain_steps", base_model.steps},
                   {"base_model", base},
                   {"grid", result.grid},
                   {"total_seconds", total}};
    table += result.json.dump() + "\n";
    result.table = table;
    return result;
}

}  // namespace hra
