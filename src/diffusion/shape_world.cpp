#include "diffusion/shape_world.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <random>
#include <regex>

#include <torch/torch.h>

#include "common/error.h"
#include "diffusion/pipeline.h"

namespace hra::diffusion {

namespace {

const std::array<std::array<int, 3>, 6> kPalette = {{{220, 30, 30}, {30, 170, 30}, {30, 60, 220},
                                                     {230, 200, 20}, {200, 40, 200}, {30, 190, 200}}};

int64_t radius(int size_index, int64_t image) { return size_index == 0 ? std::max<int64_t>(1, image / 16) : image / 8; }
int64_t jitter_of(int64_t image) { return std::max<int64_t>(1, image / 32); }

int index_of(const std::vector<std::string>& v, const std::string& s) {
    const auto it = std::find(v.begin(), v.end(), s);
    return it == v.end() ? -1 : static_cast<int>(it - v.begin());
}

}  // namespace

const std::vector<std::string>& world_colours() {
    static const std::vector<std::string> v = {"red", "green", "blue", "yellow", "magenta", "cyan"};
    return v;
}
const std::vector<std::string>& world_shapes() {
    static const std::vector<std::string> v = {"circle", "square", "triangle"};
    return v;
}
const std::vector<std::string>& world_rows() {
    static const std::vector<std::string> v = {"top", "middle", "bottom"};
    return v;
}
const std::vector<std::string>& world_cols() {
    static const std::vector<std::string> v = {"left", "center", "right"};
    return v;
}
const std::vector<std::string>& world_sizes() {
    static const std::vector<std::string> v = {"small", "large"};
    return v;
}

std::string caption(const Scene& s) {
    return "a " + world_sizes().at(static_cast<size_t>(s.size)) + " " + world_colours().at(static_cast<size_t>(s.colour)) + " " +
           world_shapes().at(static_cast<size_t>(s.shape)) + " at the " + world_rows().at(static_cast<size_t>(s.row)) + " " +
           world_cols().at(static_cast<size_t>(s.col));
}

std::optional<Scene> parse_caption(const std::string& text) {
    static const std::regex re(R"(^a (\w+) (\w+) (\w+) at the (\w+) (\w+)$)");
    std::smatch m;
    if (!std::regex_match(text, m, re)) return std::nullopt;
    Scene s;
    s.size = index_of(world_sizes(), m[1]);
    s.colour = index_of(world_colours(), m[2]);
    s.shape = index_of(world_shapes(), m[3]);
    s.row = index_of(world_rows(), m[4]);
    s.col = index_of(world_cols(), m[5]);
    if (s.size < 0 || s.colour < 0 || s.shape < 0 || s.row < 0 || s.col < 0) return std::nullopt;
    return s;
}

std::vector<Scene> all_scenes() {
    std::vector<Scene> out;
    for (int size = 0; size < 2; ++size)
        for (int colour = 0; colour < 6; ++colour)
            for (int shape = 0; shape < 3; ++shape)
                for (int row = 0; row < 3; ++row)
                    for (int col = 0; col < 3; ++col) out.push_back({colour, shape, row, col, size});
    return out;
}

WorldSplit split_world(int64_t heldout, uint64_t seed) {
    auto scenes = all_scenes();
    if (heldout < 0 || heldout >= static_cast<int64_t>(scenes.size()))
        throw Error("held-out scenes must number 0 to " + std::to_string(scenes.size() - 1) + ", got " + std::to_string(heldout));
    // Fisher-Yates on mt19937_64's raw output (std::shuffle differs between standard libraries).
    std::mt19937_64 rng(seed);
    for (size_t i = scenes.size() - 1; i > 0; --i) std::swap(scenes[i], scenes[static_cast<size_t>(rng() % (i + 1))]);
    WorldSplit s;
    s.heldout.assign(scenes.begin(), scenes.begin() + heldout);
    s.train.assign(scenes.begin() + heldout, scenes.end());
    return s;
}

torch::Tensor render(const Scene& s, int64_t size, uint64_t jitter_seed) {
    if (size < 32) throw Error("the shape world renders images of at least 32 pixels, got " + std::to_string(size));
    if (s.shape < 0 || s.shape > kSubjectShape) throw Error("the shape world has no shape " + std::to_string(s.shape));
    const int64_t r = radius(s.size, size), j = jitter_of(size);
    std::mt19937_64 rng(jitter_seed);
    std::uniform_int_distribution<int64_t> jit(-j, j);
    auto centre = [&](int cell) {
        const int64_t c = std::llround(static_cast<double>(2 * cell + 1) * static_cast<double>(size) / 6.0) + jit(rng);
        return std::clamp<int64_t>(c, r, size - 1 - r);
    };
    const int64_t cx = centre(s.col), cy = centre(s.row);
    auto img = torch::full({size, size, 3}, 255, torch::kUInt8);
    auto a = img.accessor<uint8_t, 3>();
    const auto& rgb = kPalette.at(static_cast<size_t>(s.colour));
    for (int64_t y = cy - r; y <= cy + r; ++y)
        for (int64_t x = cx - r; x <= cx + r; ++x) {
            const int64_t dx = x - cx, dy = y - cy;
            bool in = false;
            if (s.shape == 0) in = dx * dx + dy * dy <= r * r + r;             // circle
            else if (s.shape == 1) in = true;                                   // square
            else if (s.shape == 2) in = std::abs(dx) <= (dy + r) / 2;           // triangle, apex up
            else in = std::abs(dy) <= r / 3;                                     // kSubjectShape: a wide bar
            if (!in) continue;
            for (int c = 0; c < 3; ++c) a[y][x][c] = static_cast<uint8_t>(rgb[static_cast<size_t>(c)]);
        }
    return img;
}

CheckResult check_image(const torch::Tensor& pixels, bool subject_shape) {
    CheckResult out;
    if (pixels.dim() != 3 || pixels.size(2) != 3 || pixels.scalar_type() != torch::kUInt8)
        throw Error("the shape-world checker reads uint8 [H, W, 3] images, got " + c10::str(pixels.sizes()));
    const auto img = pixels.contiguous();
    const int64_t H = img.size(0), W = img.size(1);
    auto a = img.accessor<uint8_t, 3>();
    // Foreground: clearly not white.
    std::vector<uint8_t> fg(static_cast<size_t>(H * W));
    for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
            int darkest = 255;
            for (int c = 0; c < 3; ++c) darkest = std::min<int>(darkest, a[y][x][c]);
            fg[static_cast<size_t>(y * W + x)] = darkest < 195;
        }
    // The largest 4-connected component; the others must be specks.
    std::vector<int> label(fg.size(), -1);
    std::vector<std::vector<int64_t>> comps;
    for (int64_t start = 0; start < H * W; ++start) {
        if (!fg[static_cast<size_t>(start)] || label[static_cast<size_t>(start)] >= 0) continue;
        std::vector<int64_t> comp{start}, stack{start};
        label[static_cast<size_t>(start)] = static_cast<int>(comps.size());
        while (!stack.empty()) {
            const int64_t p = stack.back();
            stack.pop_back();
            const int64_t y = p / W, x = p % W;
            const int64_t nb[4][2] = {{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}};
            for (const auto& n : nb) {
                if (n[0] < 0 || n[0] >= H || n[1] < 0 || n[1] >= W) continue;
                const int64_t q = n[0] * W + n[1];
                if (!fg[static_cast<size_t>(q)] || label[static_cast<size_t>(q)] >= 0) continue;
                label[static_cast<size_t>(q)] = static_cast<int>(comps.size());
                comp.push_back(q);
                stack.push_back(q);
            }
        }
        comps.push_back(std::move(comp));
    }
    if (comps.empty()) {
        out.reason = "no shape (the image is blank)";
        return out;
    }
    std::sort(comps.begin(), comps.end(), [](const auto& x, const auto& y) { return x.size() > y.size(); });
    const auto& shape = comps.front();
    int64_t rest = 0;
    for (size_t i = 1; i < comps.size(); ++i) rest += static_cast<int64_t>(comps[i].size());
    if (shape.size() < 5) {
        out.reason = "no shape (only specks)";
        return out;
    }
    if (rest * 5 > static_cast<int64_t>(shape.size())) {
        out.reason = "more than one shape";
        return out;
    }
    int64_t y0 = H, y1 = -1, x0 = W, x1 = -1;
    double sx = 0, sy = 0, rgb[3] = {0, 0, 0};
    for (int64_t p : shape) {
        const int64_t y = p / W, x = p % W;
        y0 = std::min(y0, y), y1 = std::max(y1, y), x0 = std::min(x0, x), x1 = std::max(x1, x);
        sx += static_cast<double>(x), sy += static_cast<double>(y);
        for (int c = 0; c < 3; ++c) rgb[c] += a[y][x][c];
    }
    const double n = static_cast<double>(shape.size());
    // Colour: the nearest palette entry to the mean.
    double best = 1e18;
    for (size_t k = 0; k < kPalette.size(); ++k) {
        double d = 0;
        for (int c = 0; c < 3; ++c) d += std::pow(rgb[c] / n - kPalette[k][static_cast<size_t>(c)], 2);
        if (d < best) best = d, out.scene.colour = static_cast<int>(k);
    }
    if (std::sqrt(best) > 90) {
        out.reason = "a colour outside the palette";
        return out;
    }
    // Size from the extent, shape from the halves and the fill, cell from the centroid.
    const int64_t h = y1 - y0 + 1, w = x1 - x0 + 1, extent = std::max(h, w);
    const int64_t small = 2 * radius(0, H) + 1, large = 2 * radius(1, H) + 1;
    out.scene.size = 2 * extent > small + large ? 1 : 0;
    int64_t top = 0, bottom = 0;
    for (int64_t p : shape) {
        const int64_t y = p / W;
        if (2 * (y - y0) < h - 1) ++top;
        if (2 * (y - y0) > h - 1) ++bottom;
    }
    const double fill = n / static_cast<double>(h * w);
    if (subject_shape && w >= 2 * h)
        out.scene.shape = kSubjectShape;
    else if (bottom > 0 && static_cast<double>(top) < 0.6 * static_cast<double>(bottom))
        out.scene.shape = 2;
    else
        out.scene.shape = fill > 0.93 ? 1 : 0;
    out.scene.col = std::clamp(static_cast<int>(3.0 * (sx / n + 0.5) / static_cast<double>(W)), 0, 2);
    out.scene.row = std::clamp(static_cast<int>(3.0 * (sy / n + 0.5) / static_cast<double>(H)), 0, 2);
    out.found = true;
    return out;
}

void WorldScore::add(const CheckResult& got, const Scene& want) {
    ++images;
    if (!got.found) return;
    ++found;
    const Scene& s = got.scene;
    colour += s.colour == want.colour;
    shape += s.shape == want.shape;
    row += s.row == want.row;
    col += s.col == want.col;
    position += s.row == want.row && s.col == want.col;
    size += s.size == want.size;
    accepted += s == want;
}

WorldSamples generate_and_check(StableDiffusion& sd, const std::vector<Scene>& scenes, const GenerateOptions& options, int64_t chunk) {
    if (chunk < 1) throw Error("generate_and_check: chunk must be positive");
    WorldSamples out;
    std::vector<torch::Tensor> pixels;
    const auto n = static_cast<int64_t>(scenes.size());
    for (int64_t start = 0; start < n; start += chunk) {
        GenerateOptions g = options;
        g.prompt.clear();
        g.prompts.clear();
        g.latents = torch::Tensor();
        for (int64_t i = start; i < std::min(n, start + chunk); ++i) g.prompts.push_back(caption(scenes[static_cast<size_t>(i)]));
        g.seed = options.seed * 1000 + static_cast<uint64_t>(start / chunk);
        pixels.push_back(generate(sd, g).pixels);
    }
    if (pixels.empty()) return out;
    out.pixels = torch::cat(pixels);
    for (int64_t i = 0; i < n; ++i) out.score.add(check_image(out.pixels[i]), scenes[static_cast<size_t>(i)]);
    return out;
}

}  // namespace hra::diffusion
