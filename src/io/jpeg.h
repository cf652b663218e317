// JPEG files through libjpeg-turbo (Debian's libjpeg62-turbo-dev), decoded with
// the library's defaults as Pillow does (integer IDCT, fancy upsampling), so the
// pixels equal Pillow's on the same library version.
#pragma once

#include <string>

#include <torch/types.h>

namespace hra::io {

// uint8 [H, W, 3] for colour files, [H, W, 1] for grey ones. CMYK/YCCK files
// and corrupt or truncated data are an hra::Error naming the file.
torch::Tensor read_jpeg(const std::string& path);

// True when `bytes` starts with a JPEG start-of-image marker.
bool looks_like_jpeg(const std::string& bytes);

}  // namespace hra::io
