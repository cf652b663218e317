// hra eval: score predictions made elsewhere, or generate and score GSM8K /
// MATH with a model, or measure loss and perplexity on a dataset. Prints one
// JSON line. Every option can also come from --config FILE (YAML or JSON).
#include <cstdio>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "io/atomic_file.h"
#include "config_file.h"
#include "data/dataset.h"
#include "eval/glue.h"
#include "eval/runner.h"
#include "eval/glue_model.h"
#include "models/model_weights.h"
#include "models/pipeline.h"
#include "text/tokenizer.h"

namespace hra::cli {

Command add_eval(CLI::App& app) {
    auto* cmd = app.add_subcommand("eval", "score GSM8K / MATH answers, or a model's loss and perplexity");
    add_config_option(cmd);
    struct Opts {
        std::string task, protocol = "strict", predictions, model, data, data_dir, output, dtype = "float32";
        std::string bad_records = "fail";
        std::vector<std::string> adapters;
        std::string completion_field = "completion", answer_field = "answer", question_field;
        int64_t limit = 0, max_new_tokens = 512, batch_size = 8;
        DataOptions data_options;
        std::string template_name = "metamath", template_file;
        bool step_by_step = true;
    };
    auto o = std::make_shared<Opts>();
    std::vector<std::string> tasks = {"gsm8k", "math", "perplexity"};
    for (const auto& t : glue::task_names()) tasks.push_back("glue-" + t);
    cmd->add_option("--task", o->task, "gsm8k, math, perplexity or glue-{cola,sst2,mrpc,stsb,qqp,mnli,mnli-mm,qnli,rte,wnli}")
        ->required()
        ->check(CLI::IsMember(tasks));
    cmd->add_option("--protocol", o->protocol, "answer scoring: strict or seed (the HRA paper's graders, bug for bug)")
        ->default_val("strict")->check(CLI::IsMember({"seed", "strict"}));
    cmd->add_option("--predictions", o->predictions, "JSONL of completions to score (no model needed)");
    cmd->add_option("--completion-field", o->completion_field, "predictions: the completion field")->default_val("completion");
    cmd->add_option("--answer-field", o->answer_field, "the reference field (GSM8K: '#### N' text or a number; MATH: the solution)")
        ->default_val("answer");
    cmd->add_option("--question-field", o->question_field, "with --model: the question field (default question / instruction / problem)");
    cmd->add_option("--model", o->model, "model folder, to generate and score");
    cmd->add_option("--adapter", o->adapters, "PEFT adapter folder; repeatable");
    cmd->add_option("--data", o->data, "with --model: the evaluation records (JSONL; GLUE: a dev TSV)");
    cmd->add_option("--data-dir", o->data_dir, "GLUE with --model: the glue_data folder");
    cmd->add_option("--limit", o->limit, "first N records only (0: all)")->default_val(0);
    cmd->add_option("--max-new-tokens", o->max_new_tokens, "generation length")->default_val(512);
    cmd->add_option("--template", o->template_name,
                    "gsm8k/math with --model: prompt template, " + join_names(prompt_template_names()) + " (metamath: the seed's)")
        ->default_val("metamath")
        ->check(CLI::IsMember(prompt_template_names()));
    cmd->add_option("--template-file", o->template_file, "gsm8k/math with --model: a prompt template file with {query}");
    auto* step = cmd->add_flag("--step-by-step,!--no-step-by-step", o->step_by_step,
                               "gsm8k/math with --model: end the prompt with \"Let's think step by step.\" (the seed's; default on, "
                               "off with --template-file: the file is the whole prompt)");
    cmd->add_option("--batch-size", o->batch_size, "perplexity: examples per batch; gsm8k/math with --model: questions generated together")->default_val(8);
    cmd->add_option("--format", o->data_options.format, "perplexity: data format (auto, metamath, gsm8k, alpaca, completion, text, chat)")->default_val("auto");
    cmd->add_option("--chat-template", o->data_options.chat_template, "perplexity, chat data: llama2, llama3 or chatml")
        ->default_val("chatml")
        ->check(CLI::IsMember({"llama2", "llama3", "chatml"}));
    cmd->add_option("--max-length", o->data_options.max_length, "perplexity: tokens per example")->default_val(512);
    cmd->add_option("--dtype", o->dtype, "compute dtype")->default_val("float32");
    cmd->add_option("--output", o->output, "write the scored predictions (JSONL) here");
    cmd->add_option("--bad-records", o->bad_records, "a bad record or row: fail (name file and line) or skip (counted in \"skipped\")")
        ->default_val("fail")
        ->check(CLI::IsMember({"fail", "skip"}));
    return {cmd, [cmd, o, step]() {
                nlohmann::json result;
                const auto protocol = eval::parse_protocol(o->protocol);
                const auto bad = io::parse_on_bad_record(o->bad_records);
                o->data_options.on_bad_record = bad;
                if (o->task.rfind("glue-", 0) == 0) {
                    if (!o->predictions.empty()) {
                        result = glue::score_predictions_file(glue::task(o->task), o->predictions, bad);
                    } else {
                        if (o->model.empty()) throw Error("glue tasks: give --predictions, or --model (with --adapter) and --data-dir");
                        GlueEvalOptions g;
                        g.model = o->model;
                        g.adapters = o->adapters;
                        g.task = o->task;
                        g.data_dir = o->data_dir;
                        g.dev_file = o->data;
                        g.max_length = cmd->count("--max-length") ? o->data_options.max_length : 0;
                        g.limit = o->limit;
                        g.dtype = parse_dtype(o->dtype);
                        g.output = o->output;
                        g.on_bad_record = bad;
                        result = evaluate_glue(g);
                    }
                } else if (!o->predictions.empty()) {
                    if (o->task == "perplexity") throw Error("--predictions needs --task gsm8k or math");
                    eval::ScoreOptions s;
                    s.task = o->task;
                    s.protocol = protocol;
                    s.completion_field = o->completion_field;
                    s.answer_field = o->answer_field;
                    s.output = o->output;
                    s.on_bad_record = bad;
                    result = eval::score_predictions(o->predictions, s);
                } else {
                    if (o->model.empty() || o->data.empty()) throw Error("give --predictions, or --model and --data");
                    LoadOptions lo;
                    lo.dtype = parse_dtype(o->dtype);
                    auto m = load_with_adapters(o->model, o->adapters, lo);
                    auto tok = load_tokenizer(o->model);
                    if (o->task == "perplexity") {
                        result = eval::perplexity(*m.base.model, *tok, o->data, o->data_options, o->batch_size);
                    } else {
                        eval::GenerateEvalOptions g;
                        g.task = o->task;
                        g.protocol = protocol;
                        g.data = o->data;
                        g.question_field = o->question_field;
                        g.answer_field = o->answer_field == "answer" ? "" : o->answer_field;
                        if (o->limit > 0) g.limit = o->limit;
                        g.max_new_tokens = o->max_new_tokens;
                        g.batch_size = o->batch_size;
                        g.output = o->output;
                        g.on_bad_record = bad;
                        g.template_name = o->template_file.empty() ? o->template_name : "file";
                        if (!o->template_file.empty()) g.template_text = io::read_file(o->template_file);
                        g.step_by_step = o->step_by_step && (o->template_file.empty() || step->count() > 0);
                        result = eval::generate_and_score(*m.base.model, *tok, g);
                    }
                }
                std::printf("%s\n", result.dump().c_str());
                return 0;
            }};
}

}  // namespace hra::cli
