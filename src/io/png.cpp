#include "io/png.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include <png.h>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/image_limits.h"

namespace hra::io {

namespace {

// libpng reports errors by longjmp: the functions below set the jump point and
// create no C++ object after it, so nothing with a destructor is skipped.
struct PngError {
    char message[256] = "unknown libpng error";
};

void on_error(png_structp png, png_const_charp msg) {
    auto* e = static_cast<PngError*>(png_get_error_ptr(png));
    std::snprintf(e->message, sizeof e->message, "%s", msg);
    png_longjmp(png, 1);
}
void on_warning(png_structp, png_const_charp) {}

void append(png_structp png, png_bytep data, png_size_t n) {
    auto* out = static_cast<std::vector<unsigned char>*>(png_get_io_ptr(png));
    bool failed = false;
    try {  // no C++ exception may cross libpng's C frames
        out->insert(out->end(), data, data + n);
    } catch (...) {
        failed = true;
    }
    if (failed) png_error(png, "out of memory");
}
void no_flush(png_structp) {}

bool encode(png_bytep* rows, png_uint_32 h, png_uint_32 w, int color_type, png_textp text, int n_text,
            std::vector<unsigned char>* out, PngError* err) {
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, err, on_error, on_warning);
    if (!png) return false;
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, info ? &info : nullptr);
        return false;
    }
    png_set_write_fn(png, out, append, no_flush);
    png_set_IHDR(png, info, w, h, 8, color_type, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (n_text) png_set_text(png, info, text, n_text);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    return true;
}

struct Reader {
    const unsigned char* data;
    size_t size, at;
};
void consume(png_structp png, png_bytep dst, png_size_t n) {
    auto* r = static_cast<Reader*>(png_get_io_ptr(png));
    if (r->size - r->at < n) png_error(png, "the file ends early");
    std::memcpy(dst, r->data + r->at, n);
    r->at += n;
}

// Reads the header (stage 0) or the pixels into `pixels` (stage 1; rows
// prepared by the caller from the header's sizes).
bool decode(Reader* reader, png_uint_32* h, png_uint_32* w, int* channels, int* bit_depth, std::vector<unsigned char>* pixels,
            std::vector<std::pair<std::string, std::string>>* text, PngError* err) {
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, err, on_error, on_warning);
    if (!png) return false;
    png_infop info = png_create_info_struct(png);
    png_bytep* volatile rows = nullptr;  // read after a longjmp: volatile
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
        std::free(rows);
        return false;
    }
    png_set_read_fn(png, reader, consume);
    png_read_info(png, info);
    if (static_cast<uint64_t>(png_get_image_width(png, info)) * png_get_image_height(png, info) > kMaxImagePixels)
        png_error(png, "the image has more pixels than Pillow's decompression-bomb limit (178956970)");
    *bit_depth = png_get_bit_depth(png, info);
    png_set_expand(png);  // palette → RGB, grey < 8 bits → 8 bits, tRNS → alpha
    png_set_strip_16(png);
    png_read_update_info(png, info);
    *h = png_get_image_height(png, info);
    *w = png_get_image_width(png, info);
    *channels = png_get_channels(png, info);
    if (static_cast<uint64_t>(*h) * *w * static_cast<uint64_t>(*channels) > (uint64_t{1} << 31))
        png_error(png, "the image is too large");
    bool failed = false;
    try {  // no C++ exception may cross libpng's C frames
        pixels->resize(static_cast<size_t>(*h) * *w * static_cast<size_t>(*channels));
    } catch (...) {
        failed = true;
    }
    if (failed) png_error(png, "out of memory");
    rows = static_cast<png_bytep*>(std::malloc(sizeof(png_bytep) * (*h ? *h : 1)));
    if (!rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < *h; ++y) rows[y] = pixels->data() + static_cast<size_t>(y) * *w * static_cast<size_t>(*channels);
    png_read_image(png, rows);
    png_read_end(png, info);
    png_textp t = nullptr;
    int n = 0;
    png_get_text(png, info, &t, &n);
    try {
        for (int i = 0; i < n; ++i) text->emplace_back(t[i].key, t[i].text ? t[i].text : "");
    } catch (...) {
        failed = true;
    }
    if (failed) png_error(png, "out of memory");
    png_destroy_read_struct(&png, &info, nullptr);
    std::free(rows);
    return true;
}

}  // namespace

void write_png(const std::string& path, const torch::Tensor& image, const std::map<std::string, std::string>& text) {
    if (image.dim() != 3 || image.scalar_type() != torch::kUInt8 || (image.size(2) != 1 && image.size(2) != 3))
        throw Error("write_png takes a uint8 [H, W, 1 or 3] image, got " + c10::str(image.sizes()), {path});
    auto img = image.contiguous().cpu();
    const auto h = static_cast<png_uint_32>(img.size(0)), w = static_cast<png_uint_32>(img.size(1));
    if (h == 0 || w == 0) throw Error("an empty image cannot be written", {path});
    std::vector<png_bytep> rows(h);
    for (png_uint_32 y = 0; y < h; ++y) rows[y] = img.data_ptr<uint8_t>() + static_cast<size_t>(y) * w * img.size(2);
    std::vector<png_text> chunks(text.size(), png_text{});
    size_t i = 0;
    for (const auto& [k, v] : text) {
        if (k.empty() || k.size() > 79) throw Error("a PNG text key has 1 to 79 characters: '" + k + "'", {path});
        // tEXt holds Latin-1: ASCII goes there, anything else in a UTF-8 iTXt chunk.
        const bool ascii = std::all_of(v.begin(), v.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80; });
        chunks[i].compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
        chunks[i].key = const_cast<char*>(k.c_str());
        chunks[i].text = const_cast<char*>(v.c_str());
        if (ascii)
            chunks[i].text_length = v.size();
        else
            chunks[i].itxt_length = v.size();
        ++i;
    }
    std::vector<unsigned char> bytes;
    PngError err;
    if (!encode(rows.data(), h, w, img.size(2) == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, chunks.data(),
                static_cast<int>(chunks.size()), &bytes, &err))
        throw Error(std::string("cannot encode the PNG: ") + err.message, {path});
    write_file_atomically(path, std::string(bytes.begin(), bytes.end()));
}

PngImage read_png(const std::string& path) {
    const std::string data = read_file(path);
    if (data.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(data.data()), 0, 8))
        throw Error("not a PNG file", {path});
    Reader reader{reinterpret_cast<const unsigned char*>(data.data()), data.size(), 0};
    png_uint_32 h = 0, w = 0;
    int channels = 0, bit_depth = 0;
    std::vector<unsigned char> pixels;
    std::vector<std::pair<std::string, std::string>> text;
    PngError err;
    if (!decode(&reader, &h, &w, &channels, &bit_depth, &pixels, &text, &err))
        throw Error((std::string(err.message).rfind("the image", 0) == 0 ? "" : "corrupt PNG: ") + std::string(err.message), {path});  // sizes are not corruption
    PngImage out;
    out.bit_depth = bit_depth;
    out.pixels = torch::from_blob(pixels.data(), {static_cast<int64_t>(h), static_cast<int64_t>(w), channels}, torch::kUInt8).clone();
    for (auto& [k, v] : text) out.text[k] = v;
    return out;
}

torch::Tensor image_grid(const torch::Tensor& images, int64_t cols) {
    if (images.dim() != 4 || images.scalar_type() != torch::kUInt8 || cols < 1)
        throw Error("image_grid: expected uint8 [N, H, W, C] images and a positive column count");
    const int64_t n = images.size(0), h = images.size(1), w = images.size(2), g = 2;
    const int64_t rows = (n + cols - 1) / cols;
    auto out = torch::full({rows * (h + g) + g, cols * (w + g) + g, images.size(3)}, 128, torch::kUInt8);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t r = i / cols, c = i % cols;
        out.slice(0, g + r * (h + g), g + r * (h + g) + h).slice(1, g + c * (w + g), g + c * (w + g) + w).copy_(images[i]);
    }
    return out;
}

}  // namespace hra::io
