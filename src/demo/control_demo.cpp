#include "demo/control_demo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "data/canny.h"
#include "demo/demo_util.h"
#include "diffusion/pipeline.h"
#include "diffusion/shape_world.h"
#include "eval/control_metrics.h"
#include "io/atomic_file.h"
#include "io/png.h"
#include "models/hint_encoder.h"
#include "train/engine.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;
using diffusion::Scene;

namespace {

using demo_util::add_captioned;
using demo_util::generate_prompts;
using demo_util::lr_text;
using demo_util::say;
using demo_util::seconds_since;
using demo_util::spread;

// What the edges show: a scene without its colour.
struct Layout {
    int shape = 0, row = 0, col = 0, size = 0;
    Scene in(int colour) const { return {colour, shape, row, col, size}; }
};

std::string colour_prompt(int colour) { return "a " + diffusion::world_colours().at(static_cast<size_t>(colour)) + " shape"; }

// "large circle top left": how the JSON names a layout.
std::string layout_text(const Layout& l) {
    return diffusion::world_sizes().at(static_cast<size_t>(l.size)) + " " + diffusion::world_shapes().at(static_cast<size_t>(l.shape)) + " " +
           diffusion::world_rows().at(static_cast<size_t>(l.row)) + " " + diffusion::world_cols().at(static_cast<size_t>(l.col));
}

// Pretraining data: every scene, `per` renders, captions alternating between the full caption and the colour alone.
void write_pretraining_folder(int64_t size, int64_t per, const fs::path& dir) {
    fs::create_directories(dir);
    std::string meta;
    int64_t n = 0;
    for (const auto& s : diffusion::all_scenes())
        for (int64_t k = 0; k < per; ++k, ++n)
            add_captioned(dir, strprintf("%05lld.png", static_cast<long long>(n)), diffusion::render(s, size, static_cast<uint64_t>(n)),
                          k % 2 == 0 ? diffusion::caption(s) : colour_prompt(s.colour), meta);
    io::write_file_atomically((dir / "metadata.jsonl").string(), meta);
}

// One condition: the render it was taken from (the ground truth), its Canny map, the prompt.
struct Item {
    Scene scene;
    torch::Tensor truth, edges;  // uint8 [S, S, 3], [S, S]
    std::string prompt;
};

Item make_item(const Scene& s, int64_t size, uint64_t jitter) {
    Item it;
    it.scene = s;
    it.truth = diffusion::render(s, size, jitter);
    it.edges = data::canny(it.truth);
    it.prompt = colour_prompt(s.colour);
    return it;
}

// The seed's hint: the condition's RGB / 255 (a Canny map repeated over the channels) through the encoder.
torch::Tensor encode_hints(HintEncoder& enc, const std::vector<Item>& items) {
    std::vector<torch::Tensor> maps;
    for (const auto& it : items) maps.push_back(it.edges);
    torch::NoGradGuard ng;
    enc->eval();
    const auto x = torch::stack(maps).unsqueeze(1).expand({-1, 3, -1, -1}).to(torch::kFloat).div(255.0);
    return enc->forward(x);
}

struct Sampled {
    ControlScore score;
    torch::Tensor images;  // uint8 [N, S, S, 3]
};

// Generates one image per item (with the encoded hint when `enc` is given) and scores it against its ground truth.
Sampled sample(diffusion::StableDiffusion& sd, HintEncoder* enc, const std::vector<Item>& items, const DiffusionDemoOptions& w, uint64_t seed) {
    Sampled out;
    std::vector<std::string> prompts;
    for (const auto& it : items) prompts.push_back(it.prompt);
    {
        torch::NoGradGuard ng;
        out.images = generate_prompts(sd, prompts, w, seed, enc ? encode_hints(*enc, items) : torch::Tensor());
    }
    eval::EdgeMeans c2i;
    auto& s = out.score;
    for (size_t i = 0; i < items.size(); ++i) {
        const auto& want = items[i].scene;
        const auto img = out.images[static_cast<int64_t>(i)];
        c2i.add(items[i].truth, img);
        const auto r = diffusion::check_image(img);
        const bool layout = r.found && r.scene.shape == want.shape && r.scene.row == want.row && r.scene.col == want.col && r.scene.size == want.size;
        const bool colour = r.found && r.scene.colour == want.colour;
        ++s.images;
        s.layout += layout;
        s.colour += colour;
        s.both += layout && colour;
    }
    const auto e = c2i.result();
    s.f1 = e.f1;
    s.iou = e.iou;
    s.undefined = e.undefined;
    return out;
}

struct FineTuned {
    ControlRun run;
    std::string checkpoint;  // the PEFT adapter and hint_encoder.safetensors
};

FineTuned fine_tune(const ControlDemoOptions& o, const std::string& method, double lr, uint64_t seed, const std::string& base,
                    const std::string& pairs, const fs::path& out) {
    // The control task's defaults (the seed's run) but the learning rate: constant, AdamW wd 1e-2, no clipping.
    const auto q = demo_util::train_quietly(demo_util::finetune_options("control", base, pairs, out.string(), method,
                                                                        method == "hra" ? o.hra_r : o.lora_r, control_adapter_targets(),
                                                                        o.world.image_size, lr, seed, o.steps, o.batch_size, 0));
    const TrainResult& r = q.result;
    FineTuned f;
    f.checkpoint = r.adapter_dir;
    f.run.method = method;
    f.run.seed = seed;
    f.run.lr = lr;
    const auto& tc = r.result.at("config").at("task_config");
    f.run.hint_params = tc.at("hint_encoder_params").get<int64_t>();
    f.run.adapter_params = tc.at("trainable_params").get<int64_t>() - f.run.hint_params;
    f.run.train_seconds = q.losses.seconds;
    f.run.first_loss = q.losses.first;
    f.run.final_loss = q.losses.last;
    return f;
}

Sampled sample_checkpoint(const std::string& base, const std::string& checkpoint, const std::vector<Item>& items, const DiffusionDemoOptions& w,
                          uint64_t seed) {
    auto sd = diffusion::load_stable_diffusion(base, torch::kFloat);
    diffusion::load_sd_adapters(sd, checkpoint, false);
    auto enc = load_hint_encoder(checkpoint);
    return sample(sd, &enc, items, w, seed);
}

std::vector<std::string> layout_names(const std::vector<Layout>& ls) {
    std::vector<std::string> out;
    for (const auto& l : ls) out.push_back(layout_text(l));
    return out;
}

json score_json(const ControlScore& s) {
    return {{"images", s.images},         {"edge_f1", s.f1},          {"edge_iou", s.iou},
            {"undefined", s.undefined},   {"layout", s.share(s.layout)}, {"colour", s.share(s.colour)},
            {"layout_and_colour", s.share(s.both)}};
}

}  // namespace

ControlDemoResult run_control_demo(const ControlDemoOptions& o) {
    demo_util::check_seeds_and_grids("control", o.seeds, o.hra_lrs, o.lora_lrs);
    if (o.steps < 1 || o.renders < 1 || o.batch_size < 1) throw Error("the control demo needs steps, renders and a batch size");
    const auto& w = o.world;
    const auto t_start = std::chrono::steady_clock::now();
    const fs::path out(o.out);
    fs::create_directories(out);
    ControlDemoResult result;

    // 1. The 54 layouts, split once (Fisher-Yates on the raw output: std::shuffle differs between standard libraries).
    std::vector<Layout> layouts;
    for (int shape = 0; shape < 3; ++shape)
        for (int cell = 0; cell < 9; ++cell)
            for (int size = 0; size < 2; ++size) layouts.push_back({shape, cell / 3, cell % 3, size});
    {
        std::mt19937_64 rng(0);
        for (size_t i = layouts.size() - 1; i > 0; --i) std::swap(layouts[i], layouts[static_cast<size_t>(rng() % (i + 1))]);
    }
    const std::vector<Layout> test_layouts(layouts.begin(), layouts.begin() + 12), val_layouts(layouts.begin() + 12, layouts.begin() + 18),
        train_layouts(layouts.begin() + 18, layouts.end());
    std::vector<Item> test, val;
    for (size_t i = 0; i < test_layouts.size(); ++i)
        for (int c = 0; c < 6; ++c) test.push_back(make_item(test_layouts[i].in(c), w.image_size, 50000 + test.size()));
    for (size_t i = 0; i < val_layouts.size(); ++i)
        for (int c = 0; c < 6; c += 2) val.push_back(make_item(val_layouts[i].in((c + static_cast<int>(i)) % 6), w.image_size, 60000 + val.size()));

    // 2. The control pairs: training layouts in every colour, `renders` jittered renders each; the task takes Canny of the target.
    const fs::path data = out / "pretrain-images", configs = out / "model-config", pairs = out / "control-pairs";
    for (const auto& d : {data, configs, pairs}) fs::remove_all(d);
    fs::create_directories(pairs / "target");
    {
        std::string lines;
        int64_t n = 0;
        for (const auto& l : train_layouts)
            for (int c = 0; c < 6; ++c)
                for (int64_t k = 0; k < o.renders; ++k, ++n) {
                    const std::string name = strprintf("target/%05lld.png", static_cast<long long>(n));
                    io::write_png((pairs / name).string(), diffusion::render(l.in(c), w.image_size, static_cast<uint64_t>(20000 + n)));
                    lines += json{{"target", name}, {"prompt", colour_prompt(c)}}.dump() + "\n";
                }
        io::write_file_atomically((pairs / "prompt.json").string(), lines);
    }

    // 3. The base model.
    if (o.base.empty()) write_pretraining_folder(w.image_size, w.renders_per_caption, data);
    const auto base_model = demo_util::pretrain_world_base(
        o.base, w, o.base_max_steps, o.base_minutes, configs.string(), data.string(), (out / "base").string(), "hra demo --control",
        strprintf("the 324 scenes x %lld renders (full and colour captions)", static_cast<long long>(w.renders_per_caption)));
    const std::string& base = base_model.dir;

    // 4. Before: the base model (a fresh hint encoder adds zeros) on the test conditions.
    Sampled before;
    {
        auto sd = diffusion::load_stable_diffusion(base, torch::kFloat);
        before = sample(sd, nullptr, test, w, 0);
    }
    result.base = before.score;
    say(strprintf("base model: test edge F1 %.3f, layout %.3f, colour %.3f", before.score.f1, before.score.share(before.score.layout),
                  before.score.share(before.score.colour)));

    // 5. Learning rates on the validation layouts (the first seed), then every seed at the chosen one.
    auto train_all = [&](const std::vector<demo_util::RunSpec>& specs) {
        std::vector<FineTuned> runs;
        for (const auto& sp : specs) runs.push_back(fine_tune(o, sp.method, sp.lr, sp.seed, base, pairs.string(), out / sp.name()));
        return runs;
    };
    auto validate = [&](const demo_util::RunSpec& sp, const FineTuned& f) {
        const auto v = sample_checkpoint(base, f.checkpoint, val, w, 1).score;
        const double got = std::isfinite(v.f1) ? v.f1 : 0.0;
        say(strprintf("%s lr %g: validation edge F1 %.3f (layout %.3f), loss %.4f, %.0f s", sp.method.c_str(), sp.lr, got, v.share(v.layout),
                      f.run.final_loss, f.run.train_seconds));
        return got;
    };
    const auto chosen =
        demo_util::choose_learning_rates<FineTuned>({{"hra", o.hra_lrs}, {"lora", o.lora_lrs}}, o.seeds, train_all, validate, "gave edges");
    result.hra_lr = chosen[0].lr, result.hra_grid = chosen[0].grid, result.hra_lr_note = chosen[0].note;
    result.lora_lr = chosen[1].lr, result.lora_grid = chosen[1].grid, result.lora_lr_note = chosen[1].note;
    std::vector<Sampled> first_samples;
    for (const auto& c : chosen) {
        for (auto f : c.runs) {
            auto s = sample_checkpoint(base, f.checkpoint, test, w, 0);
            f.run.test = s.score;
            if (f.run.seed == o.seeds.front()) first_samples.push_back(s);
            say(strprintf("%s seed %llu (lr %g, %lld adapter + %lld hint encoder parameters): test edge F1 %.3f, IoU %.3f, layout %.3f, colour %.3f",
                          f.run.method.c_str(), static_cast<unsigned long long>(f.run.seed), f.run.lr, static_cast<long long>(f.run.adapter_params),
                          static_cast<long long>(f.run.hint_params), s.score.f1, s.score.iou, s.score.share(s.score.layout),
                          s.score.share(s.score.colour)));
            result.runs.push_back(f.run);
        }
    }
    const int64_t hra_params = result.runs.front().adapter_params, lora_params = result.runs.back().adapter_params,
                  hint_params = result.runs.front().hint_params;

    // 6. The grid: 8 test conditions (one per layout, colours in turn): condition, ground truth, base, HRA, LoRA (first seed).
    {
        const int64_t cols = 8;
        std::vector<int64_t> pick;
        for (int64_t i = 0; i < cols && i < static_cast<int64_t>(test_layouts.size()); ++i) pick.push_back(i * 6 + i % 6);
        const auto index = torch::tensor(pick);
        std::vector<torch::Tensor> conditions, truths;
        for (auto i : pick) {
            conditions.push_back(test[static_cast<size_t>(i)].edges.unsqueeze(2).expand({-1, -1, 3}));
            truths.push_back(test[static_cast<size_t>(i)].truth);
        }
        std::vector<torch::Tensor> rows = {torch::stack(conditions), torch::stack(truths), before.images.index_select(0, index),
                                           first_samples[0].images.index_select(0, index), first_samples[1].images.index_select(0, index)};
        result.grid = (out / "control-grid.png").string();
        io::write_png(result.grid, io::image_grid(torch::cat(rows).contiguous(), static_cast<int64_t>(pick.size())), {{"hra", "demo --control"}});
        std::string legend = "rows: the condition (Canny of the ground truth), the ground truth, the base model (zero hint), HRA, LoRA (seed " +
                             std::to_string(o.seeds.front()) + ")\n";
        for (size_t k = 0; k < pick.size(); ++k) {
            const auto& it = test[static_cast<size_t>(pick[k])];
            legend += "column " + std::to_string(k + 1) + ": \"" + it.prompt + "\", edges of a " + diffusion::caption(it.scene).substr(2) + "\n";
        }
        io::write_file_atomically((out / "control-grid.txt").string(), legend);
    }

    // 7. The table and its JSON line.
    std::string table = "\nhra demo --control: canny -> image on the shape world (" + std::to_string(w.image_size) + " px, pixel space), " +
                        std::to_string(o.steps) + " steps of batch " + std::to_string(o.batch_size) + " per run\n";
    table += strprintf("condition: Canny(100, 200) of a render; prompt: its colour alone (\"a red shape\"). Control pairs show %zu of the 54 layouts "
                       "(shape x cell x size) in every colour; %zu layouts chose the learning rates; the %zu test conditions are the other %zu layouts "
                       "in every colour\n",
                       train_layouts.size(), val_layouts.size(), test.size(), test_layouts.size());
    table += strprintf("both methods train the same hint encoder (%lld parameters) with adapters on to_q, to_k, to_v, to_out.0, ff.net.0.proj: "
                       "HRA r %lld (%lld parameters), LoRA r %lld (%lld); sampler %s %lld steps, guidance %.1f\n\n",
                       static_cast<long long>(hint_params), static_cast<long long>(o.hra_r), static_cast<long long>(hra_params),
                       static_cast<long long>(o.lora_r), static_cast<long long>(lora_params), w.scheduler.c_str(),
                       static_cast<long long>(w.sample_steps), w.guidance);
    table += "model  lr       seed  loss             edge F1  edge IoU  layout  colour  both\n";
    auto line = [&](const std::string& name, const std::string& lr, const std::string& seed, const std::string& loss, const ControlScore& s) {
        table += strprintf("%-5s  %-7s  %-4s  %-15s  %7.3f  %8.3f  %6.3f  %6.3f  %5.3f\n", name.c_str(), lr.c_str(), seed.c_str(), loss.c_str(), s.f1,
                           s.iou, s.share(s.layout), s.share(s.colour), s.share(s.both));
    };
    line("base", "-", "-", "-", before.score);
    json methods = json::object();
    for (const std::string method : {"hra", "lora"}) {
        std::vector<double> f1, iou, layout, colour, both;
        json seeds = json::array();
        for (const auto& r : result.runs) {
            if (r.method != method) continue;
            line(method == "hra" ? "HRA" : "LoRA", lr_text(r.lr), std::to_string(r.seed), strprintf("%.4f -> %.4f", r.first_loss, r.final_loss), r.test);
            f1.push_back(r.test.f1), iou.push_back(r.test.iou), layout.push_back(r.test.share(r.test.layout));
            colour.push_back(r.test.share(r.test.colour)), both.push_back(r.test.share(r.test.both));
            auto j = score_json(r.test);
            j["seed"] = r.seed;
            j["train_seconds"] = r.train_seconds;
            j["final_loss"] = r.final_loss;
            seeds.push_back(j);
        }
        const auto f = spread(f1), i = spread(iou), l = spread(layout), c = spread(colour), b = spread(both);
        table += strprintf("%-5s  mean over %zu seeds (min-max)  %.3f (%.3f-%.3f)  %8.3f  %6.3f  %6.3f  %5.3f\n", method == "hra" ? "HRA" : "LoRA",
                           f1.size(), f.mean, f.min, f.max, i.mean, l.mean, c.mean, b.mean);
        const auto& grid = method == "hra" ? result.hra_grid : result.lora_grid;
        json g = json::object();
        for (const auto& [lr, v] : grid) g[lr] = v;
        const auto& note = method == "hra" ? result.hra_lr_note : result.lora_lr_note;
        if (!note.empty()) table += std::string(method == "hra" ? "HRA" : "LoRA") + " learning rate: " + note + "\n";
        methods[method] = {{"lr", method == "hra" ? result.hra_lr : result.lora_lr},
                           {"lr_note", note},
                           {"r", method == "hra" ? o.hra_r : o.lora_r},
                           {"adapter_params", method == "hra" ? hra_params : lora_params},
                           {"lr_grid_validation_edge_f1", g},
                           {"edge_f1", f.mean},
                           {"edge_f1_min", f.min},
                           {"edge_f1_max", f.max},
                           {"edge_iou", i.mean},
                           {"layout", l.mean},
                           {"colour", c.mean},
                           {"layout_and_colour", b.mean},
                           {"seeds", seeds}};
    }
    // Chance for the checker's reading: a random layout (1/54) and colour (1/6).
    const double chance_layout = 1.0 / 54.0, chance_colour = 1.0 / 6.0;
    table += "\nedge F1 / IoU: C2I, Canny(100, 200) of output and ground truth compared pixel by pixel (the seed's eval_canny.py), "
             "averaged over the test conditions;\nlayout: the checker reads the condition's shape, cell and size from the output; colour: the "
             "prompt's colour; both: all five\n";
    auto grid_text = [](const std::vector<std::pair<std::string, double>>& g) {
        std::string s;
        for (const auto& [lr, v] : g) s += (s.empty() ? "" : ", ") + lr + ": " + strprintf("%.3f", v);
        return s;
    };
    table += "learning rates (validation edge F1, seed " + std::to_string(o.seeds.front()) + "): HRA " + grid_text(result.hra_grid) + "; LoRA " +
             grid_text(result.lora_grid) + "\n";
    table += strprintf("chance: layout %.4f (1/54), colour %.3f (1/6)\n", chance_layout, chance_colour);
    table += "image grid: " + result.grid + " (legend in control-grid.txt)\n";
    const double total = seconds_since(t_start);
    table += o.base.empty() ? strprintf("base pretraining %lld steps in %.0f s; total %.0f s\n", static_cast<long long>(base_model.steps), base_model.seconds, total)
                            : strprintf("base: an earlier run's (%s); total %.0f s\n", o.base.c_str(), total);
    result.json = {{"demo", "control"},
                   {"base", score_json(before.score)},
                   {"hra", methods["hra"]},
                   {"lora", methods["lora"]},
                   {"hint_encoder_params", hint_params},
                   {"steps", o.steps},
                   {"batch_size", o.batch_size},
                   {"test_conditions", test.size()},
                   {"test_layouts", layout_names(test_layouts)},
                   {"validation_layouts", layout_names(val_layouts)},
                   {"validation_conditions", val.size()},
                   {"train_pairs", train_layouts.size() * 6 * static_cast<size_t>(o.renders)},
                   {"chance_layout", chance_layout},
                   {"chance_colour", chance_colour},
                   {"base_pretrain_steps", base_model.steps},
                   {"base_model", base},
                   {"grid", result.grid},
                   {"total_seconds", total}};
    table += result.json.dump() + "\n";
    result.table = table;
    return result;
}

}  // namespace hra
