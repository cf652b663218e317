// The shape world: captions, the fixed split, and the checker's exactness on
// every rendered scene (the checker is what the diffusion demo reports).
#include <filesystem>
#include <fstream>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "diffusion/shape_world.h"
#include "io/png.h"
#include "test_util.h"

using namespace hra::diffusion;
using hra::Error;

TEST(ShapeWorld, CaptionsAndSplit) {
    const auto scenes = all_scenes();
    EXPECT_EQ(scenes.size(), 324u);
    std::set<std::string> captions;
    for (const auto& s : scenes) {
        const auto c = caption(s);
        captions.insert(c);
        auto back = parse_caption(c);
        ASSERT_TRUE(back.has_value()) << c;
        EXPECT_TRUE(*back == s) << c;
    }
    EXPECT_EQ(captions.size(), 324u);
    EXPECT_EQ(caption({0, 2, 1, 1, 0}), "a small red triangle at the middle center");
    EXPECT_FALSE(parse_caption("a small red hexagon at the top left").has_value());
    EXPECT_FALSE(parse_caption("a red circle").has_value());

    const auto split = split_world(100, 0);
    EXPECT_EQ(split.heldout.size(), 100u);
    EXPECT_EQ(split.train.size(), 224u);
    std::set<std::string> train;
    for (const auto& s : split.train) train.insert(caption(s));
    for (const auto& s : split.heldout) EXPECT_FALSE(train.count(caption(s))) << caption(s);
    // Every attribute value is seen in training (held-out scenes are new combinations).
    std::set<int> colours, shapes, rows, cols, sizes;
    for (const auto& s : split.train) colours.insert(s.colour), shapes.insert(s.shape), rows.insert(s.row), cols.insert(s.col), sizes.insert(s.size);
    EXPECT_EQ(colours.size(), 6u);
    EXPECT_EQ(shapes.size(), 3u);
    EXPECT_EQ(rows.size() * cols.size() * sizes.size(), 18u);
    EXPECT_EQ(caption(split_world(100, 0).heldout[7]), caption(split.heldout[7]));  // deterministic
}

// The checker reads back every scene from its rendering, at 32 and 64 pixels,
// over several jitters; and refuses blank, crowded and off-palette images.
TEST(ShapeWorld, CheckerIsExactOnRenderedScenes) {
    int checked = 0;
    for (int64_t size : {32, 64})
        for (const auto& s : all_scenes())
            for (uint64_t seed = 0; seed < (size == 32 ? 6u : 2u); ++seed) {
                const auto r = check_image(render(s, size, seed));
                ASSERT_TRUE(r.found) << caption(s) << " at " << size << ": " << r.reason;
                ASSERT_TRUE(r.scene == s) << caption(s) << " read as " << caption(r.scene) << " (size " << size << ", seed " << seed << ")";
                ++checked;
            }
    EXPECT_EQ(checked, 324 * 6 + 324 * 2);

    EXPECT_FALSE(check_image(torch::full({32, 32, 3}, 255, torch::kUInt8)).found);
    auto two = render({0, 1, 0, 0, 1}, 32, 0);
    auto other = render({2, 0, 2, 2, 1}, 32, 0);
    two = torch::minimum(two, other);
    const auto crowded = check_image(two);
    EXPECT_FALSE(crowded.found);
    EXPECT_EQ(crowded.reason, "more than one shape");
    auto grey = render({0, 1, 1, 1, 1}, 32, 0);
    grey.masked_fill_(grey.lt(255), 128);  // a grey square: not a palette colour
    EXPECT_FALSE(check_image(grey).found);
}

// The subject shape of `hra demo --subject` (a wide bar no caption names): its
// pixel counts worked out by hand, read back at every colour, cell and size
// when asked for, and the three captioned shapes still read right then.
TEST(ShapeWorld, SubjectShapeIsABarTheCheckerFindsOnlyWhenAsked) {
    auto count = [](const torch::Tensor& img) { return img.lt(255).any(2).sum().item<int64_t>(); };
    // 32 px: large radius 4, |dy| <= 1: 9 wide, 3 high = 27; small radius 2, |dy| <= 0: 5 x 1 = 5.
    EXPECT_EQ(count(render({0, kSubjectShape, 1, 1, 1}, 32, 0)), 27);
    EXPECT_EQ(count(render({0, kSubjectShape, 1, 1, 0}, 32, 0)), 5);
    // 64 px: radius 8, |dy| <= 2: 17 x 5 = 85.
    EXPECT_EQ(count(render({0, kSubjectShape, 1, 1, 1}, 64, 0)), 85);
    int checked = 0;
    for (int64_t size : {32, 64})
        for (int colour = 0; colour < 6; ++colour)
            for (int cell = 0; cell < 9; ++cell)
                for (int big = 0; big < 2; ++big)
                    for (uint64_t seed = 0; seed < 3; ++seed) {
                        const Scene s{colour, kSubjectShape, cell / 3, cell % 3, big};
                        const auto r = check_image(render(s, size, seed), true);
                        ASSERT_TRUE(r.found) << r.reason;
                        ASSERT_TRUE(r.scene == s) << "bar " << colour << "/" << cell << "/" << big << " at " << size << " read as shape "
                                                  << r.scene.shape << " " << caption({r.scene.colour, 0, r.scene.row, r.scene.col, r.scene.size});
                        EXPECT_NE(check_image(render(s, size, seed)).scene.shape, kSubjectShape);  // not asked: never reported
                        ++checked;
                    }
    EXPECT_EQ(checked, 2 * 6 * 9 * 2 * 3);
    for (int64_t size : {32, 64})
        for (const auto& s : all_scenes()) ASSERT_TRUE(check_image(render(s, size, 1), true).scene == s) << caption(s);
    EXPECT_THROW(render({0, 4, 0, 0, 0}, 32, 0), Error);
}

TEST(ShapeWorld, CliRendersAndChecks) {
    hra::test::TempDir dir;
    auto r = hra::test::run_hra("-q sd world render --split heldout --per-scene 2 --out " + (dir / "held"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    std::ifstream meta(dir / "held/metadata.jsonl");
    std::string line;
    int n = 0;
    while (std::getline(meta, line)) {
        const auto j = nlohmann::json::parse(line);
        EXPECT_TRUE(parse_caption(j.at("text")).has_value());
        EXPECT_TRUE(std::filesystem::exists(dir / ("held/" + j.at("file_name").get<std::string>())));
        ++n;
    }
    EXPECT_EQ(n, 200);
    r = hra::test::run_hra("sd world check --images " + (dir / "held"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out.substr(r.out.rfind('{')));
    EXPECT_EQ(j.at("images"), 200);
    EXPECT_EQ(j.at("accepted"), 200);
    EXPECT_DOUBLE_EQ(j.at("accuracy").get<double>(), 1.0);
    EXPECT_NEAR(j.at("chance").get<double>(), 1.0 / 324, 1e-12);
    // A wrong caption is not accepted.
    hra::io::write_png(dir / "held/00000.png", render({3, 1, 2, 2, 0}, 32, 0));
    r = hra::test::run_hra("sd world check --images " + (dir / "held"), dir);
    EXPECT_EQ(nlohmann::json::parse(r.out.substr(r.out.rfind('{'))).at("accepted"), 199);
}
