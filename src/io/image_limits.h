// Decoded images have at most Pillow's decompression-bomb limit of pixels (2 x MAX_IMAGE_PIXELS,
// where Pillow raises DecompressionBombError), checked on the header before anything is
// allocated: a 300-byte progressive JPEG can claim 46144 x 12288 pixels, for which libjpeg's
// coefficient buffer alone takes 3 GB.
#pragma once

#include <cstdint>

namespace hra::io {

constexpr uint64_t kMaxImagePixels = 2 * uint64_t{89478485};

}  // namespace hra::io
