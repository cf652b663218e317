// Exact LoRA export of HRA: the exported LoRA layer reproduces the HRA layer,
// in memory and through PEFT folders on disk.
#include <cmath>
#include <filesystem>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/hra.h"
#include "adapters/lora.h"
#include "adapters/lora_export.h"
#include "adapters/peft_model.h"
#include "common/error.h"
#include "io/atomic_file.h"
#include "io/peft_folder.h"
#include "io/safetensors.h"
#include "test_models.h"
#include "test_util.h"

using namespace hra;
using hra::test::max_abs_diff;

TEST(LoraExport, FactorsReproduceWH) {
    for (bool gs : {false, true}) {
        torch::manual_seed(0);
        auto u = torch::randn({12, 4}, torch::kDouble);
        auto w = torch::randn({7, 12}, torch::kDouble);
        auto f = hra_to_lora(u, gs, w);
        EXPECT_EQ(f.A.sizes(), (std::vector<int64_t>{4, 12}));
        EXPECT_EQ(f.B.sizes(), (std::vector<int64_t>{7, 4}));
        auto wh = torch::mm(w, core::reference_matrix(u, gs));
        EXPECT_LT(max_abs_diff(w + torch::mm(f.B, f.A), wh), 1e-12) << gs;
    }
    EXPECT_THROW(hra_to_lora(torch::randn({5, 2}), false, torch::randn({3, 6})), Error);
}

TEST(LoraExport, ExportedAdapterServesTheSameOutputs) {
    for (bool conv : {false, true}) {
        test::TempDir dir;
        torch::manual_seed(1);
        std::shared_ptr<test::TestModel> base = conv ? std::shared_ptr<test::TestModel>(std::make_shared<test::ConvNet>())
                                                     : std::make_shared<test::Mlp>();
        base->to(torch::kDouble);
        PeftModel pm(base);
        AdapterConfig c;
        c.r = 4;
        c.set("init_weights", false);
        c.set("apply_GS", conv);
        c.target_modules = ModuleSelector::of(conv ? std::vector<std::string>{"conv", "lin0"}
                                                   : std::vector<std::string>{"lin0", "lin1"});
        pm.add_adapter("default", c);
        auto x = base->example_input().to(torch::kDouble);
        auto y_hra = base->forward(x).detach();

        // The HRA folder plus the base weights -> a LoRA folder.
        pm.save_adapter(dir / "hra");
        {
            io::NamedTensors weights;
            for (auto& [k, l] : pm.adaptable_layers()) weights.emplace_back(k + ".weight", l->weight);
            io::save_safetensors(dir / "base.safetensors", weights);
        }
        EXPECT_EQ(export_lora_folder(dir / "hra", dir / "base.safetensors", dir / "files"), 2);
        const AdapterConfig lc = read_adapter_config(dir / "files/adapter_config.json");
        EXPECT_EQ(lc.peft_type, "LORA");
        EXPECT_EQ(lc.get<double>("lora_alpha"), 4);  // scaling 1: the exact form

        {
            const std::string sub = "files";
            torch::manual_seed(1);
            std::shared_ptr<test::TestModel> fresh =
                conv ? std::shared_ptr<test::TestModel>(std::make_shared<test::ConvNet>()) : std::make_shared<test::Mlp>();
            fresh->to(torch::kDouble);
            PeftModel lora(fresh);
            lora.load_adapter(dir / sub);
            EXPECT_EQ(lora.config("default").peft_type, "LORA");
            torch::NoGradGuard ng;
            EXPECT_LT(max_abs_diff(fresh->forward(x), y_hra), 1e-10) << sub << " conv=" << conv;
        }
    }
}

TEST(LoraExport, MissingBaseWeightIsAnError) {
    test::TempDir dir;
    test::mlp_with_hra(2, {"lin0"}).peft.save_adapter(dir / "hra");
    io::save_safetensors(dir / "base.safetensors", {{"other.weight", torch::ones({2, 2})}});
    try {
        export_lora_folder(dir / "hra", dir / "base.safetensors", dir / "out");
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("lin0.weight"), std::string::npos) << e.what();
    }
}

TEST(LoraExport, NonFiniteVectorsAreAnErrorAndNothingIsWritten) {
    test::TempDir dir;
    test::mlp_with_hra(2, {"lin0"}).peft.save_adapter(dir / "hra");
    auto plain = std::make_shared<test::Mlp>();
    io::save_safetensors(dir / "base.safetensors", {{"lin0.weight", plain->named_parameters()["lin0.weight"].detach().clone()}});
    auto u = torch::ones({10, 2});
    u[0][0] = std::nan("");
    io::save_safetensors(dir / "hra/adapter_model.safetensors", {{"base_model.model.lin0.hra_u", u}});
    try {
        export_lora_folder(dir / "hra", dir / "base.safetensors", dir / "out");
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("finite"), std::string::npos) << e.what();
        EXPECT_EQ(e.file(), dir / "hra/adapter_model.safetensors");
    }
    EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}
