#include "eval/control_metrics.h"

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "data/canny.h"
#include "io/json_file.h"

namespace hra::eval {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double ratio(int64_t a, int64_t b) { return b == 0 ? kNaN : static_cast<double>(a) / static_cast<double>(b); }

double nanmean(const std::vector<double>& v) {
    double s = 0;
    int64_t n = 0;
    for (double x : v)
        if (!std::isnan(x)) s += x, ++n;
    return n == 0 ? kNaN : s / static_cast<double>(n);
}

}  // namespace

EdgeScore edge_score(const torch::Tensor& output_edges, const torch::Tensor& truth_edges) {
    if (output_edges.sizes() != truth_edges.sizes())
        throw Error("edge maps differ in size: output " + c10::str(output_edges.sizes()) + ", truth " + c10::str(truth_edges.sizes()));
    const auto p = output_edges.ne(0), t = truth_edges.ne(0);
    EdgeScore s;
    s.tp = p.logical_and(t).sum().item<int64_t>();
    s.fp = p.sum().item<int64_t>() - s.tp;
    s.fn = t.sum().item<int64_t>() - s.tp;
    s.iou = ratio(s.tp, s.tp + s.fp + s.fn);
    s.f1 = ratio(2 * s.tp, 2 * s.tp + s.fp + s.fn);
    return s;
}

void EdgeMeans::add(const torch::Tensor& truth, const torch::Tensor& output) {
    if (truth.sizes() != output.sizes())
        throw Error("C2I compares images of one size: truth " + c10::str(truth.sizes()) + ", output " + c10::str(output.sizes()));
    const auto s = edge_score(data::canny(output), data::canny(truth));
    ++images_;
    if (std::isnan(s.iou)) {
        ++undefined_;
        return;
    }
    iou_ += s.iou;
    f1_ += s.f1;
}

EdgeSummary EdgeMeans::result() const {
    EdgeSummary sum;
    sum.images = images_;
    sum.undefined = undefined_;
    const auto n = images_ - undefined_;
    sum.iou = n ? iou_ / static_cast<double>(n) : kNaN;
    sum.f1 = n ? f1_ / static_cast<double>(n) : kNaN;
    return sum;
}

EdgeSummary c2i(const std::vector<std::pair<torch::Tensor, torch::Tensor>>& truth_output) {
    EdgeMeans m;
    for (const auto& [truth, output] : truth_output) m.add(truth, output);
    return m.result();
}

SegmentationScore::SegmentationScore(int64_t num_classes, bool reduce_zero_label, int64_t ignore_index)
    : classes_(num_classes), ignore_(ignore_index), reduce_zero_(reduce_zero_label),
      intersect_(static_cast<size_t>(num_classes)), pred_(static_cast<size_t>(num_classes)), label_(static_cast<size_t>(num_classes)) {
    if (num_classes < 1) throw Error("a segmentation score needs at least one class");
}

void SegmentationScore::add(const torch::Tensor& prediction, const torch::Tensor& truth) {
    if (prediction.dim() != 2 || prediction.sizes() != truth.sizes())
        throw Error("a label map pair must be two [H, W] maps of one size, got prediction " + c10::str(prediction.sizes()) +
                    " and truth " + c10::str(truth.sizes()));
    auto label = truth.to(torch::kLong);
    if (reduce_zero_) {
        // mmsegmentation: 0 → 255 (ignored), the rest − 1, 255 stays ignored (254 after the shift → 255).
        label = torch::where(label.eq(0), torch::full_like(label, 255), label - 1);
        label = torch::where(label.eq(254), torch::full_like(label, 255), label);
    }
    const auto keep = label.ne(ignore_);
    const auto pred = prediction.to(torch::kLong).masked_select(keep);
    label = label.masked_select(keep);
    const auto hit = pred.masked_select(pred.eq(label));
    const auto hist = [&](const torch::Tensor& v) {
        // Values outside 0 .. classes − 1 fall in no bin, as torch.histc with min 0, max classes − 1 leaves them out.
        const auto in = v.masked_select(v.ge(0).logical_and(v.lt(classes_)));
        return torch::bincount(in, {}, classes_);
    };
    const auto add_to = [](std::vector<int64_t>& acc, const torch::Tensor& h) {
        const auto a = h.accessor<int64_t, 1>();
        for (size_t i = 0; i < acc.size(); ++i) acc[i] += a[static_cast<int64_t>(i)];
    };
    add_to(intersect_, hist(hit));
    add_to(pred_, hist(pred));
    add_to(label_, hist(label));
    ++images_;
}

SegmentationScore::Result SegmentationScore::result() const {
    Result r;
    r.images = images_;
    int64_t hit = 0, total = 0;
    for (size_t c = 0; c < intersect_.size(); ++c) {
        hit += intersect_[c];
        total += label_[c];
        r.iou.push_back(ratio(intersect_[c], pred_[c] + label_[c] - intersect_[c]));
        r.acc.push_back(ratio(intersect_[c], label_[c]));
    }
    r.aacc = ratio(hit, total);
    r.miou = nanmean(r.iou);
    r.macc = nanmean(r.acc);
    return r;
}

std::map<std::string, Landmarks> read_landmarks_json(const std::string& path) {
    const nlohmann::json j = io::read_json_file(path);
    if (!j.is_object()) throw Error("landmarks must be a JSON object {\"image\": [[x, y] x 68] or null}", {path});
    std::map<std::string, Landmarks> out;
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string name = it.key();
        const nlohmann::json& v = it.value();
        if (v.is_null()) {
            out[name] = std::nullopt;
            continue;
        }
        if (!v.is_array() || v.size() != 68) throw Error("landmarks must be 68 [x, y] points or null", ErrorLocation(path, name));
        std::vector<std::pair<double, double>> pts;
        for (const nlohmann::json& p : v) {
            if (!p.is_array() || p.size() < 2 || !p[0].is_number() || !p[1].is_number())
                throw Error("a landmark must be [x, y] (numbers), got " + p.dump(), ErrorLocation(path, name));
            const double x = p[0].get<double>(), y = p[1].get<double>();
            if (!std::isfinite(x) || !std::isfinite(y)) throw Error("a landmark is not finite: " + p.dump(), ErrorLocation(path, name));
            pts.emplace_back(x, y);
        }
        out[name] = std::move(pts);
    }
    return out;
}

LandmarkSummary l2f(const std::map<std::string, Landmarks>& outputs, const std::map<std::string, Landmarks>& truth, double truth_scale) {
    LandmarkSummary s;
    double total = 0;
    for (const auto& [name, pts] : outputs) {
        if (!pts) {
            ++s.undetected;
            continue;
        }
        const auto t = truth.find(name);
        if (t == truth.end() || !t->second) {
            ++s.missing_truth;
            continue;
        }
        double d = 0;
        for (size_t i = 0; i < pts->size(); ++i) {
            const auto& [tx, ty] = (*t->second)[i];
            d += std::hypot((*pts)[i].first - tx * truth_scale, (*pts)[i].second - ty * truth_scale);
        }
        total += d / static_cast<double>(pts->size());
        ++s.scored;
    }
    s.error = s.scored ? total / static_cast<double>(s.scored) : kNaN;
    return s;
}

}  // namespace hra::eval
