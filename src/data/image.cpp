#include "data/image.h"

#include <cmath>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/jpeg.h"
#include "io/json_file.h"
#include "io/json_value.h"
#include "io/png.h"

namespace hra::data {

namespace {

// Pillow's filters (libImaging/Resample.c), each with its support radius.
constexpr double kPi = 3.14159265358979323846;
double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
double bilinear_filter(double x) {
    x = std::fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}
double hamming_filter(double x) {
    x = std::fabs(x);
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x *= kPi;
    // Pillow writes the constants as floats: keep their float values.
    return std::sin(x) / x * (static_cast<double>(0.54F) + static_cast<double>(0.46F) * std::cos(x));
}
double bicubic_filter(double x) {
    constexpr double a = -0.5;
    x = std::fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}
double sinc(double x) {
    if (x == 0.0) return 1.0;
    x *= kPi;
    return std::sin(x) / x;
}
double lanczos_filter(double x) { return (-3.0 <= x && x < 3.0) ? sinc(x) * sinc(x / 3) : 0.0; }

struct Filter {
    double support;
    double (*fn)(double);
};
Filter filter_of(Resample r) {
    switch (r) {
        case Resample::Box: return {0.5, box_filter};
        case Resample::Bilinear: return {1.0, bilinear_filter};
        case Resample::Hamming: return {1.0, hamming_filter};
        case Resample::Bicubic: return {2.0, bicubic_filter};
        case Resample::Lanczos: return {3.0, lanczos_filter};
        case Resample::Nearest: break;
    }
    throw Error("internal: no convolution filter for nearest");
}

constexpr int kPrecisionBits = 32 - 8 - 2;

// One output index's taps: first input index, count, fixed-point weights.
struct Taps {
    int ksize = 0;
    std::vector<int> first, count;
    std::vector<int32_t> weights;  // [out, ksize]
};

Taps precompute(int in_size, int out_size, const Filter& f) {
    const double scale = static_cast<double>(in_size) / out_size;
    const double filterscale = scale < 1.0 ? 1.0 : scale;
    const double support = f.support * filterscale;
    Taps t;
    t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    t.first.resize(static_cast<size_t>(out_size));
    t.count.resize(static_cast<size_t>(out_size));
    t.weights.assign(static_cast<size_t>(out_size) * static_cast<size_t>(t.ksize), 0);
    std::vector<double> k(static_cast<size_t>(t.ksize));
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = (xx + 0.5) * scale;
        const double ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);  // truncation, as the C cast does
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; ++x) {
            const double w = f.fn((x + xmin - center + 0.5) * ss);
            k[static_cast<size_t>(x)] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; ++x) {
            double w = k[static_cast<size_t>(x)];
            if (ww != 0.0) w /= ww;
            t.weights[static_cast<size_t>(xx) * static_cast<size_t>(t.ksize) + static_cast<size_t>(x)] =
                w < 0 ? static_cast<int32_t>(-0.5 + w * (1 << kPrecisionBits)) : static_cast<int32_t>(0.5 + w * (1 << kPrecisionBits));
        }
        t.first[static_cast<size_t>(xx)] = xmin;
        t.count[static_cast<size_t>(xx)] = xmax;
    }
    return t;
}

uint8_t clip8(int64_t v) {
    if (v >= (int64_t{1} << kPrecisionBits << 8)) return 255;
    if (v <= 0) return 0;
    return static_cast<uint8_t>(v >> kPrecisionBits);
}

// One separable pass along `axis` (1: width, 0: height) of a uint8 [H, W, C] buffer.
std::vector<uint8_t> convolve(const std::vector<uint8_t>& in, int h, int w, int c, int axis, int out_size, const Filter& f) {
    const int in_size = axis == 1 ? w : h;
    const Taps t = precompute(in_size, out_size, f);
    const int oh = axis == 1 ? h : out_size, ow = axis == 1 ? out_size : w;
    std::vector<uint8_t> out(static_cast<size_t>(oh) * static_cast<size_t>(ow) * static_cast<size_t>(c));
    const size_t stride = axis == 1 ? static_cast<size_t>(c) : static_cast<size_t>(w) * static_cast<size_t>(c);
    for (int y = 0; y < oh; ++y)
        for (int x = 0; x < ow; ++x) {
            const int o = axis == 1 ? x : y;
            const int32_t* k = t.weights.data() + static_cast<size_t>(o) * static_cast<size_t>(t.ksize);
            const size_t base = axis == 1 ? (static_cast<size_t>(y) * w + static_cast<size_t>(t.first[o])) * c
                                          : (static_cast<size_t>(t.first[o]) * w + static_cast<size_t>(x)) * c;
            for (int ch = 0; ch < c; ++ch) {
                int64_t ss = int64_t{1} << (kPrecisionBits - 1);
                for (int i = 0; i < t.count[o]; ++i) ss += static_cast<int64_t>(in[base + i * stride + ch]) * k[i];
                out[(static_cast<size_t>(y) * ow + x) * c + ch] = clip8(ss);
            }
        }
    return out;
}

// Pillow's NEAREST resize (ImagingScaleAffine): source positions accumulated in
// floating point from the pixel centres.
std::vector<uint8_t> nearest(const std::vector<uint8_t>& in, int h, int w, int c, int ow, int oh) {
    std::vector<int> xin(static_cast<size_t>(ow));
    const double ax = static_cast<double>(w) / ow, ay = static_cast<double>(h) / oh;
    auto coord = [](double v) { return v < 0.0 ? -1 : static_cast<int>(v); };
    double xo = ax * 0.5;
    for (int x = 0; x < ow; ++x, xo += ax) xin[static_cast<size_t>(x)] = coord(xo);
    std::vector<uint8_t> out(static_cast<size_t>(oh) * static_cast<size_t>(ow) * static_cast<size_t>(c), 0);
    double yo = ay * 0.5;
    for (int y = 0; y < oh; ++y, yo += ay) {
        const int yi = coord(yo);
        if (yi < 0 || yi >= h) continue;
        for (int x = 0; x < ow; ++x) {
            const int xi = xin[static_cast<size_t>(x)];
            if (xi < 0 || xi >= w) continue;
            for (int ch = 0; ch < c; ++ch)
                out[(static_cast<size_t>(y) * ow + x) * c + ch] = in[(static_cast<size_t>(yi) * w + xi) * c + ch];
        }
    }
    return out;
}

void check_image(const torch::Tensor& hwc, const char* what) {
    if (hwc.dim() != 3 || hwc.scalar_type() != torch::kUInt8 || hwc.size(0) < 1 || hwc.size(1) < 1 || hwc.size(2) < 1)
        throw Error(std::string(what) + ": expected a non-empty uint8 [H, W, C] image, got " + c10::str(hwc.sizes()) + " " +
                    c10::toString(hwc.scalar_type()));
}

std::pair<int64_t, int64_t> size_pair(const nlohmann::json& v, const std::string& key, const std::string& origin) {
    if (v.is_number()) {
        const auto n = io::json_get<int64_t>(v, key.c_str(), origin);
        return {n, n};
    }
    if (v.is_object() && v.contains("height") && v.contains("width"))
        return {io::json_get<int64_t>(v["width"], (key + ".width").c_str(), origin),
                io::json_get<int64_t>(v["height"], (key + ".height").c_str(), origin)};
    throw Error("expected an integer or {\"height\", \"width\"}", {origin, key});
}

}  // namespace

Resample resample_from_code(int64_t code) {
    if (code < 0 || code > 5) throw Error("unknown resampling filter " + std::to_string(code) + " (Pillow's codes are 0 to 5)");
    return static_cast<Resample>(code);
}

const char* resample_name(Resample r) {
    static const char* names[] = {"nearest", "lanczos", "bilinear", "bicubic", "box", "hamming"};
    return names[static_cast<int>(r)];
}

torch::Tensor to_rgb(const torch::Tensor& p) {
    check_image(p, "to_rgb");
    const int64_t c = p.size(2);
    if (c == 3) return p;
    if (c == 4) return p.slice(2, 0, 3).contiguous();
    if (c == 1 || c == 2) return p.slice(2, 0, 1).expand({p.size(0), p.size(1), 3}).contiguous();
    throw Error("to_rgb: an image has 1 to 4 channels, got " + std::to_string(c));
}

torch::Tensor load_rgb(const std::string& path) {
    std::string head(8, '\0');
    {
        std::ifstream f(path, std::ios::binary);
        if (!f) throw Error("cannot open the image", {path});
        f.read(head.data(), 8);
        head.resize(static_cast<size_t>(f.gcount()));
    }
    if (io::looks_like_jpeg(head)) return to_rgb(io::read_jpeg(path));
    if (head.size() == 8 && head.compare(0, 4, "\x89PNG") == 0) return to_rgb(io::read_png(path).pixels);
    throw Error("not a PNG or JPEG image", {path});
}

torch::Tensor resize(const torch::Tensor& hwc, int64_t width, int64_t height, Resample resample) {
    check_image(hwc, "resize");
    if (width < 1 || height < 1 || width > (1 << 20) || height > (1 << 20))
        throw Error("resize: bad output size " + std::to_string(width) + "x" + std::to_string(height));
    const int h = static_cast<int>(hwc.size(0)), w = static_cast<int>(hwc.size(1)), c = static_cast<int>(hwc.size(2));
    if (w == width && h == height) return hwc.clone();
    auto src = hwc.contiguous();
    std::vector<uint8_t> buf(src.data_ptr<uint8_t>(), src.data_ptr<uint8_t>() + src.numel());
    const int ow = static_cast<int>(width), oh = static_cast<int>(height);
    if (resample == Resample::Nearest) {
        buf = nearest(buf, h, w, c, ow, oh);
    } else {
        const Filter f = filter_of(resample);
        int cw = w;
        if (ow != w) {
            buf = convolve(buf, h, w, c, 1, ow, f);
            cw = ow;
        }
        if (oh != h) buf = convolve(buf, h, cw, c, 0, oh, f);
    }
    return torch::from_blob(buf.data(), {height, width, c}, torch::kUInt8).clone();
}

torch::Tensor resize_shortest_edge(const torch::Tensor& hwc, int64_t edge, Resample resample) {
    check_image(hwc, "resize_shortest_edge");
    const int64_t h = hwc.size(0), w = hwc.size(1);
    const int64_t s = std::min(h, w), l = std::max(h, w);
    if (s == edge) return hwc.clone();
    const auto nl = static_cast<int64_t>(static_cast<double>(edge) * static_cast<double>(l) / static_cast<double>(s));
    return w <= h ? resize(hwc, edge, nl, resample) : resize(hwc, nl, edge, resample);
}

torch::Tensor center_crop(const torch::Tensor& hwc, int64_t width, int64_t height) {
    check_image(hwc, "center_crop");
    if (width < 1 || height < 1) throw Error("center_crop: bad crop size");
    auto img = hwc;
    const int64_t h = img.size(0), w = img.size(1);
    if (h < height || w < width) {  // centre the image on zeros, as transformers pads
        const int64_t nh = std::max(h, height), nw = std::max(w, width);
        auto padded = torch::zeros({nh, nw, img.size(2)}, torch::kUInt8);
        const int64_t t = (nh - h) / 2, l = (nw - w) / 2;
        padded.slice(0, t, t + h).slice(1, l, l + w).copy_(img);
        img = padded;
    }
    const int64_t top = (img.size(0) - height) / 2, left = (img.size(1) - width) / 2;
    return img.slice(0, top, top + height).slice(1, left, left + width).contiguous();
}

torch::Tensor random_crop(const torch::Tensor& hwc, int64_t width, int64_t height, c10::optional<at::Generator> gen) {
    check_image(hwc, "random_crop");
    const int64_t h = hwc.size(0), w = hwc.size(1);
    if (h < height || w < width)
        throw Error("random_crop: a " + std::to_string(w) + "x" + std::to_string(h) + " image is smaller than the " +
                    std::to_string(width) + "x" + std::to_string(height) + " crop");
    if (h == height && w == width) return hwc;
    const int64_t top = at::randint(0, h - height + 1, {1}, gen, torch::TensorOptions().dtype(torch::kLong)).item<int64_t>();
    const int64_t left = at::randint(0, w - width + 1, {1}, gen, torch::TensorOptions().dtype(torch::kLong)).item<int64_t>();
    return hwc.slice(0, top, top + height).slice(1, left, left + width).contiguous();
}

bool all_black(const torch::Tensor& hwc) { return hwc.numel() > 0 && hwc.max().item<int64_t>() == 0; }

ImageProcessor ImageProcessor::from_file(const std::string& path) { return from_json(io::read_json_file(path), path); }

ImageProcessor ImageProcessor::from_json(const nlohmann::json& j, const std::string& origin) {
    if (!j.is_object()) throw Error("a preprocessor config is a JSON object", {origin});
    std::string cls;
    for (const char* k : {"image_processor_type", "feature_extractor_type"})
        if (j.contains(k) && j[k].is_string()) {
            cls = j[k].get<std::string>();
            break;
        }
    ImageProcessor p;
    const bool clip = cls.rfind("CLIP", 0) == 0, vit = cls.rfind("ViT", 0) == 0;
    if (!clip && !vit)
        throw Error("unsupported image processor '" + cls + "' (CLIPImageProcessor and ViTImageProcessor are supported)",
                    {origin, "image_processor_type"});
    if (clip) {
        p.size_kind = Size::ShortestEdge;
        p.resample = Resample::Bicubic;
        p.do_center_crop = true;
        p.mean = {0.48145466F, 0.4578275F, 0.40821073F};
        p.std = {0.26862954F, 0.26130258F, 0.27577711F};
    }
    auto flag = [&](const char* key, bool* out) {
        if (!j.contains(key)) return;
        if (!j[key].is_boolean()) throw Error("expected true or false", {origin, key});
        *out = j[key].get<bool>();
    };
    flag("do_resize", &p.do_resize);
    flag("do_center_crop", &p.do_center_crop);
    flag("do_rescale", &p.do_rescale);
    flag("do_normalize", &p.do_normalize);
    if (j.contains("size")) {
        const auto& s = j["size"];
        if (s.is_object() && s.contains("shortest_edge")) {
            p.size_kind = Size::ShortestEdge;
            p.shortest_edge = io::json_get<int64_t>(s["shortest_edge"], "size.shortest_edge", origin);
        } else if (s.is_number() && clip) {
            p.shortest_edge = io::json_get<int64_t>(s, "size", origin);
        } else {
            p.size_kind = Size::Exact;
            std::tie(p.width, p.height) = size_pair(s, "size", origin);
        }
    }
    if (j.contains("crop_size")) std::tie(p.crop_width, p.crop_height) = size_pair(j["crop_size"], "crop_size", origin);
    if (j.contains("resample")) {
        try {
            p.resample = resample_from_code(io::json_get<int64_t>(j["resample"], "resample", origin));
        } catch (const Error& e) {
            throw Error(e.message(), {origin, "resample"});
        }
    }
    if (j.contains("rescale_factor")) {
        if (!j["rescale_factor"].is_number()) throw Error("expected a number", {origin, "rescale_factor"});
        p.rescale_factor = j["rescale_factor"].get<double>();
    }
    for (auto [key, out] : {std::pair<const char*, std::array<float, 3>*>{"image_mean", &p.mean}, {"image_std", &p.std}}) {
        if (!j.contains(key)) continue;
        const auto& v = j[key];
        if (v.is_number()) {
            out->fill(v.get<float>());
        } else if (v.is_array() && v.size() == 3 && v[0].is_number() && v[1].is_number() && v[2].is_number()) {
            for (size_t i = 0; i < 3; ++i) (*out)[i] = v[i].get<float>();
        } else {
            throw Error("expected a number or 3 numbers", {origin, key});
        }
    }
    for (float s : p.std)
        if (!(s > 0.0F)) throw Error("every standard deviation must be positive", {origin, "image_std"});
    const int64_t sizes[] = {p.width, p.height, p.shortest_edge, p.crop_width, p.crop_height};
    for (int64_t s : sizes)
        if (s < 1 || s > 16384) throw Error("image sizes must be between 1 and 16384", {origin, "size"});
    return p;
}

ImageProcessor ImageProcessor::lpips(int64_t size) {
    ImageProcessor p;
    p.size_kind = Size::Exact;
    p.width = p.height = size;
    p.resample = Resample::Bilinear;
    p.torchvision_divide = true;
    return p;
}

torch::Tensor ImageProcessor::operator()(const torch::Tensor& hwc) const {
    auto img = to_rgb(hwc);
    if (do_resize)
        img = size_kind == Size::ShortestEdge ? resize_shortest_edge(img, shortest_edge, resample) : resize(img, width, height, resample);
    if (do_center_crop) img = center_crop(img, crop_width, crop_height);
    auto x = img.permute({2, 0, 1}).contiguous();
    torch::Tensor f;
    if (!do_rescale)
        f = x.to(torch::kFloat);
    else if (torchvision_divide)
        f = x.to(torch::kFloat).div(static_cast<float>(1.0 / rescale_factor));
    else
        f = x.to(torch::kDouble).mul(rescale_factor).to(torch::kFloat);
    if (do_normalize) {
        auto m = torch::tensor({mean[0], mean[1], mean[2]}, torch::kFloat).view({3, 1, 1});
        auto s = torch::tensor({std[0], std[1], std[2]}, torch::kFloat).view({3, 1, 1});
        f = (f - m) / s;
    }
    return f;
}

}  // namespace hra::data
