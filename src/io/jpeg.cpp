#include "io/jpeg.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/image_limits.h"

namespace hra::io {

namespace {

// libjpeg reports errors through error_exit: ours longjmps back to decode(),
// which creates no C++ object after setjmp, so nothing with a destructor is skipped.
struct JpegError {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
    char message[JMSG_LENGTH_MAX] = "unknown libjpeg error";
};

void on_error(j_common_ptr cinfo) {
    auto* e = reinterpret_cast<JpegError*>(cinfo->err);
    (*cinfo->err->format_message)(cinfo, e->message);
    std::longjmp(e->jump, 1);
}
// Warnings are not errors (e.g. extraneous bytes), as in Pillow, except a file
// that ends early: libjpeg would fill the rest with grey, Pillow refuses it.
void on_message(j_common_ptr cinfo, int level) {
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) on_error(cinfo);
}

// stage: 0 reads the header into *h, *w, *c; the caller sizes `pixels`; 1 decodes.
bool decode(const std::string& data, unsigned* h, unsigned* w, int* c, std::vector<unsigned char>* pixels,
            JpegError* err, bool* unsupported) {
    jpeg_decompress_struct cinfo;
    cinfo.err = jpeg_std_error(&err->mgr);
    err->mgr.error_exit = on_error;
    err->mgr.emit_message = on_message;
    if (setjmp(err->jump)) {
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(data.data()), static_cast<unsigned long>(data.size()));
    jpeg_read_header(&cinfo, TRUE);
    if (static_cast<uint64_t>(cinfo.image_width) * cinfo.image_height > kMaxImagePixels) {
        std::snprintf(err->message, sizeof err->message, "the image has %ux%u pixels, more than %llu (Pillow's decompression-bomb limit)",
                      cinfo.image_width, cinfo.image_height, static_cast<unsigned long long>(kMaxImagePixels));
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        *unsupported = true;
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    *h = cinfo.output_height;
    *w = cinfo.output_width;
    *c = cinfo.output_components;
    const size_t row = static_cast<size_t>(*w) * static_cast<size_t>(*c);
    if (static_cast<uint64_t>(*h) * row > (uint64_t{1} << 31)) {
        std::snprintf(err->message, sizeof err->message, "the image is too large (%ux%u)", *w, *h);
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    bool failed = false;
    try {  // no C++ exception may cross libjpeg's C frames
        pixels->resize(static_cast<size_t>(*h) * row);
    } catch (...) {
        failed = true;
    }
    if (failed) {
        std::snprintf(err->message, sizeof err->message, "out of memory");
        jpeg_destroy_decompress(&cinfo);
        return false;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW p = pixels->data() + static_cast<size_t>(cinfo.output_scanline) * row;
        jpeg_read_scanlines(&cinfo, &p, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return true;
}

}  // namespace

bool looks_like_jpeg(const std::string& bytes) {
    return bytes.size() >= 3 && static_cast<unsigned char>(bytes[0]) == 0xFF && static_cast<unsigned char>(bytes[1]) == 0xD8 &&
           static_cast<unsigned char>(bytes[2]) == 0xFF;
}

torch::Tensor read_jpeg(const std::string& path) {
    const std::string data = read_file(path);
    if (!looks_like_jpeg(data)) throw Error("not a JPEG file", {path});
    unsigned h = 0, w = 0;
    int c = 0;
    std::vector<unsigned char> pixels;
    JpegError err;
    bool unsupported = false;
    if (!decode(data, &h, &w, &c, &pixels, &err, &unsupported)) {
        if (unsupported) throw Error("CMYK/YCCK JPEG files are not supported; convert the image to RGB", {path});
        throw Error((std::string(err.message).rfind("the image", 0) == 0 ? "" : "corrupt JPEG: ") + std::string(err.message), {path});  // sizes are not corruption
    }
    return torch::from_blob(pixels.data(), {static_cast<int64_t>(h), static_cast<int64_t>(w), c}, torch::kUInt8).clone();
}

}  // namespace hra::io
