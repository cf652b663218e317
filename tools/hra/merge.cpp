// hra merge: a model folder with its adapters merged in, as a new model folder.
#include <cstdio>

#include <CLI/CLI.hpp>

#include <filesystem>

#include "commands.h"
#include "diffusion/pipeline.h"
#include "io/output_folder.h"
#include "models/pipeline.h"

namespace hra::cli {

Command add_merge(CLI::App& app) {
    auto* cmd = app.add_subcommand("merge", "merge adapters into a model and write a complete model folder");
    struct Opts {
        std::string model, out;
        std::vector<std::string> adapters;
        bool force = false;
        double max_shard_gb = 5.0;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--model", o->model, "Hugging Face model folder, or a diffusers Stable Diffusion folder (model_index.json)")->required();
    cmd->add_option("--adapter", o->adapters,
                    "PEFT adapter folder; repeat to merge several in order (for Stable Diffusion: a UNet adapter, or unet/ and "
                    "text_encoder/ holding one each, as hra train --task dreambooth writes)")
        ->required();
    cmd->add_option("--out", o->out, "output model folder")->required();
    cmd->add_flag("--force", o->force, "replace an existing non-empty output folder");
    cmd->add_option("--max-shard-size", o->max_shard_gb, "largest weight file in GB before sharding")->default_val(5.0);
    return {cmd, [o]() {
                if (std::filesystem::exists(std::filesystem::path(o->model) / "model_index.json")) {
                    // Stable Diffusion: the same merge as `hra sd generate --merge-adapter` (float32), written as a diffusers folder.
                    io::OutputFolder out(o->out, o->force);
                    auto sd = diffusion::load_stable_diffusion(o->model, torch::kFloat);
                    for (const auto& a : o->adapters) diffusion::load_sd_adapters(sd, a, /*merge=*/true);
                    diffusion::write_stable_diffusion(sd, out.temp_path());
                    out.commit();
                    std::printf("wrote %s\n", o->out.c_str());
                    return 0;
                }
                merge_model(o->model, o->adapters, o->out, o->force, static_cast<uint64_t>(o->max_shard_gb * 1e9));
                std::printf("wrote %s\n", o->out.c_str());
                return 0;
            }};
}

}  // namespace hra::cli
