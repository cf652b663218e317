#include "data/canny.h"

#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include "common/error.h"

namespace hra::data {

torch::Tensor canny(const torch::Tensor& hwc, double low, double high) {
    if (hwc.scalar_type() != torch::kUInt8 || (hwc.dim() != 2 && !(hwc.dim() == 3 && (hwc.size(2) == 3 || hwc.size(2) == 1))))
        throw Error("Canny takes uint8 [H, W] or [H, W, 3] images, got " + c10::str(hwc.scalar_type(), " ", hwc.sizes()));
    if (hwc.size(0) == 0 || hwc.size(1) == 0) throw Error("Canny takes a non-empty image, got " + c10::str(hwc.sizes()));
    const auto img = hwc.cpu().contiguous();  // OpenCV reads host memory
    const int h = static_cast<int>(img.size(0)), w = static_cast<int>(img.size(1));
    const int c = img.dim() == 3 ? static_cast<int>(img.size(2)) : 1;
    // OpenCV reads the tensor's memory in place (it only reads it) and writes into the output's.
    const cv::Mat src(h, w, CV_8UC(c), const_cast<uint8_t*>(img.data_ptr<uint8_t>()));
    auto out = torch::empty({h, w}, torch::kUInt8);
    cv::Mat dst(h, w, CV_8UC1, out.data_ptr<uint8_t>());
    cv::Canny(src, dst, low, high);
    if (dst.data != out.data_ptr<uint8_t>()) throw Error("OpenCV's Canny reallocated its output");
    return out;
}

}  // namespace hra::data
