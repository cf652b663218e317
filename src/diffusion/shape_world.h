// A procedurally generated image world with captions and an exact checker, for
// text-to-image experiments that fit on a CPU (issue 10's demo, and what the
// DreamBooth and control experiments fine-tune and measure on).
//
// A scene is one coloured shape on a white background: 6 colours × 3 shapes
// (circle, square, triangle) × 9 positions (3×3 grid) × 2 sizes = 324
// captions such as "a small red circle at the top left". Images are rendered
// at `size` pixels (at least 32) with a seeded jitter of the centre. The
// checker reads colour, shape, position and size back from the pixels; it is
// exact on rendered images (tested over every scene and many jitters) and
// rejects images without one clear shape.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/types.h>

namespace hra::diffusion {

struct Scene {
    int colour = 0, shape = 0, row = 0, col = 0, size = 0;  // indices into the tables below
    bool operator==(const Scene& o) const {
        return colour == o.colour && shape == o.shape && row == o.row && col == o.col && size == o.size;
    }
};

const std::vector<std::string>& world_colours();    // red, green, blue, yellow, magenta, cyan
const std::vector<std::string>& world_shapes();     // circle, square, triangle
const std::vector<std::string>& world_rows();       // top, middle, bottom
const std::vector<std::string>& world_cols();       // left, center, right
const std::vector<std::string>& world_sizes();      // small, large
// A fourth shape that no caption names and all_scenes() never holds: the
// subject of `hra demo --subject`, which the base model never sees. render()
// draws it (a wide bar: the full width, a third of the radius above and below
// the centre line) for Scene::shape == kSubjectShape; check_image() reports it
// only when asked to.
constexpr int kSubjectShape = 3;

// "a small red circle at the top left" ("... at the middle center" for the centre cell).
std::string caption(const Scene& s);
// The scene of a caption made by caption(); nullopt for any other text.
std::optional<Scene> parse_caption(const std::string& text);
// All 324 scenes, in a fixed order.
std::vector<Scene> all_scenes();
// A fixed split of the captions: `heldout` scenes never appear in training
// (every attribute value does, in other combinations).
struct WorldSplit {
    std::vector<Scene> train, heldout;
};
WorldSplit split_world(int64_t heldout = 100, uint64_t seed = 0);

// uint8 [size, size, 3], size >= 32; `jitter_seed` moves the centre by up to size/32 pixels.
torch::Tensor render(const Scene& s, int64_t size = 32, uint64_t jitter_seed = 0);

struct CheckResult {
    bool found = false;  // one clear shape
    Scene scene;         // what the pixels show (when found)
    std::string reason;  // why not found
};
// Reads the scene from uint8 [H, W, 3] pixels. With `subject_shape`, a shape
// at least twice as wide as high is the subject shape (the captioned shapes
// are as wide as high); without it the checker knows those three only.
CheckResult check_image(const torch::Tensor& pixels, bool subject_shape = false);

// Checker counts over many images: `accepted` have every attribute right; an
// attribute counts when the checker found a shape with that attribute right.
struct WorldScore {
    int64_t images = 0, found = 0, accepted = 0;
    int64_t colour = 0, shape = 0, row = 0, col = 0, position = 0, size = 0;
    void add(const CheckResult& got, const Scene& want);
    double share(int64_t count) const { return images == 0 ? 0.0 : static_cast<double>(count) / static_cast<double>(images); }
    double accuracy() const { return share(accepted); }
};

struct StableDiffusion;
struct GenerateOptions;
struct WorldSamples {
    WorldScore score;
    torch::Tensor pixels;  // uint8 [N, H, W, 3], one image per scene
};
// Generates one image per scene's caption with `options` (its prompts are
// replaced; batches of `chunk` prompts, batch b seeded options.seed·1000 + b)
// and checks each against its scene.
WorldSamples generate_and_check(StableDiffusion& sd, const std::vector<Scene>& scenes, const GenerateOptions& options,
                                int64_t chunk = 25);

}  // namespace hra::diffusion
