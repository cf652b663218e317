// hra convert llama2c: a llama2.c checkpoint and tokenizer as a Hugging Face folder.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "models/llama2c.h"

namespace hra::cli {

Command add_convert(CLI::App& app) {
    auto* cmd = app.add_subcommand("convert", "convert other formats into Hugging Face model folders");
    cmd->require_subcommand(1);
    auto* l2c = cmd->add_subcommand("llama2c", "llama2.c model.bin (v0 or v1) + tokenizer.bin -> HF folder");
    struct Opts {
        std::string model, tokenizer, out;
        bool force = false;
    };
    auto o = std::make_shared<Opts>();
    l2c->add_option("--model", o->model, "llama2.c checkpoint (.bin, float32 legacy or version 1)")->required();
    l2c->add_option("--tokenizer", o->tokenizer, "llama2.c tokenizer.bin")->required();
    l2c->add_option("--out", o->out, "output folder (config.json, model.safetensors, tokenizer.json, ...)")->required();
    l2c->add_flag("--force", o->force, "replace an existing non-empty output folder");
    return {cmd, [o]() {
                convert_llama2c(o->model, o->tokenizer, o->out, o->force);
                std::printf("wrote %s\n", o->out.c_str());
                return 0;
            }};
}

}  // namespace hra::cli
