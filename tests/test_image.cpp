// Image decoding, Pillow-exact resizing and the image processors, against
// tests/fixtures/images (made by Pillow 9.4.0 with make_image_fixture.py) and
// hand-worked cases.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data/image.h"
#include "io/atomic_file.h"
#include "io/jpeg.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace hra;
using hra::test::error_of;

namespace {

std::string image_fixture(const std::string& name) { return std::string(HRA_TEST_FIXTURES) + "/images/" + name; }

struct Fixture {
    io::SafetensorsFile file = io::SafetensorsFile::open(image_fixture("images.safetensors"));
    nlohmann::json cases = nlohmann::json::parse(io::read_file(image_fixture("cases.json")))["cases"];
    torch::Tensor get(const std::string& key) { return file.tensor(key).clone(); }
    std::vector<nlohmann::json> of_kind(const std::string& kind) {
        std::vector<nlohmann::json> out;
        for (const auto& c : cases)
            if (c["kind"] == kind) out.push_back(c);
        return out;
    }
};

int64_t max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
    return (a.to(torch::kInt) - b.to(torch::kInt)).abs().max().item<int64_t>();
}

}  // namespace

// Every filter × every size (down, up, mixed, same, 1x1, thin) equals Pillow's
// output exactly: 6 filters × 10 sizes.
TEST(Image, ResizeEqualsPillow) {
    Fixture fx;
    const auto cases = fx.of_kind("resize");
    ASSERT_EQ(cases.size(), 60U);
    for (const auto& c : cases) {
        const auto src = fx.get(c["source"]);
        const auto want = fx.get(c["key"]);
        const auto got = data::resize(src, c["width"], c["height"], data::resample_from_code(c["resample"]));
        ASSERT_EQ(got.sizes(), want.sizes()) << c["key"];
        EXPECT_EQ(max_abs_diff(got, want), 0) << c["key"];
    }
}

// Bilinear 4 → 2 along a row, worked by hand from Pillow's rule: the filter is
// stretched by the scale 2 (support 2), taps (0.75, 0.75, 0.25)/1.75 and
// (0.25, 0.75, 0.75)/1.75: 500/7 = 71.4 → 71 and 1465/7 = 209.3 → 209.
TEST(Image, BilinearShrinkByHand) {
    auto row = torch::tensor({0, 100, 200, 255}, torch::kUInt8).view({1, 4, 1});
    auto got = data::resize(row, 2, 1, data::Resample::Bilinear);
    EXPECT_EQ(got.flatten()[0].item<int>(), 71);
    EXPECT_EQ(got.flatten()[1].item<int>(), 209);
    // Same size: an unchanged copy.
    EXPECT_TRUE(torch::equal(data::resize(row, 4, 1, data::Resample::Bicubic), row));
}

// JPEG (baseline, progressive, 4:4:4, grey) and PNG (RGBA, grey, grey+alpha,
// palette) decode to Pillow's Image.convert("RGB") pixels exactly.
TEST(Image, DecodeEqualsPillow) {
    Fixture fx;
    const auto cases = fx.of_kind("decode");
    ASSERT_EQ(cases.size(), 8U);
    for (const auto& c : cases) {
        const auto got = data::load_rgb(image_fixture(c["file"]));
        const auto want = fx.get(c["key"]);
        ASSERT_EQ(got.sizes(), want.sizes()) << c["file"];
        EXPECT_EQ(max_abs_diff(got, want), 0) << c["file"];
    }
}

// transformers' CLIP and ViT processors (from preprocessor configs, class
// defaults for what they leave out), LPIPS' and DreamBooth's torchvision chains.
TEST(Image, ProcessorsEqualReference) {
    Fixture fx;
    const auto cases = fx.of_kind("process");
    ASSERT_EQ(cases.size(), 6U);
    std::map<std::string, data::ImageProcessor> procs;
    procs["clip_noise"] = data::ImageProcessor::from_json(
        {{"image_processor_type", "CLIPImageProcessor"}, {"size", {{"shortest_edge", 24}}}, {"crop_size", {{"height", 20}, {"width", 20}}}},
        "clip");
    // The old format: an integer size is CLIP's shortest edge.
    procs["clip_edges"] = data::ImageProcessor::from_json(
        {{"feature_extractor_type", "CLIPFeatureExtractor"}, {"size", 31}, {"crop_size", 25}, {"resample", 3}}, "clip-old");
    // An integer size is ViT's square; resample 2 and no crop are ViT's defaults.
    procs["vit_noise"] = data::ImageProcessor::from_json(
        {{"feature_extractor_type", "ViTFeatureExtractor"}, {"size", 20}, {"image_mean", {0.485, 0.456, 0.406}}, {"image_std", {0.229, 0.224, 0.225}}},
        "vit");
    procs["vit_half"] = data::ImageProcessor::from_json({{"image_processor_type", "ViTImageProcessor"}, {"size", {{"height", 16}, {"width", 16}}}}, "vit2");
    procs["lpips_noise"] = data::ImageProcessor::lpips(32);
    data::ImageProcessor db;
    db.size_kind = data::ImageProcessor::Size::ShortestEdge;
    db.shortest_edge = 24;
    db.do_center_crop = true;
    db.crop_width = db.crop_height = 24;
    db.torchvision_divide = true;
    procs["dreambooth_edges"] = db;
    for (const auto& c : cases) {
        const std::string name = c["name"];
        ASSERT_TRUE(procs.count(name)) << name;
        const auto got = procs[name](fx.get(c["source"]));
        const auto want = fx.get(c["key"]);
        ASSERT_EQ(got.sizes(), want.sizes()) << name;
        EXPECT_EQ((got - want).abs().max().item<float>(), 0.0F) << name;
    }
}

TEST(Image, Crops) {
    auto img = torch::arange(1, 7, torch::kUInt8).view({2, 3, 1});  // 3 wide, 2 high
    // Larger crop: centred on zeros, top = (4 - 2) // 2 = 1, left = (4 - 3) // 2 = 0.
    auto c = data::center_crop(img, 4, 4).view({4, 4});
    auto want = torch::tensor({0, 0, 0, 0, 1, 2, 3, 0, 4, 5, 6, 0, 0, 0, 0, 0}, torch::kUInt8).view({4, 4});
    EXPECT_TRUE(torch::equal(c, want)) << c;
    // Odd margin: left = (3 - 2) // 2 = 0 (transformers floors; torchvision would round to 1... also 0 here: round(0.5) = 0).
    EXPECT_TRUE(torch::equal(data::center_crop(img, 2, 1).flatten(), torch::tensor({1, 2}, torch::kUInt8)));
    auto g1 = at::detail::createCPUGenerator(7), g2 = at::detail::createCPUGenerator(7);
    auto big = torch::arange(0, 100, torch::kInt).to(torch::kUInt8).view({10, 10, 1});
    auto r1 = data::random_crop(big, 4, 3, g1), r2 = data::random_crop(big, 4, 3, g2);
    EXPECT_TRUE(torch::equal(r1, r2));
    EXPECT_EQ(r1.sizes(), (std::vector<int64_t>{3, 4, 1}));
    EXPECT_NE(error_of([&] { data::random_crop(big, 11, 3, g1); }).find("smaller than the 11x3 crop"), std::string::npos);
    EXPECT_TRUE(data::all_black(torch::zeros({2, 2, 3}, torch::kUInt8)));
    EXPECT_FALSE(data::all_black(img));
}

TEST(Image, BadInputNamesTheFile) {
    test::TempDir dir;
    const std::string good = io::read_file(image_fixture("jpeg_baseline.jpg"));
    io::write_file_atomically(dir / "cut.jpg", good.substr(0, good.size() / 2));
    auto e = error_of([&] { data::load_rgb(dir / "cut.jpg"); });
    EXPECT_NE(e.find("cut.jpg"), std::string::npos) << e;
    EXPECT_NE(e.find("corrupt JPEG"), std::string::npos) << e;
    io::write_file_atomically(dir / "text.jpg", "hello, not an image");
    e = error_of([&] { data::load_rgb(dir / "text.jpg"); });
    EXPECT_NE(e.find("not a PNG or JPEG image"), std::string::npos) << e;
    EXPECT_NE(error_of([&] { data::load_rgb(dir / "missing.png"); }).find("missing.png"), std::string::npos);
    e = error_of([&] { data::ImageProcessor::from_json({{"image_processor_type", "SiglipImageProcessor"}}, "pp.json"); });
    EXPECT_NE(e.find("unsupported image processor 'SiglipImageProcessor'"), std::string::npos) << e;
    e = error_of([&] { data::ImageProcessor::from_json({{"image_processor_type", "CLIPImageProcessor"}, {"resample", 9}}, "pp.json"); });
    EXPECT_NE(e.find("pp.json"), std::string::npos) << e;
    EXPECT_NE(e.find("resample"), std::string::npos) << e;
    e = error_of([&] { data::ImageProcessor::from_json({{"image_processor_type", "ViTImageProcessor"}, {"image_std", {0.5, 0, 0.5}}}, "pp.json"); });
    EXPECT_NE(e.find("positive"), std::string::npos) << e;
    // A 299-byte progressive JPEG claiming 46144x12288 pixels (found by fuzz_images: libjpeg's
    // coefficient buffer took 3 GB before any check) is refused on its header.
    e = error_of([&] { data::load_rgb(image_fixture("jpeg_bomb.jpg")); });
    EXPECT_NE(e.find("jpeg_bomb.jpg"), std::string::npos) << e;
    EXPECT_NE(e.find("jpeg_bomb.jpg: the image has 46144x12288 pixels, more than 178956970"), std::string::npos) << e;
    // Sizes beyond int64 (they used to wrap to negative numbers) and fractions are errors naming the key.
    const auto huge = nlohmann::json::parse("18446744073709551615");
    for (const auto& [pp, key] : std::vector<std::pair<nlohmann::json, std::string>>{
             {{{"image_processor_type", "CLIPImageProcessor"}, {"size", {{"shortest_edge", huge}}}}, "'size.shortest_edge'"},
             {{{"feature_extractor_type", "CLIPFeatureExtractor"}, {"size", 24.5}}, "'size'"},
             {{{"image_processor_type", "ViTImageProcessor"}, {"size", {{"height", huge}, {"width", 16}}}}, "'size.height'"},
             {{{"image_processor_type", "ViTImageProcessor"}, {"crop_size", huge}}, "'crop_size'"},
             {{{"image_processor_type", "CLIPImageProcessor"}, {"resample", 2.5}}, "'resample'"},
         }) {
        const nlohmann::json& config = pp;  // a lambda may not capture a structured binding (C++17)
        e = error_of([&] { data::ImageProcessor::from_json(config, "pp.json"); });
        EXPECT_NE(e.find("pp.json: " + key), std::string::npos) << pp.dump() << ": " << e;
    }
}
