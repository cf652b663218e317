// hra sd eval-subject: the subject-driven metrics over a folder of runs, with
// the seed's protocol or a strict one (DIFFUSION.md §3).
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "data/image.h"
#include "eval/subject.h"
#include "io/atomic_file.h"
#include "io/png.h"

namespace hra::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct SubjectOpts {
    std::string runs, real, dino, clip, lpips_vgg, lpips_lin = std::string(HRA_DATA_DIR) + "/lpips/vgg-v0.1-lin.safetensors";
    std::string prompts, protocol = "seed", out, sheet, token = "qwe";
    int64_t lpips_size = 512;
};

struct Run {
    std::string name, subject;
    int index = 0;
    std::map<int, std::vector<std::string>> epochs;  // epoch → generated images
    std::vector<eval::SubjectMetrics> scores;        // per epoch, in epoch order
    size_t chosen = 0;                               // index into epochs
};

std::vector<std::string> images_in(const fs::path& dir, bool png_only) {
    std::vector<std::string> out;
    if (!fs::is_directory(dir)) return out;
    for (const auto& e : fs::directory_iterator(dir)) {
        const auto ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".png" || (!png_only && (ext == ".jpg" || ext == ".jpeg" || ext == ".JPG"))))
            out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

std::vector<torch::Tensor> load_all(const std::vector<std::string>& files) {
    std::vector<torch::Tensor> out;
    for (const auto& f : files) out.push_back(data::load_rgb(f));
    return out;
}

json metrics_json(const eval::SubjectMetrics& m) {
    return {{"DINO", m.dino}, {"CLIP-I", m.clip_i}, {"CLIP-T", m.clip_t}, {"LPIPS", m.lpips}, {"real", m.real}, {"generated", m.generated}, {"skipped", m.skipped}};
}

eval::SubjectMetrics mean_of(const std::vector<const eval::SubjectMetrics*>& ms) {
    eval::SubjectMetrics out;
    for (const auto* m : ms) {
        out.dino += m->dino / static_cast<double>(ms.size());
        out.clip_i += m->clip_i / static_cast<double>(ms.size());
        out.clip_t += m->clip_t / static_cast<double>(ms.size());
        out.lpips += m->lpips / static_cast<double>(ms.size());
        out.real += m->real;
        out.generated += m->generated;
        out.skipped += m->skipped;
    }
    return out;
}

std::vector<Run> find_runs(const std::string& root, const eval::DreamBoothPrompts& prompts) {
    if (!fs::is_directory(root)) throw Error("no such folder", {root});
    const std::regex name_re(R"(^(.+)-(\d+)$)");
    std::vector<Run> runs;
    for (const auto& e : fs::directory_iterator(root)) {
        if (!e.is_directory()) continue;
        const std::string name = e.path().filename().string();
        std::smatch m;
        if (!std::regex_match(name, m, name_re))
            throw Error("a run folder is named SUBJECT-PROMPTINDEX (as the seed's logs), e.g. dog-3", {e.path().string()});
        Run r;
        r.name = name;
        r.subject = m[1];
        r.index = std::stoi(m[2]);
        prompts.class_of(r.subject);  // known subject, or an error
        for (const auto& ep : fs::directory_iterator(e.path())) {
            const std::string en = ep.path().filename().string();
            if (!ep.is_directory() || en.empty() || en.find_first_not_of("0123456789") != std::string::npos) continue;
            r.epochs[std::stoi(en)] = images_in(ep.path(), true);
        }
        if (r.epochs.empty()) throw Error("a run folder holds one folder of PNG images per epoch (0, 1, ...); none here", {e.path().string()});
        runs.push_back(std::move(r));
    }
    if (runs.empty()) throw Error("no run folders (SUBJECT-PROMPTINDEX/EPOCH/*.png)", {root});
    std::sort(runs.begin(), runs.end(), [](const Run& a, const Run& b) { return std::tie(a.subject, a.index) < std::tie(b.subject, b.index); });
    return runs;
}

}  // namespace

Command add_sd_eval_subject(CLI::App& sd) {
    auto* cmd = sd.add_subcommand("eval-subject", "DINO, CLIP-I, CLIP-T and LPIPS of DreamBooth runs (the seed's or a strict protocol)");
    auto o = std::make_shared<SubjectOpts>();
    cmd->add_option("--runs", o->runs, "folder of runs SUBJECT-PROMPTINDEX/EPOCH/*.png (the seed's log layout)")->required();
    cmd->add_option("--real", o->real, "folder of the subjects' photos, SUBJECT/*.jpg (the DreamBooth dataset layout)")->required();
    cmd->add_option("--dino", o->dino, "DINO ViT folder (facebook/dino-vits16) with preprocessor_config.json")->required();
    cmd->add_option("--clip", o->clip, "CLIPModel folder (openai/clip-vit-large-patch14) with preprocessor_config.json")->required();
    cmd->add_option("--lpips-vgg", o->lpips_vgg, "VGG16 trunk for LPIPS (torchvision's features.* names; safetensors or zip .pth)")->required();
    cmd->add_option("--lpips-lin", o->lpips_lin, "LPIPS lin weights (default: the bundled v0.1 VGG ones)");
    cmd->add_option("--lpips-size", o->lpips_size, "LPIPS squashes both images to this side (the seed: 512)")->capture_default_str();
    cmd->add_option("--prompts", o->prompts, "prompts_and_classes.txt (default: the bundled DreamBooth one)");
    cmd->add_option("--token", o->token, "the unique token in the prompts")->capture_default_str();
    cmd->add_option("--protocol", o->protocol,
                    "seed: CLIP-T prompts from the live list for every subject, epoch chosen per run on these metrics (get_result.py); "
                    "strict: each subject's own prompt list, epoch chosen per subject on the runs of prompts 0, 5, 10, 15, 20 and "
                    "reported on the other runs")
        ->capture_default_str()
        ->check(CLI::IsMember({"seed", "strict"}));
    cmd->add_option("--out", o->out, "JSON lines: one per run (every epoch's metrics, the chosen epoch), then the summary");
    cmd->add_option("--sheet", o->sheet, "contact sheet PNG: per run, a real photo and the chosen epoch's images");
    return {cmd, [o]() {
                const auto prompts = o->prompts.empty() ? eval::DreamBoothPrompts::bundled() : eval::DreamBoothPrompts::load(o->prompts);
                const bool seed = o->protocol == "seed";
                auto runs = find_runs(o->runs, prompts);
                eval::SubjectScorer scorer(o->dino, o->clip, o->lpips_vgg, o->lpips_lin, o->lpips_size);
                std::map<std::string, std::vector<torch::Tensor>> real;
                for (auto& r : runs) {
                    if (!real.count(r.subject)) {
                        const auto files = images_in(fs::path(o->real) / r.subject, false);
                        if (files.empty()) throw Error("no photos of subject '" + r.subject + "'", {(fs::path(o->real) / r.subject).string()});
                        real[r.subject] = load_all(files);
                    }
                    const auto prompt = prompts.prompt(r.subject, r.index, seed, o->token);
                    for (const auto& [epoch, files] : r.epochs) r.scores.push_back(scorer.score(real[r.subject], load_all(files), prompt));
                    log_info(strprintf("%s: %zu epochs scored (\"%s\")", r.name.c_str(), r.epochs.size(), prompt.c_str()));
                }
                // The epoch choice and which runs are reported.
                std::vector<const Run*> reported;
                if (seed) {
                    for (auto& r : runs) {
                        r.chosen = eval::seed_epoch_choice(r.scores);
                        reported.push_back(&r);
                    }
                } else {
                    std::map<std::string, std::vector<Run*>> by_subject;
                    for (auto& r : runs) by_subject[r.subject].push_back(&r);
                    for (auto& [subject, rs] : by_subject) {
                        std::vector<Run*> val, test;
                        for (auto* r : rs) (r->index % 5 == 0 ? val : test).push_back(r);
                        if (val.empty() || test.empty())
                            throw Error("--protocol strict needs runs of the validation prompts (0, 5, 10, 15, 20) and of the others for subject '" +
                                        subject + "'");
                        for (auto* r : rs)
                            if (r->epochs.size() != rs.front()->epochs.size() ||
                                !std::equal(r->epochs.begin(), r->epochs.end(), rs.front()->epochs.begin(),
                                            [](const auto& a, const auto& b) { return a.first == b.first; }))
                                throw Error("--protocol strict needs the same epochs in every run of subject '" + subject + "'", {r->name});
                        std::vector<eval::SubjectMetrics> per_epoch;
                        for (size_t e = 0; e < rs.front()->scores.size(); ++e) {
                            std::vector<const eval::SubjectMetrics*> ms;
                            for (auto* r : val) ms.push_back(&r->scores[e]);
                            per_epoch.push_back(mean_of(ms));
                        }
                        const size_t chosen = eval::seed_epoch_choice(per_epoch);
                        for (auto* r : rs) r->chosen = chosen;
                        for (auto* r : test) reported.push_back(r);
                    }
                }
                std::string lines;
                std::vector<const eval::SubjectMetrics*> at_chosen;
                for (const auto& r : runs) {
                    json epochs = json::array();
                    size_t i = 0;
                    for (const auto& [epoch, files] : r.epochs) {
                        auto j = metrics_json(r.scores[i++]);
                        j["epoch"] = epoch;
                        epochs.push_back(j);
                    }
                    const bool rep = std::find(reported.begin(), reported.end(), &r) != reported.end();
                    lines += json{{"run", r.name}, {"subject", r.subject}, {"prompt_index", r.index},
                                  {"prompt", prompts.prompt(r.subject, r.index, seed, o->token)}, {"epochs", epochs},
                                  {"chosen_epoch", std::next(r.epochs.begin(), static_cast<long>(r.chosen))->first}, {"reported", rep}}
                                 .dump() +
                             "\n";
                    if (rep) at_chosen.push_back(&r.scores[r.chosen]);
                }
                const auto mean = mean_of(at_chosen);
                json summary = metrics_json(mean);
                summary["protocol"] = o->protocol;
                summary["runs_reported"] = at_chosen.size();
                summary["runs"] = runs.size();
                if (!o->out.empty()) io::write_file_atomically(o->out, lines + summary.dump() + "\n");
                if (!o->sheet.empty()) {
                    constexpr int64_t kSide = 128, kCols = 5;
                    std::vector<torch::Tensor> cells;
                    for (const auto& r : runs) {
                        cells.push_back(data::resize(real[r.subject].front(), kSide, kSide, data::Resample::Bilinear));
                        const auto& files = std::next(r.epochs.begin(), static_cast<long>(r.chosen))->second;
                        for (int64_t k = 0; k + 1 < kCols; ++k)
                            cells.push_back(k < static_cast<int64_t>(files.size())
                                                ? data::resize(data::load_rgb(files[static_cast<size_t>(k)]), kSide, kSide, data::Resample::Bilinear)
                                                : torch::full({kSide, kSide, 3}, 128, torch::kUInt8));
                    }
                    io::write_png(o->sheet, io::image_grid(torch::stack(cells), kCols),
                                  {{"hra", "sd eval-subject: per run, a real photo then the chosen epoch's images"}});
                }
                std::printf("%-9s %6s %8s %8s %8s %8s\n", "protocol", "runs", "DINO", "CLIP-I", "CLIP-T", "LPIPS");
                std::printf("%-9s %6zu %8.4f %8.4f %8.4f %8.4f\n", o->protocol.c_str(), at_chosen.size(), mean.dino, mean.clip_i, mean.clip_t,
                            mean.lpips);
                std::printf("%s\n", summary.dump().c_str());
                return 0;
            }};
}

}  // namespace hra::cli
