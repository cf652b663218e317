// hra train: fine-tune adapters (HRA or LoRA) on a model folder and a dataset.
// Every option below can also come from --config FILE (YAML or JSON).
#include <cstdio>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "common/error.h"
#include "config_file.h"
#include "train/glue_trainer.h"
#include "train/trainer.h"

namespace hra::cli {

namespace {

void add_adapter_options(CLI::App* cmd, AdapterConfig& a, std::shared_ptr<std::string> method,
                         std::shared_ptr<std::vector<std::string>> targets, std::shared_ptr<std::string> target_regex,
                         std::shared_ptr<std::vector<std::string>> save) {
    cmd->add_option("--method", *method, "adapter: hra or lora (GLUE tasks also: head, the pooler and classifier alone)")
        ->default_val("hra")
        ->check(CLI::IsMember({"hra", "lora", "head"}));
    cmd->add_option("--r", a.r, "rank: Householder vectors (HRA) or LoRA rank")->default_val(8);
    cmd->add_flag("--apply-GS,--apply-gs", a.apply_GS, "HRA: Gram-Schmidt orthogonalisation (lambda = infinity)");
    cmd->add_option("--init-weights", a.init_weights, "HRA: paired init so H = I at start")->default_val(true);
    cmd->add_option("--lora-alpha", a.lora_alpha, "LoRA alpha (scaling alpha/r)")->default_val(16);
    cmd->add_option("--lora-dropout", a.lora_dropout, "LoRA dropout")->default_val(0.0);
    cmd->add_option("--target-modules", *targets, "module names (exact or dotted suffix); default: the model type's (q_proj, v_proj)");
    cmd->add_option("--target-regex", *target_regex, "target modules as a full-match regex, or all-linear");
    cmd->add_option("--bias", a.bias, "none, all, hra_only / lora_only")->default_val("none");
    cmd->add_option("--modules-to-save", *save, "extra modules to train and save whole");
}

}  // namespace

Command add_train(CLI::App& app) {
    auto* cmd = app.add_subcommand("train", "fine-tune HRA or LoRA adapters on a dataset");
    add_config_option(cmd);
    auto o = std::make_shared<TrainOptions>();
    auto method = std::make_shared<std::string>("hra");
    auto targets = std::make_shared<std::vector<std::string>>();
    auto target_regex = std::make_shared<std::string>();
    auto save = std::make_shared<std::vector<std::string>>();
    auto& d = o->data_options;
    cmd->add_option("--model", o->model, "Hugging Face model folder")->required();
    auto g = std::make_shared<GlueTrainOptions>();
    std::vector<std::string> glue_tasks;
    for (const auto& t : glue::task_names()) glue_tasks.push_back("glue-" + t);
    cmd->add_option("--task", g->task, "GLUE fine-tuning of a DeBERTa-v2/v3 classifier: glue-{cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte,wnli}")
        ->check(CLI::IsMember(glue_tasks));
    cmd->add_option("--data-dir", g->data_dir, "GLUE: the glue_data folder (<TASK>/train.tsv, dev.tsv)");
    cmd->add_option("--train-file", g->train_file, "GLUE: training TSV (instead of --data-dir)");
    cmd->add_option("--dev-file", g->dev_file, "GLUE: dev TSV (instead of --data-dir)");
    cmd->add_option("--preset", g->preset, "GLUE hyperparameters: seed (the seed repo's scripts) or paper (Table 5)")
        ->default_val("seed")
        ->check(CLI::IsMember({"seed", "paper"}));
    cmd->add_flag("--adapters-only", g->adapters_only, "GLUE: train the adapters alone (the seed's run.py); default also pooler and classifier");
    cmd->add_option("--max-train-examples", g->max_train_examples, "GLUE: first N training examples (0: all)")->default_val(0);
    cmd->add_option("--max-eval-examples", g->max_eval_examples, "GLUE: first N dev examples (0: all)")->default_val(0);
    cmd->add_option("--eval-batch-size", g->eval_batch_size, "GLUE: dev batch size")->default_val(64);
    cmd->add_option("--data", o->data, "training records, JSON or JSONL");
    cmd->add_option("--out", o->out, "run folder (checkpoints, metrics.jsonl, config.json, loss.svg)")->required();
    cmd->add_option("--val-data", o->val_data, "validation records (else --val-split of the training data)");
    cmd->add_option("--val-split", o->val_split, "validation share of the training data: fraction < 1 or a count")->default_val(0.0);
    cmd->add_option("--format", d.format, "auto, metamath, gsm8k, alpaca, text, chat")->default_val("auto");
    cmd->add_option("--prompt-field", d.prompt_field, "field holding the query / question / instruction");
    cmd->add_option("--response-field", d.response_field, "field holding the response / answer / output");
    cmd->add_option("--input-field", d.input_field, "alpaca: field holding the input");
    cmd->add_option("--text-field", d.text_field, "text format: the field");
    cmd->add_option("--messages-field", d.messages_field, "chat format: the field");
    cmd->add_option("--prompt-template", d.prompt_template, "prompt with {query}")->default_val(std::string(kDefaultPromptTemplate));
    cmd->add_option("--chat-template", d.chat_template, "llama2, llama3 or chatml")->default_val("chatml");
    cmd->add_option("--train-on-prompt", d.train_on_prompt, "loss on prompt tokens too")->default_val(false);
    cmd->add_option("--max-length", d.max_length, "tokens per example (longer ones truncated)")->default_val(512);
    cmd->add_option("--packing", d.packing, "concatenate examples into max-length blocks")->default_val(false);
    add_adapter_options(cmd, o->adapter, method, targets, target_regex, save);
    cmd->add_option("--strategy", o->strategy, "HRA path: auto, wy_input, wy_weight, reference")->default_val("auto");
    cmd->add_option("--lr", o->lr, "peak learning rate")->default_val(1e-4);
    cmd->add_option("--schedule", o->schedule, "constant, linear or cosine (after warmup)")->default_val("linear");
    cmd->add_option("--warmup-steps", o->warmup_steps, "warmup steps")->default_val(0);
    cmd->add_option("--warmup-ratio", o->warmup_ratio, "warmup as a share of the steps (when warmup-steps is 0)")->default_val(0.0);
    cmd->add_option("--weight-decay", o->weight_decay, "AdamW weight decay")->default_val(0.0);
    cmd->add_option("--adam-beta1", o->adam_beta1, "AdamW beta1")->default_val(0.9);
    cmd->add_option("--adam-beta2", o->adam_beta2, "AdamW beta2")->default_val(0.999);
    cmd->add_option("--adam-eps", o->adam_eps, "AdamW epsilon")->default_val(1e-8);
    cmd->add_option("--batch-size", o->batch_size, "examples per micro-batch")->default_val(8);
    cmd->add_option("--grad-accum", o->grad_accum, "micro-batches per optimizer step")->default_val(1);
    cmd->add_option("--max-grad-norm", o->max_grad_norm, "gradient clipping (0: off)")->default_val(1.0);
    cmd->add_option("--epochs", o->epochs, "passes over the training data")->default_val(1);
    cmd->add_option("--max-steps", o->max_steps, "optimizer steps (overrides epochs when > 0)")->default_val(0);
    cmd->add_option("--ortho-lambda", o->ortho_lambda, "HRA orthogonality penalty weight (paper Eq. 6)")->default_val(0.0);
    cmd->add_option("--ortho-form", o->ortho_form, "squared (paper) or frobenius (original LLaMA code)")->default_val("squared");
    cmd->add_option("--dtype", o->dtype, "base weights: float32 or bfloat16 (adapters stay float32)")->default_val("float32");
    cmd->add_option("--seed", o->seed, "seed of initialisation, shuffling and dropout")->default_val(0);
    cmd->add_option("--shuffle", o->shuffle, "shuffle every epoch")->default_val(true);
    cmd->add_option("--eval-every", o->eval_every, "validation every N steps (0: at the end)")->default_val(0);
    cmd->add_option("--save-every", o->save_every, "checkpoint every N steps (0: at the end)")->default_val(0);
    cmd->add_option("--log-every", o->log_every, "log line every N steps")->default_val(1);
    cmd->add_flag("--resume", o->resume, "continue from the run folder's last checkpoint");
    cmd->add_flag("--force", o->overwrite, "start over in a non-empty run folder");
    cmd->add_option("--inject-sigint-at-step", o->inject_sigint_at_step, "testing: raise SIGINT after this step")->group("");
    cmd->add_option("--inject-nan-at-step", o->inject_nan_at_step, "testing: a NaN loss at this step")->group("");
    return {cmd, [cmd, o, g, method, targets, target_regex, save]() {
                o->adapter.method = *method == "lora" ? Method::Lora : Method::Hra;
                if (!target_regex->empty()) o->adapter.target_modules = ModuleSelector::regex(*target_regex);
                else if (!targets->empty()) o->adapter.target_modules = ModuleSelector::of(*targets);
                if (!save->empty()) o->adapter.modules_to_save = *save;
                if (!g->task.empty()) {
                    // GLUE: the preset decides what the user did not give.
                    auto given = [&](const char* flag) { return cmd->count(flag) > 0; };
                    g->model = o->model;
                    g->out = o->out;
                    g->method = *method;
                    g->adapter = o->adapter;
                    if (given("--lr")) g->lr = o->lr;
                    if (given("--epochs")) g->epochs = o->epochs;
                    if (given("--warmup-steps")) g->warmup_steps = o->warmup_steps;
                    if (given("--max-length")) g->max_length = o->data_options.max_length;
                    if (given("--batch-size")) g->batch_size = o->batch_size;
                    if (given("--weight-decay")) g->weight_decay = o->weight_decay;
                    if (given("--adam-eps")) g->adam_eps = o->adam_eps;
                    g->max_grad_norm = o->max_grad_norm;
                    g->schedule = o->schedule;
                    g->dtype = o->dtype;
                    g->strategy = o->strategy;
                    g->seed = o->seed;
                    g->ortho_lambda = o->ortho_lambda;
                    g->overwrite = o->overwrite;
                    g->quiet = o->quiet;
                    auto r = train_glue(*g);
                    std::printf("%s\n", r.results.dump().c_str());
                    return 0;
                }
                if (o->data.empty()) throw Error("train: give --data (or --task glue-* with --data-dir)");
                if (*method == "head") throw Error("--method head is for GLUE tasks (--task glue-*)");
                auto result = train(*o);
                std::printf("%s\n", result.adapter_dir.c_str());
                return result.interrupted ? 130 : 0;
            }};
}

}  // namespace hra::cli
