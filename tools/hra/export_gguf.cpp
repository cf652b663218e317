// hra export gguf: a model (with adapters merged) or a LoRA adapter as a GGUF
// file for llama.cpp, Ollama and the tools built on them.
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "common/error.h"
#include "models/gguf_export.h"

namespace hra::cli {

Command add_export(CLI::App& app) {
    auto* cmd = app.add_subcommand("export", "write models and adapters in other runtimes' formats");
    cmd->require_subcommand(1);
    auto* gguf = cmd->add_subcommand(
        "gguf", "a LLaMA-family model, its adapters merged, as GGUF for llama.cpp; or (--lora-only) a LoRA GGUF that "
                "llama.cpp applies at run time (--lora); HRA adapters travel as their exact LoRA form");
    struct Opts {
        std::string model, out, type = "f16";
        std::vector<std::string> adapters;
        bool lora_only = false, force = false;
    };
    auto o = std::make_shared<Opts>();
    gguf->add_option("--model", o->model, "Hugging Face model folder (llama or mistral, SentencePiece-style vocabulary)")
        ->required();
    gguf->add_option("--adapter", o->adapters, "PEFT adapter folder (HRA or LoRA) merged in; repeat to compose");
    gguf->add_option("--out", o->out, "output .gguf file")->required();
    gguf->add_option("--type", o->type,
                     "type of the 2-D weights: f32, f16, bf16 or q8_0 (norms stay f32; rows that do not fill Q8_0's "
                     "32-value blocks are f16)")
        ->default_val("f16")
        ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
    gguf->add_flag("--lora-only", o->lora_only, "write the one --adapter as a llama.cpp LoRA adapter, not a merged model");
    gguf->add_flag("--force", o->force, "replace an existing output file");
    return {cmd, [o]() {
                if (!o->force && std::filesystem::exists(o->out))
                    throw Error("the output file exists; pass --force to replace it", {o->out});
                const auto type = io::parse_ggml_type(o->type);
                GgufExportReport r;
                if (o->lora_only) {
                    if (o->adapters.size() != 1) throw Error("--lora-only takes exactly one --adapter");
                    r = export_gguf_lora(o->model, o->adapters.front(), o->out, type);
                } else {
                    r = export_gguf_model(o->model, o->adapters, o->out, type);
                }
                std::printf("wrote %s: %d tensors (%s%s), %llu bytes%s\n", o->out.c_str(), r.tensors, o->type.c_str(),
                            r.fallback_tensors ? (", " + std::to_string(r.fallback_tensors) + " as f16").c_str() : "",
                            static_cast<unsigned long long>(r.bytes),
                            r.vocab ? (", vocabulary of " + std::to_string(r.vocab)).c_str() : "");
                return 0;
            }};
}

}  // namespace hra::cli
