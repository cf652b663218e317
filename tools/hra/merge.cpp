// hra merge: a model folder with its adapters merged in, as a new model folder.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "commands.h"
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
    cmd->add_option("--model", o->model, "Hugging Face model folder")->required();
    cmd->add_option("--adapter", o->adapters, "PEFT adapter folder; repeat to merge several in order")->required();
    cmd->add_option("--out", o->out, "output model folder")->required();
    cmd->add_flag("--force", o->force, "replace an existing non-empty output folder");
    cmd->add_option("--max-shard-size", o->max_shard_gb, "largest weight file in GB before sharding")->default_val(5.0);
    return {cmd, [o]() {
                merge_model(o->model, o->adapters, o->out, o->force, static_cast<uint64_t>(o->max_shard_gb * 1e9));
                std::printf("wrote %s\n", o->out.c_str());
                return 0;
            }};
}

}  // namespace hra::cli
