// Adapter configs (PEFT keys, defaults, validation, JSON round trip) and
// target selection (PEFT's check_target_module_exists rules).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/config.h"
#include "adapters/lora.h"
#include "adapters/method.h"
#include "adapters/peft_model.h"
#include "common/error.h"
#include "models/deberta_loader.h"
#include "models/llama_loader.h"

using namespace hra;

namespace {

// A decoder-shaped toy: model.layers.{0,1,2}.self_attn.{q,k,v}_proj, mlp.fc, lm_head, and an embedding.
struct Block : torch::nn::Module {
    std::shared_ptr<torch::nn::Module> self_attn = std::make_shared<torch::nn::Module>();
    Linear fc{nullptr};
    Block() {
        register_module("self_attn", self_attn);
        for (const char* n : {"q_proj", "k_proj", "v_proj"}) self_attn->register_module(n, Linear(4, 4));
        auto mlp = register_module("mlp", std::make_shared<torch::nn::Module>());
        fc = mlp->register_module("fc", Linear(4, 4));
    }
};

struct Toy : torch::nn::Module {
    Toy() {
        auto model = register_module("model", std::make_shared<torch::nn::Module>());
        auto layers = model->register_module("layers", std::make_shared<torch::nn::Module>());
        for (int i = 0; i < 3; ++i) layers->register_module(std::to_string(i), std::make_shared<Block>());
        model->register_module("embed_tokens", torch::nn::Embedding(10, 4));
        register_module("lm_head", Linear(4, 10, false));
    }
};

std::vector<std::string> targets(AdapterConfig c, InjectOptions o = {}) {
    PeftModel pm(std::make_shared<Toy>(), o);
    return pm.add_adapter("default", c);
}

AdapterConfig hra_config(ModuleSelector t) {
    AdapterConfig c;
    c.r = 2;  // the toy's layers take 4 inputs: at most 4 reflections
    c.target_modules = std::move(t);
    return c;
}

}  // namespace

TEST(Targets, ListMatchesExactOrDottedSuffix) {
    auto t = targets(hra_config(ModuleSelector::of({"q_proj", "model.layers.1.mlp.fc"})));
    EXPECT_EQ(t, (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
                                           "model.layers.1.mlp.fc", "model.layers.2.self_attn.q_proj"}));
    // "proj" is not a dotted suffix of "q_proj".
    EXPECT_THROW(targets(hra_config(ModuleSelector::of({"proj"}))), Error);
}

TEST(Targets, RegexIsAFullMatch) {
    auto t = targets(hra_config(ModuleSelector::regex(R"(.*\.layers\.[02]\.self_attn\.(q|v)_proj)")));
    EXPECT_EQ(t, (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                           "model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.v_proj"}));
    EXPECT_THROW(targets(hra_config(ModuleSelector::regex("q_proj"))), Error);  // no full match
    EXPECT_THROW(targets(hra_config(ModuleSelector::regex("(unclosed"))), Error);
}

TEST(Targets, AllLinearLeavesOutTheOutputHead) {
    auto t = targets(hra_config(ModuleSelector::regex("ALL-LINEAR")));
    EXPECT_EQ(t.size(), 12u);
    EXPECT_EQ(std::count(t.begin(), t.end(), "lm_head"), 0);
}

TEST(Targets, ExcludeModules) {
    auto c = hra_config(ModuleSelector::of({"q_proj", "v_proj"}));
    c.exclude_modules = ModuleSelector::of({"model.layers.0.self_attn.q_proj", "v_proj"});
    EXPECT_EQ(targets(c), (std::vector<std::string>{"model.layers.1.self_attn.q_proj", "model.layers.2.self_attn.q_proj"}));
    c.exclude_modules = ModuleSelector::regex(R"(.*layers\.[12].*)");
    EXPECT_EQ(targets(c), (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"}));
}

TEST(Targets, LayersToTransformAndPattern) {
    auto c = hra_config(ModuleSelector::of({"q_proj"}));
    c.layers_to_transform = std::vector<int64_t>{0, 2};
    EXPECT_EQ(targets(c), (std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.2.self_attn.q_proj"}));
    c.layers_pattern = {"layers"};
    c.layers_to_transform = std::vector<int64_t>{1};
    EXPECT_EQ(targets(c), (std::vector<std::string>{"model.layers.1.self_attn.q_proj"}));
    c.layers_pattern = {"blocks"};
    EXPECT_THROW(targets(c), Error);
}

TEST(Targets, DefaultsByModelTypeAndUnsupportedModules) {
    InjectOptions o = llama_inject_options("llama");
    EXPECT_EQ(targets(hra_config({}), o).size(), 6u);  // q_proj and v_proj of three layers
    EXPECT_THROW(targets(AdapterConfig{}), Error);     // no model type, no targets
    EXPECT_THROW(targets(AdapterConfig{}, llama_inject_options("gpt2")), Error);  // a type without PEFT defaults
    EXPECT_EQ(deberta_inject_options().default_targets, (std::vector<std::string>{"query_proj", "value_proj"}));
    try {
        targets(hra_config(ModuleSelector::of({"embed_tokens"})));
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("not supported"), std::string::npos) << e.what();
    }
}

TEST(Config, ValidationFollowsPeft) {
    auto c = hra_config(ModuleSelector::regex("x"));
    c.layers_to_transform = std::vector<int64_t>{0};
    EXPECT_THROW(c.validate(), Error);
    c = hra_config(ModuleSelector::of({"x"}));
    c.layers_pattern = {"layers"};
    EXPECT_THROW(c.validate(), Error);
    c = hra_config(ModuleSelector::of({"x"}));
    c.r = 0;
    EXPECT_THROW(c.validate(), Error);
    c.r = 2;
    c.bias = "lora_only";
    EXPECT_THROW(c.validate(), Error);
    c.bias = "hra_only";
    EXPECT_NO_THROW(c.validate());
}

TEST(Config, ReadsAPeftHraConfig) {
    // The key set and layout PEFT's save_pretrained writes for HRAConfig.
    const std::string text = R"({
  "apply_GS": true,
  "auto_mapping": null,
  "base_model_name_or_path": "meta-llama/Llama-2-7b-hf",
  "bias": "hra_only",
  "exclude_modules": null,
  "inference_mode": true,
  "init_weights": true,
  "layers_pattern": null,
  "layers_to_transform": null,
  "modules_to_save": null,
  "peft_type": "HRA",
  "peft_version": "0.17.1",
  "r": 32,
  "revision": null,
  "target_modules": ["v_proj", "q_proj"],
  "task_type": "CAUSAL_LM"
})";
    auto c = parse_adapter_config(text, "adapter_config.json");
    EXPECT_EQ(c.peft_type, "HRA");
    EXPECT_EQ(c.r, 32);
    EXPECT_TRUE(c.get<bool>("apply_GS"));
    EXPECT_EQ(c.bias, "hra_only");
    EXPECT_EQ(c.target_modules.names, (std::vector<std::string>{"q_proj", "v_proj"}));
    EXPECT_EQ(*c.task_type, "CAUSAL_LM");
    // Written back: every key, the unknown peft_version preserved.
    auto out = nlohmann::json::parse(adapter_config_json(c));
    auto in = nlohmann::json::parse(text);
    for (auto it = in.begin(); it != in.end(); ++it) EXPECT_TRUE(out.contains(it.key())) << it.key();
    EXPECT_EQ(out["peft_version"], "0.17.1");
    EXPECT_EQ(out["target_modules"], nlohmann::json({"q_proj", "v_proj"}));
    auto again = parse_adapter_config(adapter_config_json(c), "again");
    EXPECT_EQ(adapter_config_json(again), adapter_config_json(c));
}

TEST(Config, LoraKeysAndDefaults) {
    auto c = parse_adapter_config(R"({"peft_type":"LORA","target_modules":"all-linear","layers_to_transform":3,"layers_pattern":null})", "x");
    EXPECT_EQ(c.peft_type, "LORA");
    EXPECT_EQ(c.r, 8);
    EXPECT_EQ(c.get<double>("lora_alpha"), 8);
    EXPECT_EQ(c.get<double>("lora_dropout"), 0);
    EXPECT_EQ(c.target_modules.kind, ModuleSelector::Kind::AllLinear);
    EXPECT_EQ(*c.layers_to_transform, std::vector<int64_t>{3});
    auto j = nlohmann::json::parse(adapter_config_json(c));
    EXPECT_EQ(j["peft_type"], "LORA");
    EXPECT_EQ(j["lora_alpha"], 8);
    EXPECT_TRUE(j["lora_alpha"].is_number_integer());
    EXPECT_EQ(j["use_dora"], false);
    EXPECT_THROW(parse_adapter_config(R"({"peft_type":"LORA","fan_in_fan_out":true})", "x"), Error);
    EXPECT_NO_THROW(parse_adapter_config(R"({"peft_type":"LORA","rank_pattern":{},"use_dora":false})", "x"));
    // A scalar layers_to_transform beyond int64 used to wrap to a negative layer; fractions were truncated.
    for (const char* v : {"18446744073709551615", "2.5"}) {
        try {
            parse_adapter_config(std::string(R"({"peft_type":"LORA","layers_to_transform":)") + v + "}", "a.json");
            ADD_FAILURE() << v;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("a.json: 'layers_to_transform'"), std::string::npos) << e.what();
        }
    }
}

// Configs PEFT itself wrote (tests/fixtures/peft-configs, from the PEFT repository).
TEST(Config, ReadsFilesWrittenByPeft) {
    const std::string dir = std::string(HRA_TEST_FIXTURES) + "/peft-configs/";
    auto hra_cfg = read_adapter_config(dir + "hra-flux2-klein-default.json");
    EXPECT_EQ(hra_cfg.peft_type, "HRA");
    EXPECT_EQ(hra_cfg.r, 32);
    EXPECT_FALSE(hra_cfg.get<bool>("apply_GS"));
    EXPECT_TRUE(hra_cfg.get<bool>("init_weights"));
    EXPECT_EQ(hra_cfg.target_modules.names.size(), 11u);  // 12 entries, "to_add_out" twice (PEFT wrote a set)
    EXPECT_EQ(nlohmann::json::parse(adapter_config_json(hra_cfg))["peft_version"], "0.18.2.dev0@UNKNOWN");

    auto lora = read_adapter_config(dir + "lora-llama-3.2-3B-rank10-target-mlp.json");
    EXPECT_EQ(lora.peft_type, "LORA");
    EXPECT_EQ(lora.r, 10);
    EXPECT_EQ(lora.get<double>("lora_alpha"), 20);
    EXPECT_EQ(lora_options(lora).r, 10);
    EXPECT_EQ(lora_options(lora).lora_alpha, 20);
    EXPECT_EQ(*lora.task_type, "CAUSAL_LM");
    auto written = nlohmann::json::parse(adapter_config_json(lora));
    EXPECT_EQ(written["megatron_core"], "megatron.core");  // unknown keys survive
    EXPECT_EQ(written["loftq_config"], nlohmann::json::object());

    try {
        read_adapter_config(dir + "lora-llama-3.2-3B-rank32-dora.json");
        FAIL() << "DoRA must be refused";
    } catch (const Error& e) {
        EXPECT_EQ(e.key(), "use_dora");
        EXPECT_NE(std::string(e.what()).find("lora-llama-3.2-3B-rank32-dora.json"), std::string::npos);
    }
}

// The registry: one entry per method, found by peft_type or name; a method's
// options are checked against its own keys and types.
TEST(Config, MethodsComeFromTheRegistry) {
    EXPECT_EQ(adapter_method_names(), (std::vector<std::string>{"hra", "lora"}));
    EXPECT_EQ(adapter_method("lora").peft_type, "LORA");
    EXPECT_EQ(adapter_method("HRA").name, "hra");
    EXPECT_FALSE(is_adapter_method("OFT"));
    EXPECT_THROW(adapter_method("OFT"), Error);
    EXPECT_THROW(parse_adapter_config(R"({"peft_type":"OFT"})", "x"), Error);
    EXPECT_THROW(parse_adapter_config(R"({"peft_type":"lora"})", "x"), Error);  // PEFT's spelling only

    AdapterConfig c;  // HRA by default, PEFT's defaults
    EXPECT_FALSE(c.get<bool>("apply_GS"));
    EXPECT_TRUE(c.get<bool>("init_weights"));
    EXPECT_THROW(c.get<double>("lora_alpha"), Error);  // not an HRA key
    EXPECT_THROW(c.set("lora_alpha", 16), Error);
    EXPECT_THROW(c.set("apply_GS", "yes"), Error);  // wrong JSON type
    c.set_method("lora");
    EXPECT_EQ(c.peft_type, "LORA");
    c.set("lora_alpha", 16);
    EXPECT_EQ(lora_options(c).lora_alpha, 16);
    c.set("lora_dropout", 1.5);
    EXPECT_THROW(c.validate(), Error);  // the method's own check
    // A file's value of the wrong type names the key.
    try {
        parse_adapter_config(R"({"peft_type":"HRA","apply_GS":"true"})", "cfg.json");
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.key(), "apply_GS");
        EXPECT_EQ(e.file(), "cfg.json");
    }
    // LoRA's named initialisation is kept as the file had it.
    auto named = parse_adapter_config(R"({"peft_type":"LORA","init_lora_weights":"gaussian"})", "x");
    EXPECT_EQ(nlohmann::json::parse(adapter_config_json(named))["init_lora_weights"], "gaussian");
}
