// Images: PNG (libpng) and JPEG (libjpeg-turbo) through hra's readers.
#include "fuzz_util.h"
#include "io/jpeg.h"
#include "io/png.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto& path = hra::fuzz::input_file(data, size, ".img");
    hra::fuzz::expect_named_errors([&] { (void)hra::io::read_png(path); });
    hra::fuzz::expect_named_errors([&] { (void)hra::io::read_jpeg(path); });
    return 0;
}
