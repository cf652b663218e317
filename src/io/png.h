// PNG files through libpng (Debian's libpng-dev): 8-bit RGB or grey images
// with tEXt chunks (the prompt and settings of a generated image).
#pragma once

#include <map>
#include <string>

#include <torch/types.h>

namespace hra::io {

// image: uint8 [H, W, 3] or [H, W, 1]. Written to a temporary name and renamed;
// hra::Error naming the file on failure (nothing already there is lost).
void write_png(const std::string& path, const torch::Tensor& image, const std::map<std::string, std::string>& text = {});

struct PngImage {
    torch::Tensor pixels;  // uint8 [H, W, C]: C is 1 (grey), 2 (grey, alpha), 3 (RGB) or 4 (RGBA)
    std::map<std::string, std::string> text;
    int bit_depth = 8;  // the file's bits per channel (or palette index) before the expansion to 8
};
// uint8 [N, H, W, C] images as one [rows·(H+2)+2, cols·(W+2)+2, C] grid, `cols`
// per row, with 2-pixel grey gutters.
torch::Tensor image_grid(const torch::Tensor& images, int64_t cols);

// Any PNG libpng reads, expanded to 8 bits per channel (palette → RGB).
PngImage read_png(const std::string& path);

}  // namespace hra::io
