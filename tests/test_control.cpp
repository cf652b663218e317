// The control experiment's parts (DIFFUSION.md §4): the hint encoder, the seed's
// adapter placement, the model at init, and the C2I / S2I / L2F metrics.
#include <cmath>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "data/canny.h"
#include "eval/control_metrics.h"
#include "io/png.h"
#include "models/hint_encoder.h"
#include "models/model_weights.h"
#include "models/unet_2d_condition.h"
#include "test_sd15.h"
#include "test_util.h"

using namespace hra;
using hra::test::error_of;

namespace {

torch::Tensor u8(const nlohmann::json& flat, int64_t h, int64_t w, int64_t c) {
    auto v = flat.get<std::vector<int64_t>>();
    return torch::tensor(v).to(torch::kUInt8).view(c == 1 ? std::vector<int64_t>{h, w} : std::vector<int64_t>{h, w, c});
}


}  // namespace

// ldm's input_hint_block, counted by hand: 3·3·(3·16 + 16·16 + 16·32 + 32·32 +
// 32·96 + 96·96 + 96·256 + 256·320) weights + (16+16+32+32+96+96+256+320) biases
// = 1,085,616 + 864 = 1,086,480 (DIFFUSION.md §4).
TEST(Control, HintEncoderIsLdmsInputHintBlock) {
    torch::manual_seed(0);
    HintEncoder enc;
    int64_t n = 0;
    std::vector<std::string> names;
    for (const auto& p : enc->named_parameters()) {
        n += p.value().numel();
        names.push_back(p.key());
    }
    EXPECT_EQ(n, 1086480);
    ASSERT_EQ(names.size(), 16U);
    for (int i = 0; i < 8; ++i) {
        EXPECT_EQ(names[2 * i], "input_hint_block." + std::to_string(2 * i) + ".weight");
        EXPECT_EQ(names[2 * i + 1], "input_hint_block." + std::to_string(2 * i) + ".bias");
    }
    // Zero-initialised last convolution, the others torch's default (not zero).
    const auto params = enc->named_parameters();
    EXPECT_EQ(params["input_hint_block.14.weight"].abs().max().item<double>(), 0.0);
    EXPECT_EQ(params["input_hint_block.14.bias"].abs().max().item<double>(), 0.0);
    EXPECT_GT(params["input_hint_block.12.weight"].abs().max().item<double>(), 0.0);
    torch::NoGradGuard ng;
    const auto hint = torch::rand({2, 3, 64, 48});
    const auto y = enc->forward(hint);
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 320, 8, 6}));
    EXPECT_EQ(y.abs().max().item<double>(), 0.0);
    // A non-zero last layer makes it depend on the hint.
    params["input_hint_block.14.weight"].normal_();
    EXPECT_GT(enc->forward(hint).abs().max().item<double>(), 0.0);
    EXPECT_NE(error_of([&] { enc->forward(torch::rand({1, 3, 20, 16})); }).find("multiples of 8"), std::string::npos);
    EXPECT_NE(error_of([&] { enc->forward(torch::rand({1, 4, 16, 16})); }).find("[B, 3, H, W]"), std::string::npos);
}

// DIFFUSION.md §4, the seed's control placement (tool_add_hra.py): q, k, v and
// out of both attentions and ff.net.0.proj of the 16 transformer blocks. Worked
// by hand: a block of width d has attn1 4d inputs, attn2 2d + 2·768, ff.net.0.proj
// d, so Σ(7d + 1536) over d ∈ 5×320, 5×640, 6×1280 = 7·12,480 + 16·1536 = 111,936.
TEST(Control, PlacementCountsOnSd15) {
    for (int64_t r : {8, 3}) EXPECT_EQ(test::hra_on_sd15(control_adapter_targets(), r), (std::pair<size_t, int64_t>{144, 111936 * r}));
    EXPECT_EQ(111936 * 8, 895488);  // the paper's 0.89M
}

// At init the controlled model is the base model: HRA's paired init makes H = I
// and the hint encoder's last convolution is zero. Same in float64 to 1e-13.
TEST(Control, ModelAtInitEqualsBase) {
    torch::manual_seed(3);
    UNetConfig c;
    c.block_out_channels = {8, 16};
    c.down_cross = {true, false};
    c.up_cross = {false, true};
    c.heads = {2, 2};
    c.transformer_layers = {1, 1};
    c.norm_num_groups = 4;
    c.cross_attention_dim = 12;
    c.layers_per_block = 1;
    c.sample_size = 8;
    UNet2DConditionModel m(c);
    HintEncoderConfig hc;
    hc.hidden = {4, 4, 6, 6, 8, 8, 8};
    hc.out_channels = 8;
    HintEncoder enc(hc);
    m->to(torch::kDouble);
    enc->to(torch::kDouble);
    m->eval();
    torch::NoGradGuard ng;
    const auto x = torch::randn({2, 4, 8, 8}, torch::kDouble), ctx = torch::randn({2, 3, 12}, torch::kDouble);
    const auto t = torch::tensor({10, 900});
    const auto hint = torch::rand({2, 3, 64, 64}, torch::kDouble);
    const auto base = m->forward(x, t, ctx);

    InjectOptions io;
    io.default_targets = control_adapter_targets();
    io.model_type = "UNet2DConditionModel";
    io.output_layers = {};
    PeftModel peft(m.ptr(), io);
    auto cfg = AdapterConfig::of("HRA");
    cfg.r = 4;
    cfg.target_modules = ModuleSelector::of(io.default_targets);
    EXPECT_EQ(peft.add_adapter("default", cfg).size(), 36U);  // 4 transformer blocks (down 1, mid 1, up 2) × 9
    m->to(torch::kDouble);
    const auto controlled = m->forward(x, t, ctx, enc->forward(hint));
    EXPECT_LT(test::rel_err(controlled, base), 1e-13);
    // Not a model that ignores the hint: with the last convolution set, it moves.
    enc->named_parameters()["input_hint_block.14.weight"].normal_();
    EXPECT_GT(test::rel_err(m->forward(x, t, ctx, enc->forward(hint)), base), 1e-3);
}

// C2I against OpenCV's Python binding and the seed's numpy scoring
// (tests/fixtures/control/make_control_fixture.py): edge maps bit-exact, scores to 1e-15.
TEST(Control, CannyAndEdgeScoresMatchTheSeed) {
    const auto doc = nlohmann::json::parse(test::slurp(std::string(HRA_TEST_FIXTURES) + "/control/cases.json"));
    std::vector<std::pair<torch::Tensor, torch::Tensor>> pairs;
    ASSERT_EQ(doc["cases"].size(), 4U);
    for (const auto& c : doc["cases"]) {
        const int64_t h = c["h"], w = c["w"];
        const auto truth = u8(c["truth"], h, w, 3), output = u8(c["output"], h, w, 3);
        const auto et = data::canny(truth), eo = data::canny(output);
        EXPECT_TRUE(et.equal(u8(c["truth_edges"], h, w, 1)));
        EXPECT_TRUE(eo.equal(u8(c["output_edges"], h, w, 1)));
        const auto s = eval::edge_score(eo, et);
        EXPECT_EQ(s.tp, c["tp"].get<int64_t>());
        EXPECT_EQ(s.fp, c["fp"].get<int64_t>());
        EXPECT_EQ(s.fn, c["fn"].get<int64_t>());
        EXPECT_NEAR(s.iou, c["iou"].get<double>(), 1e-15);
        EXPECT_NEAR(s.f1, c["f1"].get<double>(), 1e-15);
        pairs.emplace_back(truth, output);
    }
    const auto sum = eval::c2i(pairs);
    EXPECT_EQ(sum.images, 4);
    EXPECT_EQ(sum.undefined, 0);
    EXPECT_NEAR(sum.iou, doc["mean_iou"].get<double>(), 1e-15);
    EXPECT_NEAR(sum.f1, doc["mean_f1"].get<double>(), 1e-15);
}

// Hand-worked: 3 edge pixels in the output, 2 in the truth, 1 shared → tp 1,
// fp 2, fn 1: IoU 1/4, F1 2/5. Flat images have no edges: undefined, left out.
TEST(Control, EdgeScoreByHand) {
    auto out = torch::zeros({3, 3}, torch::kUInt8), truth = torch::zeros({3, 3}, torch::kUInt8);
    out[0][0] = 255, out[1][1] = 255, out[2][2] = 255;
    truth[1][1] = 255, truth[0][2] = 255;
    const auto s = eval::edge_score(out, truth);
    EXPECT_EQ(s.tp, 1);
    EXPECT_EQ(s.fp, 2);
    EXPECT_EQ(s.fn, 1);
    EXPECT_DOUBLE_EQ(s.iou, 0.25);
    EXPECT_DOUBLE_EQ(s.f1, 0.4);
    const auto flat = torch::full({8, 8, 3}, 77, torch::kUInt8);
    EXPECT_TRUE(std::isnan(eval::edge_score(data::canny(flat), data::canny(flat)).iou));
    const auto sum = eval::c2i({{flat, flat}});
    EXPECT_EQ(sum.undefined, 1);
    EXPECT_TRUE(std::isnan(sum.iou));
    EXPECT_NE(error_of([&] { eval::c2i({{flat, torch::zeros({8, 4, 3}, torch::kUInt8)}}); }).find("one size"), std::string::npos);
    EXPECT_NE(error_of([&] { data::canny(torch::zeros({4, 4, 3})); }).find("uint8"), std::string::npos);
}

// mmsegmentation's accumulation, worked by hand (255 = ignored).
// Image 1: truth [[0,1,1],[2,3,255]] → reduced [[255,0,0],[1,2,255]]; prediction
//   [[2,0,1],[1,1,0]]. Kept: (l0,p0) (l0,p1) (l1,p1) (l2,p1).
// Image 2: truth [[3,3],[1,0]] → [[2,2],[0,255]]; prediction [[2,7],[0,1]] (7 is
//   no class). Kept: (l2,p2) (l2,p7) (l0,p0).
// Totals: intersect (2,1,1), prediction (2,3,1), label (3,1,3); union (3,3,3).
// IoU (2/3,1/3,1/3) → mIoU 4/9; Acc (2/3,1,1/3) → mAcc 2/3; aAcc 4/7.
TEST(Control, SegmentationScoresByHand) {
    for (int64_t classes : {3, 4}) {  // a 4th class, absent everywhere, is left out of the means
        eval::SegmentationScore s(classes);
        s.add(torch::tensor({2, 0, 1, 1, 1, 0}).view({2, 3}), torch::tensor({0, 1, 1, 2, 3, 255}).view({2, 3}).to(torch::kUInt8));
        s.add(torch::tensor({2, 7, 0, 1}).view({2, 2}), torch::tensor({3, 3, 1, 0}).view({2, 2}).to(torch::kUInt8));
        const auto r = s.result();
        EXPECT_EQ(r.images, 2);
        EXPECT_DOUBLE_EQ(r.miou, 4.0 / 9.0) << classes;
        EXPECT_DOUBLE_EQ(r.macc, 2.0 / 3.0) << classes;
        EXPECT_DOUBLE_EQ(r.aacc, 4.0 / 7.0) << classes;
        EXPECT_DOUBLE_EQ(r.iou[0], 2.0 / 3.0);
        EXPECT_DOUBLE_EQ(r.acc[1], 1.0);
        if (classes == 4) {
            EXPECT_TRUE(std::isnan(r.iou[3]));
        }
    }
    eval::SegmentationScore s;
    EXPECT_NE(error_of([&] { s.add(torch::zeros({2, 3}), torch::zeros({3, 2})); }).find("one size"), std::string::npos);
}

// L2F by hand: truth points (2i, 4i) at 1024 px are (i, 2i) at 512; an output at
// (i + 3, 2i + 4) is 5 px off at every point, one at (i, 2i) is 0: mean 2.5. A
// face not found and an output without truth are counted, not scored.
TEST(Control, LandmarkErrorByHand) {
    test::TempDir dir;
    nlohmann::json truth, out;
    nlohmann::json t = nlohmann::json::array(), off = nlohmann::json::array(), same = nlohmann::json::array();
    for (int i = 0; i < 68; ++i) {
        t.push_back({2 * i, 4 * i});
        off.push_back({i + 3, 2 * i + 4});
        same.push_back({i, 2 * i});
    }
    truth["a.png"] = t, truth["b.png"] = t, truth["c.png"] = t;
    out["a.png"] = off, out["b.png"] = same, out["c.png"] = nullptr, out["d.png"] = same;
    std::ofstream(dir / "truth.json") << truth.dump();
    std::ofstream(dir / "out.json") << out.dump();
    const auto s = eval::l2f(eval::read_landmarks_json(dir / "out.json"), eval::read_landmarks_json(dir / "truth.json"));
    EXPECT_DOUBLE_EQ(s.error, 2.5);
    EXPECT_EQ(s.scored, 2);
    EXPECT_EQ(s.undetected, 1);
    EXPECT_EQ(s.missing_truth, 1);
    out["a.png"].erase(0);
    std::ofstream(dir / "bad.json") << out.dump();
    const auto e = error_of([&] { eval::read_landmarks_json(dir / "bad.json"); });
    EXPECT_NE(e.find("bad.json"), std::string::npos) << e;
    EXPECT_NE(e.find("a.png"), std::string::npos) << e;
    EXPECT_NE(e.find("68"), std::string::npos) << e;
}

// The command line over folders: C2I of the fixture's pairs written as PNGs
// (same numbers as above), S2I of the hand-worked maps, bad input named.
TEST(Control, EvalControlCommand) {
    test::TempDir dir;
    const auto doc = nlohmann::json::parse(test::slurp(std::string(HRA_TEST_FIXTURES) + "/control/cases.json"));
    std::filesystem::create_directories(dir / "truth");
    std::filesystem::create_directories(dir / "out");
    int i = 0;
    for (const auto& c : doc["cases"]) {
        const int64_t h = c["h"], w = c["w"];
        const auto name = "img" + std::to_string(i++) + ".png";
        io::write_png(dir / ("truth/" + name), u8(c["truth"], h, w, 3));
        io::write_png(dir / ("out/" + name), u8(c["output"], h, w, 3));
    }
    auto r = test::run_hra("sd eval-control --metric c2i --truth " + (dir / "truth") + " --outputs " + (dir / "out") + " --out " +
                               (dir / "c2i.json"),
                           dir);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto j = nlohmann::json::parse(test::slurp(dir / "c2i.json"));
    EXPECT_NEAR(j["iou"].get<double>(), doc["mean_iou"].get<double>(), 1e-15);
    EXPECT_NEAR(j["f1"].get<double>(), doc["mean_f1"].get<double>(), 1e-15);
    EXPECT_EQ(j["images"], 4);

    std::filesystem::create_directories(dir / "seg_truth");
    std::filesystem::create_directories(dir / "seg_pred");
    io::write_png(dir / "seg_truth/a.png", torch::tensor({0, 1, 1, 2, 3, 255}).view({2, 3, 1}).to(torch::kUInt8));
    io::write_png(dir / "seg_pred/a.png", torch::tensor({2, 0, 1, 1, 1, 0}).view({2, 3, 1}).to(torch::kUInt8));
    io::write_png(dir / "seg_truth/b.png", torch::tensor({3, 3, 1, 0}).view({2, 2, 1}).to(torch::kUInt8));
    io::write_png(dir / "seg_pred/b.png", torch::tensor({2, 7, 0, 1}).view({2, 2, 1}).to(torch::kUInt8));
    r = test::run_hra("sd eval-control --metric s2i --classes 3 --truth " + (dir / "seg_truth") + " --outputs " + (dir / "seg_pred"), dir);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto last = nlohmann::json::parse(r.out.substr(r.out.rfind('{')));
    EXPECT_DOUBLE_EQ(last["miou"].get<double>(), 4.0 / 9.0);
    EXPECT_DOUBLE_EQ(last["aacc"].get<double>(), 4.0 / 7.0);

    io::write_png(dir / "seg_pred/c.png", torch::zeros({2, 2, 3}, torch::kUInt8));
    r = test::run_hra("sd eval-control --metric s2i --truth " + (dir / "seg_truth") + " --outputs " + (dir / "seg_pred"), dir);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("seg_pred/c.png"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("no ground truth"), std::string::npos) << r.err;
    io::write_png(dir / "seg_truth/c.png", torch::zeros({2, 2, 1}, torch::kUInt8));
    r = test::run_hra("sd eval-control --metric s2i --truth " + (dir / "seg_truth") + " --outputs " + (dir / "seg_pred"), dir);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("8-bit grey PNG"), std::string::npos) << r.err;
    // A 16-bit grey label map (2x2: 1, 258, 300, 2; written by Python's zlib + struct) is refused, not cut to its high bytes.
    const unsigned char png16[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x02, 0x00,
        0x00, 0x00, 0x02, 0x10, 0x00, 0x00, 0x00, 0x00, 0x07, 0x4d, 0x8e, 0xbb, 0x00, 0x00, 0x00, 0x12, 0x49, 0x44, 0x41, 0x54, 0x78,
        0x9c, 0x63, 0x60, 0x60, 0x64, 0x64, 0x62, 0x60, 0xd4, 0x61, 0x60, 0x02, 0x00, 0x00, 0xaf, 0x00, 0x34, 0xa9, 0x3a, 0x54, 0x22,
        0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
    std::ofstream(dir / "seg_pred/c.png", std::ios::binary).write(reinterpret_cast<const char*>(png16), sizeof png16);
    EXPECT_EQ(io::read_png(dir / "seg_pred/c.png").bit_depth, 16);
    r = test::run_hra("sd eval-control --metric s2i --truth " + (dir / "seg_truth") + " --outputs " + (dir / "seg_pred"), dir);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.err.find("16 bits per channel"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("seg_pred/c.png"), std::string::npos) << r.err;
}

// A saved hint encoder loads back bit-identical; a config or weights file that
// does not fit is an error naming that file.
TEST(Control, HintEncoderSavesAndLoads) {
    test::TempDir dir;
    torch::manual_seed(4);
    HintEncoderConfig c;
    c.hidden = {4, 4, 6, 6, 8, 8, 8};
    c.out_channels = 8;
    c.strided = 0;
    HintEncoder enc(c);
    {
        torch::NoGradGuard ng;
        enc->named_parameters()["input_hint_block.14.weight"].normal_();
    }
    save_hint_encoder(enc, dir.path());
    auto back = load_hint_encoder(dir.path());
    EXPECT_EQ(back->config().strided, 0);
    EXPECT_EQ(back->config().hidden, c.hidden);
    const auto a = enc->named_parameters(), b = back->named_parameters();
    ASSERT_EQ(a.size(), b.size());
    for (const auto& p : a) EXPECT_TRUE(p.value().equal(b[p.key()])) << p.key();
    torch::NoGradGuard ng;
    const auto hint = torch::rand({1, 3, 8, 8});
    EXPECT_TRUE(enc->forward(hint).equal(back->forward(hint)));

    auto j = nlohmann::json::parse(test::slurp(dir / "hint_encoder.json"));
    j["out_channels"] = 9;  // the weights hold 8
    std::ofstream(dir / "hint_encoder.json") << j.dump();
    auto e = error_of([&] { load_hint_encoder(dir.path()); });
    EXPECT_NE(e.find("hint_encoder.safetensors"), std::string::npos) << e;
    j.erase("strided");
    std::ofstream(dir / "hint_encoder.json") << j.dump();
    e = error_of([&] { load_hint_encoder(dir.path()); });
    EXPECT_NE(e.find("hint_encoder.json"), std::string::npos) << e;
    EXPECT_NE(e.find("strided"), std::string::npos) << e;
}
