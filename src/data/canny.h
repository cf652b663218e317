// OpenCV's Canny edge detector (Debian's libopencv-imgproc-dev): the control
// experiment's canny conditions and its C2I metric are defined on its output.
#pragma once

#include <torch/types.h>

namespace hra::data {

// cv::Canny(image, low, high) (aperture 3, L1 gradient) on uint8 [H, W, 3] or
// [H, W] (or [H, W, 1]): uint8 [H, W], 255 on edges. A 3-channel image takes,
// per pixel, the channel with the largest gradient, as OpenCV does; the seed
// passes RGB (PIL's order).
torch::Tensor canny(const torch::Tensor& hwc, double low = 100, double high = 200);

}  // namespace hra::data
