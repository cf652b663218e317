// LPIPS (VGG, v0.1) against tests/fixtures/lpips/lpips-vgg-tiny, made by
// richzhang/PerceptualSimilarity itself (make_lpips_fixture.py) on a tiny random trunk.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/safetensors.h"
#include "models/lpips.h"
#include "test_util.h"

using namespace hra;
using hra::test::error_of;

namespace {

std::string lpips_fixture(const std::string& name) { return std::string(HRA_TEST_FIXTURES) + "/lpips/lpips-vgg-tiny/" + name; }

double max_rel(const torch::Tensor& got, const torch::Tensor& want) {
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-300)).item<double>();
}

}  // namespace

// float64: the distances, each layer's term, the scaled input and the [0, 1]
// path equal the reference: bit-identical here (0), asserted at 1e-14 relative.
TEST(Lpips, MatchesReferenceFloat64) {
    auto io = io::SafetensorsFile::open(lpips_fixture("io.safetensors"));
    const auto m = models::Lpips::load(lpips_fixture("vgg.safetensors"), lpips_fixture("lin.safetensors"), torch::kDouble);
    const auto in0 = io.tensor("in0"), in1 = io.tensor("in1");
    const auto d = m.distance(in0, in1);
    const auto want = io.tensor("distance").view({-1});
    EXPECT_LT(max_rel(d, want), 1e-14) << d << want;
    EXPECT_EQ(d[0].item<double>(), 0.0);  // identical images
    EXPECT_GT(want[1].item<double>(), 0.1);
    const auto terms = m.layer_terms(in0, in1);
    ASSERT_EQ(terms.size(), 5U);
    for (size_t k = 0; k < 5; ++k)
        EXPECT_LT(max_rel(terms[k], io.tensor("layer" + std::to_string(k)).view({-1})), 1e-14) << "layer " << k;
    EXPECT_LT(max_rel(m.scale_input(in0), io.tensor("scaled_in0")), 1e-15);
    const auto feats = m.features(m.scale_input(in0));
    for (size_t k = 0; k < 5; ++k) EXPECT_LT(max_rel(feats[k], io.tensor("features_in0." + std::to_string(k))), 1e-14) << k;
    EXPECT_LT(max_rel(m.distance(io.tensor("in0_01"), io.tensor("in1_01"), true), io.tensor("distance_normalize").view({-1})), 1e-14);
}

// float32 (the product's dtype): within 1e-5 relative (the reference's own
// float32 run differs from its float64 one by 1e-7).
TEST(Lpips, MatchesReferenceFloat32) {
    auto io = io::SafetensorsFile::open(lpips_fixture("io.safetensors"));
    const auto m = models::Lpips::load(lpips_fixture("vgg.safetensors"), lpips_fixture("lin.safetensors"));
    const auto d = m.distance(io.tensor("in0").to(torch::kFloat), io.tensor("in1").to(torch::kFloat));
    EXPECT_LT(max_rel(d.to(torch::kDouble), io.tensor("distance").view({-1})), 1e-5);
}

// Shapes that do not fit are reported with file and key; the bundled real lin
// weights (data/lpips) fit a full-width VGG16 trunk and not the tiny one.
TEST(Lpips, BadWeightsNameFileAndKey) {
    test::TempDir dir;
    auto vgg = io::SafetensorsFile::open(lpips_fixture("vgg.safetensors"));
    io::NamedTensors t;
    for (const auto& n : vgg.names()) t.emplace_back(n, vgg.tensor(n).clone());
    for (auto& [n, v] : t)
        if (n == "features.5.weight") v = torch::zeros({6, 5, 3, 3});
    io::save_safetensors(dir / "bad.safetensors", t);
    auto e = error_of([&] { models::Lpips::load(dir / "bad.safetensors", lpips_fixture("lin.safetensors")); });
    EXPECT_NE(e.find("bad.safetensors"), std::string::npos) << e;
    EXPECT_NE(e.find("features.5.weight"), std::string::npos) << e;
    // The tiny trunk with the real (64…512-channel) lin weights: the first lin layer does not fit.
    e = error_of([&] { models::Lpips::load(lpips_fixture("vgg.safetensors"), std::string(HRA_DATA_DIR) + "/lpips/vgg-v0.1-lin.safetensors"); });
    EXPECT_NE(e.find("lin0.model.1.weight"), std::string::npos) << e;
    EXPECT_NE(e.find("[1, 4, 1, 1]"), std::string::npos) << e;
    io::NamedTensors full;
    const std::vector<std::pair<int, int64_t>> convs = {{0, 64}, {2, 64}, {5, 128}, {7, 128}, {10, 256}, {12, 256}, {14, 256},
                                                        {17, 512}, {19, 512}, {21, 512}, {24, 512}, {26, 512}, {28, 512}};
    int64_t in = 3;
    for (auto [i, out] : convs) {
        full.emplace_back("features." + std::to_string(i) + ".weight", torch::randn({out, in, 3, 3}) * 0.05);
        full.emplace_back("features." + std::to_string(i) + ".bias", torch::zeros({out}));
        in = out;
    }
    io::save_safetensors(dir / "vgg16.safetensors", full);
    const auto real = models::Lpips::load(dir / "vgg16.safetensors", std::string(HRA_DATA_DIR) + "/lpips/vgg-v0.1-lin.safetensors");
    const auto x = torch::rand({1, 3, 32, 32}) * 2 - 1;
    EXPECT_EQ(real.distance(x, x).item<float>(), 0.0F);
    EXPECT_GT(real.distance(x, -x).item<float>(), 0.0F);
    const auto m = models::Lpips::load(lpips_fixture("vgg.safetensors"), lpips_fixture("lin.safetensors"));
    e = error_of([&] { m.distance(torch::zeros({1, 3, 8, 8}), torch::zeros({1, 3, 8, 8})); });
    EXPECT_NE(e.find("16"), std::string::npos) << e;
}
