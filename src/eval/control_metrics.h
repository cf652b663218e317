// Controllable-generation metrics (DIFFUSION.md §4; the seed scores with OFT's
// eval_canny.py, mmsegmentation's metrics and eval_landmark.py):
//   C2I  OpenCV's Canny(100, 200) on the ground truth and on the output, per-image
//        edge IoU and F1 = 2tp / (2tp + fp + fn), averaged over images;
//   S2I  mIoU / mAcc / aAcc of label maps over 150 classes, accumulated over the
//        dataset as mmsegmentation does (reduce_zero_label on the ground truth);
//   L2F  mean L2 distance over 68 face landmarks, ground truth halved (the seed's
//        landmarks were found on the 1024-px CelebA-HQ images, outputs are 512 px).
// hra ships no segmenter or face detector: S2I and L2F read their outputs
// (README, "Controllable generation", gives the formats).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace hra::eval {

struct EdgeScore {
    double iou = 0, f1 = 0;
    int64_t tp = 0, fp = 0, fn = 0;
};
// Edge agreement of two binary maps (non-zero = edge): `output` is the
// prediction, `truth` the target. With no edge in either, IoU and F1 are NaN, as
// the seed's numpy computes them (0/0); the C2I mean then leaves the image out
// and counts it (EdgeSummary::undefined).
EdgeScore edge_score(const torch::Tensor& output_edges, const torch::Tensor& truth_edges);

struct EdgeSummary {
    double iou = 0, f1 = 0;  // means over images with a defined score
    int64_t images = 0, undefined = 0;
};
// C2I accumulated pair by pair (nothing is kept but the sums).
class EdgeMeans {
public:
    // One (ground truth, output) pair of uint8 [H, W, 3] RGB images of one size.
    void add(const torch::Tensor& truth, const torch::Tensor& output);
    EdgeSummary result() const;

private:
    double iou_ = 0, f1_ = 0;
    int64_t images_ = 0, undefined_ = 0;
};

// C2I over (ground truth, output) uint8 [H, W, 3] RGB pairs of equal size. The
// seed's eval_canny.py passes PIL's RGB pixels through ToTensor and back
// ((x / 255) · 255 in float32, cast to uint8), which returns every level unchanged
// (checked for all 256), so Canny sees the files' pixels in RGB order.
EdgeSummary c2i(const std::vector<std::pair<torch::Tensor, torch::Tensor>>& truth_output);

// mmsegmentation's IoU metric accumulated over a dataset.
class SegmentationScore {
public:
    explicit SegmentationScore(int64_t num_classes = 150, bool reduce_zero_label = true, int64_t ignore_index = 255);
    // prediction: class indices [H, W] (0 .. num_classes − 1; others count in no
    // class); truth: labels [H, W] of the dataset (ADE20K: 0 "other", 1 .. 150),
    // shifted down by one with 0 → ignore_index when reduce_zero_label.
    void add(const torch::Tensor& prediction, const torch::Tensor& truth);

    struct Result {
        double aacc = 0, miou = 0, macc = 0;  // classes absent from truth and prediction are left out of the means
        std::vector<double> iou, acc;         // per class (NaN when undefined)
        int64_t images = 0;
    };
    Result result() const;

private:
    int64_t classes_, ignore_;
    bool reduce_zero_;
    std::vector<int64_t> intersect_, pred_, label_;
    int64_t images_ = 0;
};

// Face landmarks: 68 (x, y) points; nullopt when the detector found no face.
using Landmarks = std::optional<std::vector<std::pair<double, double>>>;
// A JSON object {"image name": [[x, y] × 68] or null, ...} (`path` names errors).
std::map<std::string, Landmarks> read_landmarks_json(const std::string& path);

struct LandmarkSummary {
    double error = 0;  // mean over scored images of the mean point distance
    int64_t scored = 0, undetected = 0, missing_truth = 0;
};
// L2F: for every output image name, the mean distance between its points and
// the ground truth's points × `truth_scale` (the seed: 0.5). Outputs without a
// face are skipped and counted; an output whose truth is absent is counted too.
LandmarkSummary l2f(const std::map<std::string, Landmarks>& outputs, const std::map<std::string, Landmarks>& truth,
                    double truth_scale = 0.5);

}  // namespace hra::eval
