// One conformance suite run over every adapter type and model, as PEFT's
// tests/testing_common.py does: identity init, merge, unmerge, safe merge,
// disable, save/load round trip, several adapters, delete, merge-and-unload,
// trainability. Tolerances are PEFT's (float32).
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/config.h"
#include "adapters/hra.h"
#include "adapters/lora.h"
#include "adapters/peft_model.h"
#include "common/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "test_models.h"
#include "test_util.h"

using namespace hra;
using hra::test::max_abs_diff;

namespace {

struct Case {
    std::string method;  // peft_type
    bool conv;
    std::string label;
};

std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.label; }

class Conformance : public ::testing::TestWithParam<Case> {
protected:
    std::shared_ptr<test::TestModel> make_base(uint64_t seed = 0) const {
        torch::manual_seed(seed);
        if (GetParam().conv) return std::make_shared<test::ConvNet>();
        return std::make_shared<test::Mlp>();
    }
    AdapterConfig config(bool identity_init) const {
        AdapterConfig c = AdapterConfig::of(GetParam().method);
        c.r = 4;
        if (GetParam().method == "HRA") {
            c.set("init_weights", identity_init);
        } else {
            c.set("init_lora_weights", identity_init);
            c.set("lora_alpha", 8);
        }
        c.target_modules = ModuleSelector::of(GetParam().conv ? std::vector<std::string>{"conv", "lin0"}
                                                              : std::vector<std::string>{"lin0"});
        return c;
    }
    torch::Tensor run(test::TestModel& m) const {
        torch::NoGradGuard ng;
        return m.forward(m.example_input());
    }
};

std::vector<torch::Tensor> weights_of(PeftModel& pm) {
    std::vector<torch::Tensor> out;
    for (auto& [k, l] : pm.adaptable_layers())
        if (!l->adapter_names().empty()) out.push_back(l->weight.detach().clone());
    return out;
}

}  // namespace

TEST_P(Conformance, DefaultInitLeavesTheModelUnchanged) {
    auto base = make_base();
    auto before = run(*base);
    PeftModel pm(base);
    pm.add_adapter("default", config(true));
    EXPECT_LT(max_abs_diff(run(*base), before), 1e-5);
}

TEST_P(Conformance, MergeAndUnmerge) {
    auto base = make_base();
    auto y_base = run(*base);
    PeftModel pm(base);
    pm.add_adapter("default", config(false));
    const auto w0 = weights_of(pm);
    auto y = run(*base);
    EXPECT_GT(max_abs_diff(y, y_base), 1e-10);
    pm.merge();
    for (auto& [k, l] : pm.adaptable_layers())
        EXPECT_EQ(l->merged_adapters().empty(), !l->has_adapter("default")) << k;
    EXPECT_LT(max_abs_diff(run(*base), y), 1e-4);
    pm.unmerge();
    auto w1 = weights_of(pm);
    for (size_t i = 0; i < w0.size(); ++i) EXPECT_LT(max_abs_diff(w1[i], w0[i]), 1e-4);
    EXPECT_LT(max_abs_diff(run(*base), y), 1e-4);
}

TEST_P(Conformance, SafeMergeAndRefusalOfNonFiniteResults) {
    auto base = make_base();
    PeftModel pm(base);
    pm.add_adapter("default", config(false));
    auto y = run(*base);
    pm.merge(/*safe=*/true);
    EXPECT_LT(max_abs_diff(run(*base), y), 1e-6);
    pm.unmerge();
    const auto w0 = weights_of(pm);
    {
        torch::NoGradGuard ng;
        const auto& last = pm.adapted_modules("default").back();
        AdaptableLayer* layer = nullptr;
        for (auto& [k, l] : pm.adaptable_layers())
            if (k == last) layer = l;
        layer->adapter("default")->parameters().front().fill_(std::numeric_limits<float>::quiet_NaN());
    }
    EXPECT_THROW(pm.merge(true), Error);
    auto w1 = weights_of(pm);
    for (size_t i = 0; i < w0.size(); ++i) EXPECT_TRUE(torch::equal(w1[i], w0[i]));
    for (auto& [k, l] : pm.adaptable_layers()) EXPECT_TRUE(l->merged_adapters().empty()) << k;
}

TEST_P(Conformance, DisableGivesTheBaseModel) {
    auto base = make_base();
    auto y_base = run(*base);
    PeftModel pm(base);
    pm.add_adapter("default", config(false));
    auto y = run(*base);
    pm.enable_adapters(false);
    EXPECT_LT(max_abs_diff(run(*base), y_base), 1e-4);
    pm.enable_adapters(true);
    EXPECT_LT(max_abs_diff(run(*base), y), 1e-6);
    pm.merge();
    pm.enable_adapters(false);  // unmerges
    EXPECT_LT(max_abs_diff(run(*base), y_base), 1e-4);
    for (auto& [k, l] : pm.adaptable_layers()) EXPECT_TRUE(l->merged_adapters().empty());
    pm.enable_adapters(true);
    EXPECT_LT(max_abs_diff(run(*base), y), 1e-5);
}

TEST_P(Conformance, SaveLoadRoundTrip) {
    test::TempDir dir;
    auto base = make_base();
    PeftModel pm(base);
    pm.add_adapter("default", config(false));
    auto y = run(*base);
    pm.save_adapter(dir.path());
    EXPECT_TRUE(std::filesystem::exists(dir / "adapter_config.json"));
    EXPECT_TRUE(std::filesystem::exists(dir / "adapter_model.safetensors"));
    auto j = nlohmann::json::parse(io::read_file(dir / "adapter_config.json"));
    EXPECT_EQ(j["peft_type"], GetParam().method);
    EXPECT_EQ(j["r"], 4);
    EXPECT_EQ(j["inference_mode"], true);
    auto file = io::SafetensorsFile::open(dir / "adapter_model.safetensors");
    for (const auto& name : file.names()) {
        EXPECT_EQ(name.rfind("base_model.model.", 0), 0u) << name;
        EXPECT_EQ(name.find("default"), std::string::npos) << name;  // no adapter name in keys
    }
    EXPECT_EQ(file.metadata().at("format"), "pt");

    auto fresh = make_base();
    PeftModel pm2(fresh);
    pm2.load_adapter(dir.path());
    EXPECT_LT(max_abs_diff(run(*fresh), y), 1e-6);
    EXPECT_EQ(pm2.adapted_modules("default"), pm.adapted_modules("default"));
    EXPECT_EQ(pm2.trainable_parameter_count(), 0);  // loaded for inference
    auto sd1 = pm.adapter_state_dict("default"), sd2 = pm2.adapter_state_dict("default");
    ASSERT_EQ(sd1.size(), sd2.size());
    for (size_t i = 0; i < sd1.size(); ++i) {
        EXPECT_EQ(sd1[i].first, sd2[i].first);
        EXPECT_TRUE(torch::equal(sd1[i].second, sd2[i].second));
    }
    PeftModel pm3(make_base());
    pm3.load_adapter(dir.path(), "default", /*trainable=*/true);
    EXPECT_EQ(pm3.trainable_parameter_count(), pm.trainable_parameter_count());
}

TEST_P(Conformance, SeveralAdapters) {
    auto base = make_base();
    PeftModel pm(base);
    pm.add_adapter("a", config(false));
    torch::manual_seed(77);
    pm.add_adapter("b", config(false));
    auto ya = run(*base);
    EXPECT_EQ(pm.active_adapters(), std::vector<std::string>{"a"});
    pm.set_active_adapters({"b"});
    auto yb = run(*base);
    EXPECT_GT(max_abs_diff(ya, yb), 1e-5);
    pm.set_active_adapters({"a", "b"});
    auto yab = run(*base);
    EXPECT_GT(max_abs_diff(yab, ya), 1e-5);
    EXPECT_GT(max_abs_diff(yab, yb), 1e-5);
    pm.merge();
    EXPECT_LT(max_abs_diff(run(*base), yab), 1e-4);
    pm.unmerge();
    pm.merge(false, {"b"});
    pm.set_active_adapters({"b"});
    EXPECT_LT(max_abs_diff(run(*base), yb), 1e-4);
    pm.unmerge();
    // Only the active adapter trains.
    for (auto& [k, l] : pm.adaptable_layers()) {
        if (!l->has_adapter("a")) continue;
        for (auto& p : l->adapter("a")->parameters()) EXPECT_FALSE(p.requires_grad());
        for (auto& p : l->adapter("b")->parameters()) EXPECT_TRUE(p.requires_grad());
    }
}

TEST_P(Conformance, DeleteAdapterAndMergeAndUnload) {
    auto base = make_base();
    auto y_base = run(*base);
    const int64_t n_base = PeftModel(base).parameter_count();
    PeftModel pm(base);
    pm.add_adapter("default", config(false));
    auto y = run(*base);
    EXPECT_GT(pm.parameter_count(), n_base);
    pm.delete_adapter("default");
    EXPECT_TRUE(pm.adapter_names().empty());
    EXPECT_EQ(pm.parameter_count(), n_base);
    EXPECT_LT(max_abs_diff(run(*base), y_base), 1e-7);
    EXPECT_THROW(pm.delete_adapter("default"), Error);

    torch::manual_seed(5);
    pm.add_adapter("x", config(false));
    auto yx = run(*base);
    pm.merge_and_unload();
    EXPECT_EQ(pm.parameter_count(), n_base);
    EXPECT_TRUE(pm.adapter_names().empty());
    EXPECT_LT(max_abs_diff(run(*base), yx), 1e-4);
}

TEST_P(Conformance, OnlyAdapterParametersTrain) {
    auto base = make_base();
    PeftModel pm(base);
    pm.add_adapter("default", config(false));
    int64_t expected = 0;
    for (auto& [k, l] : pm.adaptable_layers()) {
        if (!l->has_adapter("default")) continue;
        const auto& s = l->shape();
        expected += GetParam().method == "HRA" ? s.flat_in() * 4 : 4 * (s.flat_in() + s.out);
    }
    EXPECT_EQ(pm.trainable_parameter_count(), expected);
    auto out = base->forward(base->example_input());
    out.sum().backward();
    for (auto& [k, l] : pm.adaptable_layers()) {
        EXPECT_FALSE(l->weight.grad().defined()) << k;
        if (l->has_adapter("default")) {
            for (auto& p : l->adapter("default")->parameters()) EXPECT_TRUE(p.grad().defined()) << k;
        }
    }
    const std::string summary = pm.trainable_summary();
    EXPECT_EQ(summary.rfind("trainable params: ", 0), 0u) << summary;
    EXPECT_NE(summary.find(" || all params: "), std::string::npos);
    EXPECT_NE(summary.find(" || trainable%: "), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Adapters, Conformance,
                         ::testing::Values(Case{"HRA", false, "HraMlp"}, Case{"HRA", true, "HraConv"},
                                           Case{"LORA", false, "LoraMlp"}, Case{"LORA", true, "LoraConv"}),
                         [](const auto& info) { return info.param.label; });

// ---------------------------------------------------------------- beyond the shared suite

TEST(PeftModel, TrainableSummaryMatchesPeftFormat) {
    auto [base, pm] = test::mlp_with_hra(8, {"lin0"}, /*identity_init=*/true);
    // lin0 10->20 (220) + lin1 20->2 (42) + hra_u 10x8 (80) = 342 parameters.
    EXPECT_EQ(pm.trainable_summary(), "trainable params: 80 || all params: 342 || trainable%: 23.3918");
}

TEST(PeftModel, ModulesToSaveAndBiasAll) {
    test::TempDir dir;
    torch::manual_seed(0);
    auto base = std::make_shared<test::Mlp>();
    auto y_base = base->forward(base->example_input()).detach();
    PeftModel pm(base);
    AdapterConfig c;
    c.r = 2;
    c.set("init_weights", false);
    c.target_modules = ModuleSelector::of({"lin0"});
    c.modules_to_save = std::vector<std::string>{"lin1"};
    c.bias = "all";
    pm.add_adapter("default", c);
    EXPECT_EQ(pm.adapted_modules("default"), std::vector<std::string>{"lin0"});
    EXPECT_TRUE(base->lin1->weight.requires_grad());
    EXPECT_TRUE(base->lin0->bias.requires_grad());
    EXPECT_FALSE(base->lin0->weight.requires_grad());
    std::set<std::string> keys;
    for (const auto& kv : pm.adapter_state_dict("default")) keys.insert(kv.first);
    EXPECT_EQ(keys, (std::set<std::string>{"base_model.model.lin0.hra_u", "base_model.model.lin0.base_layer.bias",
                                           "base_model.model.lin1.bias", "base_model.model.lin1.weight"}));
    {
        torch::NoGradGuard ng;
        base->lin1->weight.add_(1.0);  // "training" the saved module
    }
    auto y = base->forward(base->example_input()).detach();
    pm.enable_adapters(false);
    EXPECT_LT(max_abs_diff(base->forward(base->example_input()), y_base), 1e-6);  // original lin1 restored
    pm.enable_adapters(true);
    EXPECT_LT(max_abs_diff(base->forward(base->example_input()), y), 1e-6);
    pm.save_adapter(dir.path());
    torch::manual_seed(0);
    auto fresh = std::make_shared<test::Mlp>();
    PeftModel pm2(fresh);
    pm2.load_adapter(dir.path());
    EXPECT_LT(max_abs_diff(fresh->forward(fresh->example_input()), y), 1e-6);
}

TEST(PeftModel, OrthogonalityPenaltySumsActiveHraLayers) {
    auto [base, pm] = test::mlp_with_hra(4, {"lin0", "lin1"});
    double expected = 0;
    for (auto& [k, l] : pm.adaptable_layers())
        expected += core::orthogonality_penalty(std::dynamic_pointer_cast<HraAdapterImpl>(l->adapter("default"))->hra_u)
                        .item<double>();
    EXPECT_NEAR(pm.orthogonality_penalty().item<double>(), expected, 1e-6 * expected);
    EXPECT_GT(expected, 0);
    auto p = pm.orthogonality_penalty();
    p.backward();
    for (auto& [k, l] : pm.adaptable_layers())
        EXPECT_TRUE(l->adapter("default")->parameters().front().grad().defined());
}

// ---------------------------------------------------------------- bad adapter files

namespace {

std::string saved_adapter(const test::TempDir& dir) {
    test::mlp_with_hra(4, {"lin0"}).peft.save_adapter(dir.path());
    return dir.path();
}

void expect_load_error(const std::string& dir, const std::string& fragment) {
    torch::manual_seed(0);
    auto base = std::make_shared<test::Mlp>();
    auto before = base->forward(base->example_input()).detach();
    PeftModel pm(base);
    try {
        pm.load_adapter(dir);
        FAIL() << "expected an error containing '" << fragment << "'";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
    // The model is left as it was.
    EXPECT_TRUE(pm.adapter_names().empty());
    EXPECT_TRUE(torch::equal(base->forward(base->example_input()), before));
}

}  // namespace

TEST(AdapterFiles, WrongShapeUnknownKeyMissingKey) {
    test::TempDir dir;
    saved_adapter(dir);
    const std::string wpath = dir / "adapter_model.safetensors";
    io::save_safetensors(wpath, {{"base_model.model.lin0.hra_u", torch::zeros({10, 3})}});
    expect_load_error(dir.path(), "base_model.model.lin0.hra_u");
    expect_load_error(dir.path(), "shape");
    io::save_safetensors(wpath, {{"base_model.model.lin0.hra_u", torch::ones({10, 4})},
                                 {"base_model.model.lin9.hra_u", torch::ones({10, 4})}});
    expect_load_error(dir.path(), "'base_model.model.lin9.hra_u': unexpected key");
    io::save_safetensors(wpath, {{"base_model.model.lin1.weight", torch::ones({2, 20})}});
    expect_load_error(dir.path(), "unexpected key");
    io::save_safetensors(wpath, std::vector<std::pair<std::string, torch::Tensor>>{});
    expect_load_error(dir.path(), "missing key");
    // Integers where the vectors go (they were converted silently) and NaN vectors (they only warned).
    io::save_safetensors(wpath, {{"base_model.model.lin0.hra_u", torch::ones({10, 4}, torch::kInt)}});
    expect_load_error(dir.path(), "dtype Int where the adapter needs floating-point values");
    auto u = torch::ones({10, 4});
    u[3][1] = std::nan("");
    io::save_safetensors(wpath, {{"base_model.model.lin0.hra_u", u}});
    expect_load_error(dir.path(), "non-finite values");
    // A deeply nested unknown key in the config (it was copied and dumped recursively).
    io::save_safetensors(wpath, {{"base_model.model.lin0.hra_u", torch::ones({10, 4})}});
    io::write_file_atomically(dir / "adapter_config.json", R"({"peft_type": "HRA", "r": 4, "target_modules": ["lin0"], "x": )" +
                                                               std::string(100000, '[') + std::string(100000, ']') + "}");
    expect_load_error(dir.path(), "nested deeper than 128");
}

TEST(AdapterFiles, BadConfigs) {
    test::TempDir dir;
    saved_adapter(dir);
    const std::string cpath = dir / "adapter_config.json";
    const std::string good = io::read_file(cpath);
    io::write_file_atomically(cpath, "{ not json");
    expect_load_error(dir.path(), "invalid JSON");
    io::write_file_atomically(cpath, R"({"peft_type": "IA3", "r": 4})");
    expect_load_error(dir.path(), "unsupported peft_type");
    io::write_file_atomically(cpath, R"({"peft_type": "HRA", "r": 4, "target_modules": ["nope"]})");
    expect_load_error(dir.path(), "not found in the base model");
    io::write_file_atomically(cpath, R"({"peft_type": "HRA", "r": "four", "target_modules": ["lin0"]})");
    expect_load_error(dir.path(), "'r'");
    io::write_file_atomically(cpath, R"({"peft_type": "LORA", "r": 4, "target_modules": ["lin0"], "use_dora": true})");
    expect_load_error(dir.path(), "use_dora");
    std::filesystem::remove(cpath);
    expect_load_error(dir.path(), "missing adapter_config.json");
    io::write_file_atomically(cpath, good);
    std::filesystem::rename(dir / "adapter_model.safetensors", dir / "adapter_model.bin");
    expect_load_error(dir.path(), "pickle");
}

TEST(AdapterFiles, MoreReflectionsThanInputsIsAnErrorNamingTheLayer) {
    test::TempDir dir;
    saved_adapter(dir);
    // lin0 takes 10 inputs: r 10 fits, r 11 cannot be independent.
    io::write_file_atomically(dir / "adapter_config.json", R"({"peft_type": "HRA", "r": 11, "target_modules": ["lin0"]})");
    expect_load_error(dir.path(), "'lin0': r 11 exceeds the layer's input size 10");
    EXPECT_NO_THROW(test::mlp_with_hra(10, {"lin0"}));
}

TEST(PeftModel, LoraDropoutOnlyWhileTraining) {
    torch::manual_seed(0);
    auto base = std::make_shared<test::Mlp>();
    PeftModel pm(base);
    AdapterConfig c = AdapterConfig::of("LORA");
    c.r = 4;
    c.set("lora_dropout", 0.5);
    c.set("init_lora_weights", false);
    c.target_modules = ModuleSelector::of({"lin0"});
    pm.add_adapter("default", c);
    auto x = base->example_input();
    torch::NoGradGuard ng;
    base->train();
    EXPECT_GT(max_abs_diff(base->forward(x), base->forward(x)), 1e-6);  // a fresh mask each call
    base->eval();
    auto y = base->forward(x);
    EXPECT_TRUE(torch::equal(base->forward(x), y));
    pm.merge();
    EXPECT_LT(max_abs_diff(base->forward(x), y), 1e-5);
}
