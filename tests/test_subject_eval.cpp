// Subject-driven metrics (eval/subject.h, hra sd eval-subject): the prompt
// lists and the seed's prompt bug, get_result.py's epoch rule worked by hand,
// the scorer on the tiny image towers, and the command on a folder of runs.
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <sstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "data/image.h"
#include "eval/subject.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "test_util.h"

using namespace hra;
namespace fs = std::filesystem;
using json = nlohmann::json;
using hra::test::error_of;

namespace {

using test::fixture;

// Tiny model folders: DINO (the ViT fixture), a whole CLIPModel (the CLIP
// vision fixture plus a seeded random text tower of the real vocabulary) and
// the LPIPS fixture's trunk, each with a preprocessor config at 32 px.
void write_tiny_models(const std::string& dir) {
    fs::create_directories(dir + "/dino");
    fs::copy_file(fixture("vision/vit-dino-tiny/config.json"), dir + "/dino/config.json");
    fs::copy_file(fixture("vision/vit-dino-tiny/model.safetensors"), dir + "/dino/model.safetensors");
    io::write_file_atomically(dir + "/dino/preprocessor_config.json",
                              json{{"feature_extractor_type", "ViTFeatureExtractor"}, {"size", 32}, {"resample", 2}}.dump());
    fs::create_directories(dir + "/clip");
    auto vision = io::read_json_file(fixture("vision/clip-vision-tiny/config.json"));
    json whole = {{"model_type", "clip"},
                  {"projection_dim", 24},
                  {"vision_config", vision},
                  {"text_config",
                   {{"vocab_size", 49408}, {"hidden_size", 16}, {"intermediate_size", 32}, {"num_hidden_layers", 1},
                    {"num_attention_heads", 2}, {"max_position_embeddings", 77}, {"hidden_act", "quick_gelu"}}}};
    io::write_file_atomically(dir + "/clip/config.json", whole.dump());
    auto f = io::SafetensorsFile::open(fixture("vision/clip-vision-tiny/model.safetensors"));
    io::NamedTensors t;
    for (const auto& n : f.names()) t.emplace_back(n, f.tensor(n).clone());
    torch::manual_seed(0);
    auto rnd = [](std::vector<int64_t> s) { return torch::randn(s) * 0.1; };
    const std::string p = "text_model.";
    t.emplace_back(p + "embeddings.token_embedding.weight", rnd({49408, 16}));
    t.emplace_back(p + "embeddings.position_embedding.weight", rnd({77, 16}));
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
        t.emplace_back(p + "encoder.layers.0.self_attn." + n + ".weight", rnd({16, 16}));
        t.emplace_back(p + "encoder.layers.0.self_attn." + n + ".bias", rnd({16}));
    }
    for (const char* n : {"layer_norm1", "layer_norm2"}) {
        t.emplace_back(p + "encoder.layers.0." + n + ".weight", torch::ones({16}));
        t.emplace_back(p + "encoder.layers.0." + n + ".bias", torch::zeros({16}));
    }
    t.emplace_back(p + "encoder.layers.0.mlp.fc1.weight", rnd({32, 16}));
    t.emplace_back(p + "encoder.layers.0.mlp.fc1.bias", rnd({32}));
    t.emplace_back(p + "encoder.layers.0.mlp.fc2.weight", rnd({16, 32}));
    t.emplace_back(p + "encoder.layers.0.mlp.fc2.bias", rnd({16}));
    t.emplace_back(p + "final_layer_norm.weight", torch::ones({16}));
    t.emplace_back(p + "final_layer_norm.bias", torch::zeros({16}));
    t.emplace_back("text_projection.weight", rnd({24, 16}));
    t.emplace_back("logit_scale", torch::tensor(2.6592));
    io::save_safetensors(dir + "/clip/model.safetensors", t);
    io::write_file_atomically(dir + "/clip/preprocessor_config.json",
                              json{{"image_processor_type", "CLIPImageProcessor"}, {"size", {{"shortest_edge", 32}}},
                                   {"crop_size", {{"height", 32}, {"width", 32}}}}
                                  .dump());
}

eval::SubjectScorer tiny_scorer(const std::string& dir) {
    return eval::SubjectScorer(dir + "/dino", dir + "/clip", fixture("lpips/lpips-vgg-tiny/vgg.safetensors"),
                               fixture("lpips/lpips-vgg-tiny/lin.safetensors"), 32);
}

torch::Tensor noise_image(int64_t seed, int64_t h, int64_t w) {
    torch::manual_seed(static_cast<uint64_t>(seed));
    return torch::randint(0, 256, {h, w, 3}, torch::kLong).to(torch::kUInt8);
}

}  // namespace

// The bundled list (google/dreambooth): 30 subjects, cats and dogs live. The
// seed's evaluate.py takes CLIP-T prompts from the live list for every subject,
// so an object's prompt 12 is "wearing a rainbow scarf" there and "with the
// Eiffel Tower in the background" in its own list (read off the file).
TEST(SubjectEval, PromptListsAndTheSeedsBug) {
    const auto p = eval::DreamBoothPrompts::bundled();
    EXPECT_EQ(p.classes.size(), 30U);
    EXPECT_EQ(p.class_of("bear_plushie"), "stuffed animal");
    EXPECT_TRUE(p.is_live("dog5"));
    EXPECT_FALSE(p.is_live("backpack"));
    EXPECT_EQ(p.prompt("backpack", 12, true), "a qwe backpack wearing a rainbow scarf");
    EXPECT_EQ(p.prompt("backpack", 12, false), "a qwe backpack with the Eiffel Tower in the background");
    EXPECT_EQ(p.prompt("dog", 12, false), "a qwe dog wearing a rainbow scarf");
    EXPECT_EQ(p.prompt("backpack", 24, true), p.prompt("backpack", 24, false));  // "a cube shaped qwe backpack"
    EXPECT_EQ(p.prompt("backpack", 24, true), "a cube shaped qwe backpack");
    EXPECT_NE(error_of([&] { p.prompt("unicorn", 0, true); }).find("unknown DreamBooth subject 'unicorn'"), std::string::npos);
    EXPECT_NE(error_of([&] { p.prompt("dog", 25, true); }).find("out of 0..24"), std::string::npos);
    // The prompt lines are parsed by hand as the regex ^\s*'(.*)'\.format\(unique_token, class_token\),?\s*$
    // read them (libstdc++'s std::regex recursed per character): spaces around, the comma optional;
    // a carriage return inside the quotes is no prompt ('.' does not match it), so the line is an error.
    const std::string text = io::read_file(test::data_file("dreambooth/prompts_and_classes.txt"));
    const std::string first = "'a {0} {1} in the jungle'.format(unique_token, class_token),";
    ASSERT_NE(text.find(first), std::string::npos);
    test::TempDir dir;
    auto with_first = [&](const std::string& line) {
        std::string t = text;
        t.replace(t.find(first), first.size(), line);
        io::write_file_atomically(dir / "p.txt", t);
        return dir / "p.txt";
    };
    EXPECT_EQ(eval::DreamBoothPrompts::load(with_first(" \t'x {0}'.format(unique_token, class_token)\t ")).object_prompts[0], "x {0}");
    EXPECT_EQ(eval::DreamBoothPrompts::load(with_first("''.format(unique_token, class_token),")).object_prompts[0], "");
    for (const char* bad : {"'x\r{0}'.format(unique_token, class_token),", "'x {0}'.format(unique_token, class_token) ,",
                            "x {0}'.format(unique_token, class_token),"})
        EXPECT_NE(error_of([&] { eval::DreamBoothPrompts::load(with_first(bad)); }).find("cannot read this prompt line"), std::string::npos)
            << bad;
}

// get_result.py by hand: DINO (0.5, 0.6, 0.9)/0.4 = (1.25, 1.5, 2.25); CLIP-I
// (0.8, 0.7, 0.75)/0.1 = (8, 7, 7.5); CLIP-T constant: nothing; LPIPS (0.6, NaN→0,
// 0.4)/0.6 = (1, 0, 0.667). Sums 10.25, 8.5, 10.42: epoch 2. Without the NaN
// (LPIPS 0.6, 0.5, 0.4: /0.2 = 3, 2.5, 2) the sums are 12.25, 11, 11.75: epoch 0.
TEST(SubjectEval, SeedEpochChoiceByHand) {
    auto m = [](double d, double ci, double ct, double l) {
        eval::SubjectMetrics x;
        x.dino = d, x.clip_i = ci, x.clip_t = ct, x.lpips = l;
        return x;
    };
    const double nan = std::numeric_limits<double>::quiet_NaN();
    EXPECT_EQ(eval::seed_epoch_choice({m(0.5, 0.8, 0.3, 0.6), m(0.6, 0.7, 0.3, nan), m(0.9, 0.75, 0.3, 0.4)}), 2U);
    EXPECT_EQ(eval::seed_epoch_choice({m(0.5, 0.8, 0.3, 0.6), m(0.6, 0.7, 0.3, 0.5), m(0.9, 0.75, 0.3, 0.4)}), 0U);
    EXPECT_EQ(eval::seed_epoch_choice({m(0.5, 0.8, 0.3, 0.6)}), 0U);
}

// Generated images equal to the one real photo: DINO and CLIP-I 1, LPIPS 0;
// CLIP-T is the cosine of the tower outputs; an all-black image is skipped
// and counted; a different image scores lower.
TEST(SubjectEval, ScorerOnTinyTowers) {
    test::TempDir dir;
    write_tiny_models(dir.path());
    auto s = tiny_scorer(dir.path());
    const auto real = noise_image(1, 40, 48);
    const auto black = torch::zeros({40, 48, 3}, torch::kUInt8);
    const auto same = s.score({real}, {real, black, real}, "a qwe dog");
    EXPECT_EQ(same.real, 1);
    EXPECT_EQ(same.generated, 2);
    EXPECT_EQ(same.skipped, 1);
    EXPECT_NEAR(same.dino, 1.0, 1e-6);
    EXPECT_NEAR(same.clip_i, 1.0, 1e-6);
    EXPECT_NEAR(same.lpips, 0.0, 1e-7);
    const double ct = (s.clip_image_embeddings({real}) * s.clip_text_embedding("a qwe dog")).sum().item<double>();
    EXPECT_NEAR(same.clip_t, ct, 1e-6);
    EXPECT_GT(std::abs(ct), 1e-4);
    const auto other = s.score({real}, {noise_image(2, 40, 48)}, "a qwe dog");
    EXPECT_LT(other.dino, 0.999);
    EXPECT_GT(other.lpips, 1e-3);
    // Pairwise means: two real photos against one generated image average the two pairs.
    const auto two = s.score({real, noise_image(2, 40, 48)}, {real}, "a qwe dog");
    EXPECT_NEAR(two.dino, (1.0 + other.dino) / 2, 1e-6);
    EXPECT_NEAR(two.lpips, other.lpips / 2, 1e-6);
    EXPECT_EQ(s.score({black}, {real}, "x").real, 0);  // no pairs: zeros, as the seed's guards
}

// hra sd eval-subject on a folder of runs: the seed protocol reports every run
// at its own chosen epoch; strict chooses one epoch per subject on the
// validation prompts (0, 5) and reports the others; a bad folder name is an error.
TEST(SubjectEval, CliSeedAndStrictProtocols) {
    test::TempDir dir;
    write_tiny_models(dir / "models");
    fs::create_directories(dir / "real/dog");
    io::write_png(dir / "real/dog/00.png", noise_image(1, 40, 48));
    for (const char* run : {"dog-0", "dog-5", "dog-1"})
        for (int epoch : {0, 1}) {
            const auto d = dir / ("runs/" + std::string(run) + "/" + std::to_string(epoch));
            fs::create_directories(d);
            for (int k = 0; k < 2; ++k)
                io::write_png(d + "/" + std::to_string(k) + ".png", epoch == 1 && k == 0 ? noise_image(1, 40, 48) : noise_image(10 + k + epoch, 40, 48));
        }
    const std::string base = "-q sd eval-subject --runs " + (dir / "runs") + " --real " + (dir / "real") + " --dino " + (dir / "models/dino") +
                             " --clip " + (dir / "models/clip") + " --lpips-vgg " + fixture("lpips/lpips-vgg-tiny/vgg.safetensors") +
                             " --lpips-lin " + fixture("lpips/lpips-vgg-tiny/lin.safetensors") + " --lpips-size 32";
    auto res = test::run_hra(base + " --out " + (dir / "seed.jsonl") + " --sheet " + (dir / "sheet.png"), dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto last = json::parse(res.out.substr(res.out.rfind('{')));
    EXPECT_EQ(last.at("protocol"), "seed");
    EXPECT_EQ(last.at("runs_reported"), 3);
    std::vector<std::string> lines;
    {
        std::stringstream ss(io::read_file(dir / "seed.jsonl"));
        for (std::string l; std::getline(ss, l);) lines.push_back(l);
    }
    ASSERT_EQ(lines.size(), 4U);
    const auto run0 = json::parse(lines[0]);
    EXPECT_EQ(run0.at("run"), "dog-0");
    EXPECT_EQ(run0.at("epochs").size(), 2U);
    auto metrics_of = [](const json& e) {
        eval::SubjectMetrics m;
        m.dino = e.at("DINO"), m.clip_i = e.at("CLIP-I"), m.clip_t = e.at("CLIP-T"), m.lpips = e.at("LPIPS");
        return m;
    };
    std::map<std::string, json> by_run;
    for (size_t i = 0; i < 3; ++i) {
        const auto r = json::parse(lines[i]);
        by_run[r.at("run")] = r;
        // Each run at its own choice; its epoch 1 holds a copy of the real photo (higher DINO and CLIP-I, lower LPIPS).
        const auto& e = r.at("epochs");
        EXPECT_GT(e[1].at("DINO").get<double>(), e[0].at("DINO").get<double>());
        EXPECT_LT(e[1].at("LPIPS").get<double>(), e[0].at("LPIPS").get<double>());
        EXPECT_EQ(r.at("chosen_epoch"), eval::seed_epoch_choice({metrics_of(e[0]), metrics_of(e[1])})) << r.at("run");
        EXPECT_EQ(e[0].at("generated"), 2);
    }
    EXPECT_EQ(by_run.at("dog-5").at("prompt"), "a qwe dog on top of a wooden floor");  // live list, index 5
    EXPECT_EQ(io::read_png(dir / "sheet.png").pixels.size(0), 3 * (128 + 2) + 2);
    res = test::run_hra(base + " --protocol strict", dir);
    ASSERT_EQ(res.code, 0) << res.err;
    const auto strict = json::parse(res.out.substr(res.out.rfind('{')));
    EXPECT_EQ(strict.at("runs_reported"), 1);  // dog-1 only; dog-0 and dog-5 chose the epoch
    // The epoch of the validation runs' mean metrics, reported at dog-1's metrics of that epoch.
    std::vector<eval::SubjectMetrics> val;
    for (int e = 0; e < 2; ++e) {
        auto a = metrics_of(by_run.at("dog-0").at("epochs")[e]), b = metrics_of(by_run.at("dog-5").at("epochs")[e]);
        eval::SubjectMetrics m;
        m.dino = (a.dino + b.dino) / 2, m.clip_i = (a.clip_i + b.clip_i) / 2, m.clip_t = (a.clip_t + b.clip_t) / 2, m.lpips = (a.lpips + b.lpips) / 2;
        val.push_back(m);
    }
    const auto chosen = eval::seed_epoch_choice(val);
    EXPECT_NEAR(strict.at("DINO").get<double>(), by_run.at("dog-1").at("epochs")[chosen].at("DINO").get<double>(), 1e-12);
    EXPECT_NEAR(strict.at("LPIPS").get<double>(), by_run.at("dog-1").at("epochs")[chosen].at("LPIPS").get<double>(), 1e-12);
    fs::create_directories(dir / "runs/dog");
    res = test::run_hra(base, dir);
    EXPECT_NE(res.code, 0);
    EXPECT_NE(res.err.find("SUBJECT-PROMPTINDEX"), std::string::npos) << res.err;
}
