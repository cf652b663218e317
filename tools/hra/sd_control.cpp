// hra sd eval-control: the control experiment's metrics (DIFFUSION.md §4) over
// folders of images, label maps or landmark files paired by file name.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "common/error.h"
#include "data/image.h"
#include "eval/control_metrics.h"
#include "io/atomic_file.h"
#include "io/png.h"

namespace hra::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct ControlOpts {
    std::string metric, truth, outputs, out;
    int64_t classes = 150;
    bool keep_zero_label = false;
    double truth_scale = 0.5;
};

// Image files of a folder by name (PNG, JPEG), sorted.
std::vector<std::string> image_names(const std::string& dir) {
    if (!fs::is_directory(dir)) throw Error("not a folder", {dir});
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) {
        if (!e.is_regular_file()) continue;
        auto ext = e.path().extension().string();
        for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        if (ext == ".png" || ext == ".jpg" || ext == ".jpeg") names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    if (names.empty()) throw Error("no PNG or JPEG files", {dir});
    return names;
}

// Every output's counterpart in the truth folder, by file name.
std::vector<std::string> paired(const std::string& truth, const std::string& outputs) {
    const auto out = image_names(outputs);
    const auto t = image_names(truth);
    const std::set<std::string> have(t.begin(), t.end());
    for (const auto& n : out)
        if (!have.count(n)) throw Error("no ground truth of the same name for this output", {(fs::path(outputs) / n).string()});
    return out;
}

// An 8-bit grey PNG's values (a label map).
torch::Tensor label_map(const std::string& path) {
    const auto png = io::read_png(path);
    // 16-bit maps would lose their high byte and 1-4 bit ones be rescaled by the expansion to 8 bits: refused, not guessed.
    if (png.bit_depth != 8)
        throw Error("a label map must be an 8-bit grey PNG holding class indices (this one has " + std::to_string(png.bit_depth) +
                        " bits per channel; save the class indices as 8-bit grey)",
                    {path});
    const auto& img = png.pixels;
    if (img.size(2) != 1)
        throw Error("a label map must be an 8-bit grey PNG holding class indices (got " + std::to_string(img.size(2)) +
                        " channels; a palette PNG's indices must be saved as grey)",
                    {path});
    return img.squeeze(2);
}

}  // namespace

Command add_sd_eval_control(CLI::App& sd) {
    auto* cmd = sd.add_subcommand("eval-control", "C2I edge IoU/F1, S2I mIoU/mAcc/aAcc or L2F landmark error of control outputs");
    auto o = std::make_shared<ControlOpts>();
    cmd->add_option("--metric", o->metric,
                    "c2i: OpenCV Canny(100, 200) of ground-truth and output images (PNG/JPEG, same names), per-image IoU and F1; "
                    "s2i: 8-bit grey label maps, truth as the dataset stores it (ADE20K: 0 other, 1-150) and the segmenter's "
                    "predictions (class indices 0-149) of the outputs, same names; "
                    "l2f: JSON landmark files {\"image\": [[x, y] x 68] or null}")
        ->required()
        ->check(CLI::IsMember({"c2i", "s2i", "l2f"}));
    cmd->add_option("--truth", o->truth, "ground truth: a folder (c2i, s2i) or a JSON file (l2f)")->required();
    cmd->add_option("--outputs", o->outputs, "generated images (c2i), predicted label maps (s2i), or detected landmarks (l2f)")->required();
    cmd->add_option("--classes", o->classes, "s2i: number of classes (ADE20K: 150)")->capture_default_str();
    cmd->add_flag("--keep-zero-label", o->keep_zero_label, "s2i: truth labels are class indices already (no reduce_zero_label)");
    cmd->add_option("--truth-scale", o->truth_scale, "l2f: factor on the truth's coordinates (the seed: 0.5, landmarks of 1024-px images)")
        ->capture_default_str();
    cmd->add_option("--out", o->out, "write the result JSON here too");
    return {cmd, [o]() {
                json r = {{"metric", o->metric}};
                if (o->metric == "c2i") {
                    eval::EdgeMeans means;  // pair by pair: a large folder is never held in memory
                    for (const auto& n : paired(o->truth, o->outputs)) {
                        const auto t = data::load_rgb((fs::path(o->truth) / n).string());
                        const auto g = data::load_rgb((fs::path(o->outputs) / n).string());
                        if (t.sizes() != g.sizes())
                            throw Error("output is " + c10::str(g.sizes()) + " but its ground truth is " + c10::str(t.sizes()),
                                        {(fs::path(o->outputs) / n).string()});
                        means.add(t, g);
                    }
                    const auto s = means.result();
                    r.update({{"iou", s.iou}, {"f1", s.f1}, {"images", s.images}, {"no_edges", s.undefined}});
                    std::printf("%-8s %8s %8s %10s\n", "images", "IoU", "F1", "no edges");
                    std::printf("%-8lld %8.4f %8.4f %10lld\n", static_cast<long long>(s.images), s.iou, s.f1,
                                static_cast<long long>(s.undefined));
                } else if (o->metric == "s2i") {
                    eval::SegmentationScore score(o->classes, !o->keep_zero_label);
                    for (const auto& n : paired(o->truth, o->outputs)) {
                        const auto p = (fs::path(o->outputs) / n).string();
                        const auto pred = label_map(p), truth = label_map((fs::path(o->truth) / n).string());
                        try {
                            score.add(pred, truth);
                        } catch (const Error& e) {
                            throw e.in_file(p);
                        }
                    }
                    const auto s = score.result();
                    r.update({{"miou", s.miou}, {"macc", s.macc}, {"aacc", s.aacc}, {"images", s.images}, {"classes", o->classes}});
                    std::printf("%-8s %8s %8s %8s\n", "images", "mIoU", "mAcc", "aAcc");
                    std::printf("%-8lld %8.4f %8.4f %8.4f\n", static_cast<long long>(s.images), s.miou, s.macc, s.aacc);
                } else {
                    const auto s = eval::l2f(eval::read_landmarks_json(o->outputs), eval::read_landmarks_json(o->truth), o->truth_scale);
                    r.update({{"error", s.error}, {"scored", s.scored}, {"undetected", s.undetected}, {"missing_truth", s.missing_truth}});
                    std::printf("%-8s %10s %10s %14s\n", "scored", "L2 error", "no face", "no truth");
                    std::printf("%-8lld %10.4f %10lld %14lld\n", static_cast<long long>(s.scored), s.error,
                                static_cast<long long>(s.undetected), static_cast<long long>(s.missing_truth));
                }
                // NaN (no image with a defined score) is written as null.
                for (auto& [k, v] : r.items())
                    if (v.is_number_float() && std::isnan(v.get<double>())) v = nullptr;
                if (!o->out.empty()) io::write_file_atomically(o->out, r.dump() + "\n");
                std::printf("%s\n", r.dump().c_str());
                return 0;
            }};
}

}  // namespace hra::cli
