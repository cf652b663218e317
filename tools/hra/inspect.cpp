// hra inspect DIR: what a PEFT adapter folder holds.
#include <cstdio>
#include <map>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/config.h"
#include "adapters/method.h"
#include "commands.h"
#include "io/peft_folder.h"

namespace hra::cli {

Command add_inspect(CLI::App& app) {
    auto* cmd = app.add_subcommand("inspect", "describe a PEFT adapter folder (HRA or LoRA)");
    auto dir = std::make_shared<std::string>();
    cmd->add_option("dir", *dir, "adapter folder (adapter_config.json + adapter_model.safetensors)")->required();
    return {cmd, [dir]() {
        io::PeftFolder folder = io::read_peft_folder(*dir);
        AdapterConfig c = parse_adapter_config(folder.config_text, folder.config_path);
        std::printf("adapter:   %s\n", dir->c_str());
        std::printf("peft_type: %s   r: %lld", c.peft_type.c_str(), static_cast<long long>(c.r));
        // The method's own keys, as its registry entry lists them, with the values the file holds.
        const auto& defaults = adapter_method(c.peft_type).defaults;
        const auto written = nlohmann::json::parse(adapter_config_json(c));
        for (auto it = defaults.begin(); it != defaults.end(); ++it)
            std::printf("   %s: %s", it.key().c_str(), written.at(it.key()).dump().c_str());
        std::printf("\n");
        std::printf("targets:   %s\n", c.target_modules.describe().c_str());
        std::printf("bias:      %s\n", c.bias.c_str());
        int64_t total = 0;
        std::map<std::string, int> shapes;
        for (const auto& name : folder.weights->names()) {
            const auto& info = folder.weights->info(name);
            int64_t n = 1;
            std::string shape = info.dtype + "[";
            for (size_t i = 0; i < info.shape.size(); ++i) {
                n *= info.shape[i];
                shape += (i ? ", " : "") + std::to_string(info.shape[i]);
            }
            total += n;
            const auto dot = name.rfind('.');
            shapes[(dot == std::string::npos ? name : name.substr(dot + 1)) + " " + shape + "]"]++;
        }
        std::printf("tensors:   %zu (%lld parameters)\n", folder.weights->names().size(), static_cast<long long>(total));
        for (const auto& [shape, count] : shapes) std::printf("  %4d x %s\n", count, shape.c_str());
        return 0;
    }};
}

}  // namespace hra::cli
