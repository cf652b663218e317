// hra export-lora: an HRA adapter as an exactly equivalent LoRA adapter.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "adapters/lora_export.h"
#include "commands.h"

namespace hra::cli {

Command add_export_lora(CLI::App& app) {
    auto* cmd = app.add_subcommand(
        "export-lora", "write an HRA adapter as the equivalent LoRA adapter (W·H = W + B·A, lora_alpha = r)");
    struct Opts {
        std::string adapter, base, out;
        bool force = false;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--adapter", o->adapter, "HRA adapter folder (PEFT format)")->required();
    cmd->add_option("--model,--base", o->base, "base model: a model folder or a .safetensors file")->required();
    cmd->add_option("--out", o->out, "output folder for the LoRA adapter")->required();
    cmd->add_flag("--force", o->force, "replace an existing non-empty output folder");
    return {cmd, [o]() {
        const int n = export_lora_folder(o->adapter, o->base, o->out, o->force);
        std::printf("wrote %s: LoRA adapter for %d layers\n", o->out.c_str(), n);
        return 0;
    }};
}

}  // namespace hra::cli
