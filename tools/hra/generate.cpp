// hra generate: stream a model's continuation of a prompt (greedy by default).
#include <cstdio>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "commands.h"
#include "common/error.h"
#include "common/log.h"
#include "data/dataset.h"
#include "io/atomic_file.h"
#include "models/generate.h"
#include "models/pipeline.h"
#include "text/tokenizer.h"

namespace hra::cli {

Command add_generate(CLI::App& app) {
    auto* cmd = app.add_subcommand("generate", "generate text from a prompt (text on stdout, timings on stderr)");
    struct Opts {
        std::string model, prompt, dtype = "float32", template_name = "none", template_file, input;
        bool step_by_step = false;
        std::vector<std::string> adapters;
        SamplingOptions sampling;
        bool no_bos = false;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--model", o->model, "Hugging Face model folder")->required();
    cmd->add_option("--adapter", o->adapters, "PEFT adapter folder (HRA or LoRA); repeat to compose");
    cmd->add_option("--prompt", o->prompt, "prompt text")->required();
    cmd->add_option("--max-new-tokens", o->sampling.max_new_tokens, "most tokens to generate")->default_val(256);
    cmd->add_option("--temperature", o->sampling.temperature, "0 = greedy")->default_val(0.0);
    cmd->add_option("--top-k", o->sampling.top_k, "sample among the k most likely tokens (0 = all)")->default_val(0);
    cmd->add_option("--top-p", o->sampling.top_p, "nucleus sampling mass (1 = off)")->default_val(1.0);
    cmd->add_option("--seed", o->sampling.seed, "sampling seed")->default_val(0);
    cmd->add_option("--stop", o->sampling.stop, "stop before this string; repeatable");
    cmd->add_option("--dtype", o->dtype, "compute dtype: float32, bfloat16, float16, float64")->default_val("float32");
    cmd->add_flag("--no-bos", o->no_bos, "do not add the tokenizer's special tokens (BOS) to the prompt");
    std::vector<std::string> templates = {"none"};
    for (const auto& t : prompt_template_names()) templates.push_back(t);
    cmd->add_option("--template", o->template_name,
                    "frame the prompt as training did: none (as it is), alpaca or metamath (\"### Instruction: ... ### Response:\"; "
                    "alpaca with --input uses the with-input form), chatml, llama2, llama3 (one user turn, then the assistant's header)")
        ->default_val("none")
        ->check(CLI::IsMember(templates));
    cmd->add_option("--template-file", o->template_file, "a prompt template file: its text with {query} (and {input}) replaced");
    cmd->add_option("--input", o->input, "alpaca: the instruction's input");
    cmd->add_flag("--step-by-step", o->step_by_step, "end the prompt with \"Let's think step by step.\" (the seed's GSM8K prompt)");
    return {cmd, [o]() {
                LoadOptions opt;
                opt.dtype = parse_dtype(o->dtype);
                auto m = load_with_adapters(o->model, o->adapters, opt);
                auto tok = load_tokenizer(o->model);
                auto sampling = o->sampling;
                sampling.eos_ids = eos_ids_of(o->model, m.base.config);
                if (auto eos = tok->eos_id(); eos && std::find(sampling.eos_ids.begin(), sampling.eos_ids.end(), *eos) == sampling.eos_ids.end())
                    sampling.eos_ids.push_back(*eos);
                GenerationPrompt gp;
                gp.template_name = o->template_file.empty() ? o->template_name : "file";
                if (!o->template_file.empty()) gp.template_text = io::read_file(o->template_file);
                gp.query = o->prompt;
                gp.input = o->input;
                gp.step_by_step = o->step_by_step;
                if (!o->input.empty() && gp.template_name != "alpaca" && gp.template_name != "file")
                    throw Error("--input goes with --template alpaca or a --template-file with {input}");
                if (gp.template_name != "none" && o->no_bos) throw Error("--no-bos applies to --template none only");
                const auto ids = gp.template_name == "none" ? tok->encode(o->prompt, !o->no_bos) : encode_generation_prompt(*tok, gp);
                // A chat turn ends with its end token.
                if (gp.template_name == "chatml" || gp.template_name == "llama3")
                    for (const char* end : {"<|im_end|>", "<|eot_id|>"})
                        if (auto id = tok->token_id(end)) sampling.eos_ids.push_back(*id);
                auto res = generate(*m.base.model, *tok, ids, sampling, [](const std::string& s) {
                    std::fwrite(s.data(), 1, s.size(), stdout);
                    std::fflush(stdout);
                });
                std::printf("\n");
                const double decode_tokens = static_cast<double>(res.tokens.size() > 0 ? res.tokens.size() - 1 : 0);
                log_info(strprintf("hra: prompt %lld tokens in %.3f s (%.1f tok/s); generated %zu tokens, decode %.1f tok/s; "
                                   "finish: %s",
                                   static_cast<long long>(res.prompt_tokens), res.prompt_seconds,
                                   res.prompt_seconds > 0 ? static_cast<double>(res.prompt_tokens) / res.prompt_seconds : 0.0,
                                   res.tokens.size(), res.decode_seconds > 0 ? decode_tokens / res.decode_seconds : 0.0,
                                   res.finish_reason.c_str()));
                return 0;
            }};
}

}  // namespace hra::cli
