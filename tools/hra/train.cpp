// hra train: one engine for every task (causal-lm, glue-*, mlm). Every option
// can also come from --config FILE (YAML or JSON); the file and the flags go
// through the same parser, so they resolve the same way for every task.
// Options are validated before the run folder is created; a task-specific or
// method-specific option given where it does not apply is an error.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "adapters/hra.h"
#include "adapters/method.h"
#include "commands.h"
#include "common/error.h"
#include "common/strings.h"
#include "io/atomic_file.h"
#include "config_file.h"
#include "launch.h"
#include "train/engine.h"
#include "train/task.h"

namespace hra::cli {

namespace {

struct Raw {
    std::string method = "hra", strategy = "auto", schedule = "linear", ortho_form = "squared", dtype = "float32";
    std::vector<std::string> targets, save;
    std::string target_regex;
    std::vector<int64_t> layers;
    int nproc = 1;
    std::string bad_records = "skip";
    // The adapter methods' config flags (adapters/method.h), by flag name.
    std::map<std::string, bool> switches;
    std::map<std::string, std::string> values;
};

// A flag's text as the JSON type of the config key's default; errors name the flag.
nlohmann::json flag_value(const MethodFlag& f, const std::string& text, const nlohmann::json& def) {
    if (def.is_boolean()) {
        if (text == "true" || text == "1" || text == "on" || text == "yes") return true;
        if (text == "false" || text == "0" || text == "off" || text == "no") return false;
        throw Error("--" + f.flag + " expects true or false, got '" + text + "'");
    }
    if (def.is_number()) {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v))
            throw Error("--" + f.flag + " expects a number, got '" + text + "'");
        return v;
    }
    return text;
}

// Options that may differ on --resume (how long, how often, where), and those never recorded.
std::vector<std::string> resumable() {
    return {"max-steps", "epochs", "max-minutes", "save-every", "save-total-limit", "eval-every", "eval-batch-size",
            "log-every", "device", "nproc"};
}
bool unrecorded(const std::string& name) {
    return name == "config" || name == "resume" || name == "force" || name == "out" || name.rfind("inject-", 0) == 0;
}

// Switches are off by default, except these.
bool flag_default(const std::string& name) { return name == "shuffle"; }

// A flag's setting as its command-line form: --name or --no-name.
std::string flag_text(const std::string& name, bool on) { return on ? "--" + name : "--no-" + name; }

// An option's setting as given: a flag's resolved truth, else its values.
nlohmann::json given_value(const CLI::Option* opt) {
    if (opt->get_expected_min() == 0) return opt->as<bool>();
    return opt->results();
}

std::string value_text(const nlohmann::json& v) {
    if (v.is_array() && v.size() == 1) return v[0].get<std::string>();
    return v.dump();
}

bool same_setting(const nlohmann::json& a, const nlohmann::json& b) {
    if (a == b) return true;
    if (!a.is_array() || !b.is_array() || a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        const std::string x = a[i].get<std::string>(), y = b[i].get<std::string>();
        char *ex = nullptr, *ey = nullptr;
        const double dx = std::strtod(x.c_str(), &ex), dy = std::strtod(y.c_str(), &ey);
        const bool numbers = !x.empty() && !y.empty() && *ex == '\0' && *ey == '\0';
        if (x != y && !(numbers && dx == dy)) return false;
    }
    return true;
}

// The run folder's recorded command line (config.json's "command_line"), or null.
nlohmann::json recorded_command_line(const std::string& out) {
    const auto path = std::filesystem::path(out) / "config.json";
    if (!std::filesystem::is_regular_file(path)) return nullptr;
    const auto j = nlohmann::json::parse(io::read_file(path.string()), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error("not valid JSON", {path.string()});
    auto it = j.find("command_line");
    if (it == j.end() || !it->is_object()) return nullptr;
    for (auto v = it->begin(); v != it->end(); ++v) {
        bool ok = v->is_boolean() || v->is_array();
        if (v->is_array())
            for (const auto& e : *v) ok = ok && e.is_string();
        if (!ok) throw Error("must be true, false or a list of strings", {path.string(), "command_line." + v.key()});
    }
    return *it;
}

std::string task_list() {
    std::string s = "Tasks (--task):\n";
    for (const auto& t : task_registry()) {
        std::string name = t.name;
        name.resize(std::max<size_t>(name.size(), 12), ' ');
        s += "  " + name + "  " + t.help + "\n";
    }
    return s;
}

}  // namespace

Command add_train(CLI::App& app) {
    auto* cmd = app.add_subcommand("train", "train adapters (or a head, or a whole model) with one engine for every task");
    cmd->footer(task_list());
    add_config_option(cmd);
    auto o = std::make_shared<TrainOptions>();
    auto raw = std::make_shared<Raw>();
    auto& d = o->data_options;
    auto& a = o->adapter;
    std::vector<std::string> names;
    for (const auto& t : task_registry()) names.push_back(t.name);
    cmd->add_option("--task", o->task, "what to train (listed below)")->default_val("causal-lm")->check(CLI::IsMember(names));
    cmd->add_option("--model", o->model, "Hugging Face model folder")->required();
    cmd->add_option("--out", o->out, "run folder (checkpoints, best/, metrics.jsonl, config.json, loss.svg, results.json)")->required();
    cmd->add_option("--device", o->device, "cpu, cuda or cuda:N")->default_val("cpu");
    cmd->add_option("--nproc", raw->nproc, "data-parallel worker processes started here (torchrun's variables also work)")
        ->default_val(1)
        ->check(CLI::Range(1, 64));
    cmd->add_option("--dtype", raw->dtype, "base weights: float32, bfloat16 or float64 (adapters stay float32)")
        ->default_val("float32")
        ->check(CLI::IsMember({"float32", "bfloat16", "float64"}));

    // What trains.
    cmd->add_option("--method", raw->method, "hra, lora, head (GLUE: pooler and classifier alone) or full (mlm)")
        ->check(CLI::IsMember(train_method_names()));
    cmd->add_option("--r", a.r, "rank: Householder vectors (HRA) or LoRA rank")->default_val(8);
    // Each adapter method's own flags, as its registry entry describes them.
    for (const auto& m : adapter_methods())
        for (const auto& f : m.config_flags) {
            std::string flag_names = "--" + f.flag;
            for (const auto& alias : f.aliases) flag_names += ",--" + alias;
            const std::string help = m.peft_type + ": " + f.help;
            const auto& def = m.defaults.at(f.key);
            if (f.switch_only) {
                cmd->add_flag(flag_names, raw->switches[f.flag], help);
            } else {
                cmd->add_option(flag_names, raw->values[f.flag], help)
                    ->type_name(def.is_boolean() ? "BOOL" : def.is_number() ? "FLOAT" : "TEXT")
                    ->default_str(def.is_string() ? def.get<std::string>() : def.dump());
            }
        }
    cmd->add_option("--target-modules", raw->targets, "module names (exact or dotted suffix); default: the task's / model type's");
    cmd->add_option("--target-regex", raw->target_regex, "target modules as a full-match regex, or all-linear");
    cmd->add_option("--layers-to-transform", raw->layers, "adapt only these layer indices (PEFT's layers_to_transform)");
    cmd->add_option("--bias", a.bias, "none, all, hra_only / lora_only")->default_val("none");
    cmd->add_option("--modules-to-save", raw->save, "extra modules to train and save whole");
    cmd->add_option("--strategy", raw->strategy, "HRA path")
        ->default_val("auto")
        ->check(CLI::IsMember({"auto", "wy_input", "wy_weight", "reference"}));
    cmd->add_option("--ortho-lambda", o->ortho_lambda, "HRA orthogonality penalty weight (paper Eq. 6)")->default_val(0.0);
    cmd->add_option("--ortho-form", raw->ortho_form, "HRA penalty: squared (paper) or frobenius (original LLaMA code)")
        ->default_val("squared")
        ->check(CLI::IsMember({"squared", "frobenius"}));

    // Optimisation.
    cmd->add_option("--lr", o->lr, "peak learning rate")->default_val(1e-4);
    cmd->add_option("--schedule", raw->schedule, "after warmup")->default_val("linear")->check(CLI::IsMember({"constant", "linear", "cosine"}));
    cmd->add_option("--warmup-steps", o->warmup_steps, "warmup steps")->default_val(0);
    cmd->add_option("--warmup-ratio", o->warmup_ratio, "warmup as a share of the steps (when warmup-steps is 0)")->default_val(0.0);
    cmd->add_option("--weight-decay", o->weight_decay, "AdamW weight decay")->default_val(0.0);
    cmd->add_option("--adam-beta1", o->adam_beta1, "AdamW beta1")->default_val(0.9);
    cmd->add_option("--adam-beta2", o->adam_beta2, "AdamW beta2")->default_val(0.999);
    cmd->add_option("--adam-eps", o->adam_eps, "AdamW epsilon")->default_val(1e-8);
    cmd->add_option("--batch-size", o->batch_size, "examples per micro-batch, over all processes")->default_val(8);
    cmd->add_option("--grad-accum", o->grad_accum, "micro-batches per optimizer step")->default_val(1);
    cmd->add_option("--max-grad-norm", o->max_grad_norm, "gradient clipping (0: off)")->default_val(1.0);
    cmd->add_option("--ema-decay", o->ema_decay,
                    "keep an exponential moving average of the trained weights (decay min(D, k/(9+k)) at step k, as diffusers' "
                    "EMAModel); checkpoints, evaluation and best/ use it (0: off)")
        ->default_val(0.0);
    cmd->add_option("--epochs", o->epochs, "passes over the training data")->default_val(1);
    cmd->add_option("--max-steps", o->max_steps, "optimizer steps (overrides epochs when > 0)")->default_val(0);
    cmd->add_option("--max-minutes", o->max_minutes, "stop with a checkpoint after this wall-clock time (0: no limit)")->default_val(0.0);
    cmd->add_option("--seed", o->seed, "seed of initialisation, shuffling and dropout")->default_val(0);
    cmd->add_flag("--shuffle,!--no-shuffle", o->shuffle, "shuffle every epoch (the default; --no-shuffle keeps the data's order)");
    cmd->add_flag("--grad-checkpoint", o->grad_checkpoint, "recompute each layer in backward (less memory, more time)");

    // Evaluation, checkpoints, logs.
    cmd->add_option("--eval-every", o->eval_every, "evaluation every N steps (0: every epoch and at the end)")->default_val(0);
    cmd->add_option("--eval-batch-size", o->eval_batch_size, "evaluation batch size (0: --batch-size)")->default_val(0);
    cmd->add_option("--save-every", o->save_every, "checkpoint every N steps (0: at the end)")->default_val(0);
    cmd->add_option("--save-total-limit", o->save_total_limit, "keep only the newest N checkpoints (0: all; best/ is kept apart)")
        ->default_val(0)
        ->check(CLI::NonNegativeNumber);
    cmd->add_option("--log-every", o->log_every, "log line every N steps")->default_val(1);
    cmd->add_flag("--resume", o->resume,
                  "continue from the run folder's last checkpoint, with the settings in its config.json (`hra train --out RUN "
                  "--resume` alone; flags that would change them are errors, except " + join_names(resumable()) + ")");
    cmd->add_flag("--force", o->overwrite, "start over in a non-empty run folder");

    // causal-lm / mlm data.
    cmd->add_option("--data", o->data, "causal-lm: training records, JSON or JSONL; mlm: text, one example per line");
    cmd->add_option("--val-data", o->val_data, "validation records / text (else --val-split of the training data)");
    cmd->add_option("--val-split", o->val_split, "validation share of the training data: fraction < 1 or a count")->default_val(0.0);
    cmd->add_option("--format", d.format, "causal-lm: auto, metamath, gsm8k, alpaca, completion ({prompt, completion}, prompt used as is), text, chat")->default_val("auto");
    cmd->add_option("--prompt-field", d.prompt_field, "causal-lm: field holding the query / question / instruction");
    cmd->add_option("--response-field", d.response_field, "causal-lm: field holding the response / answer / output");
    cmd->add_option("--input-field", d.input_field, "causal-lm alpaca: field holding the input");
    cmd->add_option("--text-field", d.text_field, "causal-lm text format: the field");
    cmd->add_option("--messages-field", d.messages_field, "causal-lm chat format: the field");
    cmd->add_option("--prompt-template", d.prompt_template, "causal-lm: prompt with {query}")->default_val(std::string(kDefaultPromptTemplate));
    cmd->add_option("--chat-template", d.chat_template, "causal-lm: llama2, llama3 or chatml")->default_val("chatml");
    cmd->add_flag("--train-on-prompt,!--no-train-on-prompt", d.train_on_prompt, "causal-lm: loss on prompt tokens too");
    cmd->add_option("--max-length", d.max_length, "tokens per example (longer ones truncated); GLUE: from the preset")->default_val(512);
    cmd->add_flag("--packing,!--no-packing", d.packing, "causal-lm: concatenate examples into max-length blocks");
    cmd->add_option("--bad-records", raw->bad_records,
                    "a bad training record or TSV row: skip (one counted warning) or fail (name file and line)")
        ->default_val("skip")
        ->check(CLI::IsMember({"skip", "fail"}));
    // glue-*.
    cmd->add_option("--data-dir", o->data_dir, "GLUE: the glue_data folder (<TASK>/train.tsv, dev.tsv)");
    cmd->add_option("--train-file", o->train_file, "GLUE: training TSV (instead of --data-dir)");
    cmd->add_option("--dev-file", o->dev_file, "GLUE: dev TSV (instead of --data-dir)");
    cmd->add_option("--preset", o->preset,
                    "GLUE: seed (the seed repo's scripts) or paper (Table 5); dreambooth: seed (lr 1e-4, r 8), paper (lr 7e-6, r 7) "
                    "or peft (PEFT's hra_dreambooth example: lr 5e-3, bias hra_only)")
        ->default_val("seed")
        ->check(CLI::IsMember({"seed", "paper", "peft"}));
    cmd->add_flag("--adapters-only", o->adapters_only, "GLUE: train the adapters alone (the seed's run.py); default also pooler and classifier");
    cmd->add_option("--max-train-examples", o->max_train_examples, "GLUE: first N training examples (0: all)")->default_val(0);
    cmd->add_option("--max-eval-examples", o->max_eval_examples, "GLUE: first N dev examples (0: all)")->default_val(0);
    // mlm.
    cmd->add_option("--mask-prob", o->mask_prob, "mlm: share of tokens predicted")->default_val(0.15);
    cmd->add_flag("--from-scratch", o->from_scratch, "mlm, text-to-image: seeded random initialisation instead of the folder's weights");
    // text-to-image.
    cmd->add_option("--resolution", o->resolution, "text-to-image: image side in pixels (0: the UNet's sample_size x the VAE factor)")
        ->default_val(0);
    cmd->add_option("--caption-dropout", o->caption_dropout, "text-to-image: share of captions replaced by \"\" (for guidance)")
        ->default_val(0.0);
    // dreambooth.
    cmd->add_option("--class-word", o->class_word, "dreambooth: the subject's class (\"dog\"): prompts \"a photo of qwe dog\" / \"a photo of dog\"");
    cmd->add_option("--instance-prompt", o->instance_prompt, "dreambooth: prompt of the instance images (default from --class-word)");
    cmd->add_option("--class-prompt", o->class_prompt, "dreambooth: prompt of the class images (default from --class-word)");
    cmd->add_option("--class-data", o->class_data, "dreambooth: class-image folder; missing images are generated into it (PNDM 50, CFG 7.5) and reused");
    cmd->add_option("--num-class-images", o->num_class_images, "dreambooth: class images for prior preservation")->default_val(200);
    cmd->add_option("--prior-loss-weight", o->prior_loss_weight, "dreambooth: weight of the class-image loss (0: no prior preservation)")
        ->default_val(1.0);
    cmd->add_flag("--center-crop", o->center_crop, "dreambooth: centre crop instead of a random crop");
    cmd->add_flag("--train-text-encoder", o->train_text_encoder,
                  "dreambooth: train the text encoder too (the method's adapters on q_proj, k_proj, v_proj, out_proj; saved in "
                  "RUN/checkpoint-N/text_encoder beside unet/)");
    cmd->add_option("--validation-prompt", o->validation_prompt, "dreambooth: images of this prompt at every evaluation (a grid PNG in RUN/validation)");
    cmd->add_option("--validation-images", o->validation_images, "dreambooth: images per validation grid (DPM++ 25, CFG 7.5, seed 0)")
        ->default_val(4);

    cmd->add_option("--inject-sigint-at-step", o->inject_sigint_at_step, "testing: raise SIGINT after this step")->group("");
    cmd->add_option("--inject-nan-at-step", o->inject_nan_at_step, "testing: a NaN loss at this step")->group("");
    cmd->add_option("--inject-sigkill-in-save", o->inject_sigkill_in_save,
                    "testing: SIGKILL inside this step's checkpoint write")->group("");
    cmd->add_option("--inject-sigkill-mid-file", o->inject_sigkill_mid_file,
                    "testing: SIGKILL with half of this step's optimizer.safetensors written")->group("");

    return {cmd, [cmd, o, raw]() {
                std::set<std::string> given;
                for (const auto* opt : cmd->get_options())
                    if (opt->count() > 0 && !opt->get_lnames().empty()) given.insert(opt->get_lnames()[0]);
                nlohmann::json command_line = nlohmann::json::object();
                for (const auto* opt : cmd->get_options())
                    if (opt->count() > 0 && !opt->get_lnames().empty() && !unrecorded(opt->get_lnames()[0]))
                        command_line[opt->get_lnames()[0]] = given_value(opt);
                if (o->resume) {
                    // The run's recorded settings were added to the command line (expand_resume); any other
                    // value is a change, refused unless the option may change between sessions.
                    const auto recorded = recorded_command_line(o->out);
                    if (recorded.is_object()) {
                        const auto may_change = resumable();
                        std::vector<std::string> diffs;
                        for (auto it = command_line.begin(); it != command_line.end(); ++it) {
                            if (std::find(may_change.begin(), may_change.end(), it.key()) != may_change.end()) continue;
                            const auto r = recorded.find(it.key());
                            if (r == recorded.end()) {
                                const auto* opt = cmd->get_option("--" + it.key());
                                const bool flag = it.value().is_boolean();
                                const bool is_default = flag ? it.value().get<bool>() == flag_default(it.key())
                                                             : same_setting(it.value(), nlohmann::json::array({opt->get_default_str()}));
                                if (!is_default)
                                    diffs.push_back((flag ? flag_text(it.key(), it.value().get<bool>())
                                                          : "--" + it.key() + " " + value_text(it.value())) +
                                                    " (the run used the default)");
                            } else if (!same_setting(*r, it.value())) {
                                if (it.value().is_boolean())
                                    diffs.push_back(flag_text(it.key(), it.value().get<bool>()) + " (the run has " +
                                                    flag_text(it.key(), r->is_boolean() && r->get<bool>()) + ")");
                                else
                                    diffs.push_back("--" + it.key() + " " + value_text(it.value()) + " (the run has " + value_text(*r) + ")");
                            }
                        }
                        if (!diffs.empty())
                            throw Error("--resume continues a run with its own settings; these flags change them: " +
                                            join_names(diffs) + ". Drop them, or start a new run (another --out, or --force)",
                                        {(std::filesystem::path(o->out) / "config.json").string()});
                        command_line = recorded;  // the run's settings stay as they were
                        for (const auto& name : may_change)
                            if (given.count(name)) command_line[name] = given_value(cmd->get_option("--" + name));
                    }
                }
                o->command_line = command_line;
                const auto& info = find_task(o->task);
                for (const auto& name : task_specific_options())
                    if (given.count(name) && std::find(info.options.begin(), info.options.end(), name) == info.options.end())
                        throw Error("--" + name + " does not apply to --task " + o->task);
                o->set_method(given.count("method") ? raw->method : info.methods.front());
                const bool adapters = o->trains_adapters();
                // A method's own flags (the registry says which) are refused with another method.
                for (const auto& m : adapter_methods()) {
                    std::vector<std::string> own = m.cli_flags;
                    for (const auto& f : m.config_flags) own.push_back(f.flag);
                    for (const auto& flag : own)
                        if (given.count(flag) && o->method != m.name)
                            throw Error("--" + flag + " does not apply to --method " + o->method + " (" + m.peft_type + " only)");
                }
                for (const char* n : {"r", "target-modules", "target-regex", "bias", "modules-to-save", "layers-to-transform"})
                    if (given.count(n) && !adapters)
                        throw Error(std::string("--") + n + " does not apply to --method " + o->method + " (adapters only)");
                if (adapters) {
                    const auto& m = adapter_method(o->method);
                    for (const auto& f : m.config_flags) {
                        if (!given.count(f.flag)) continue;
                        o->adapter.set(f.key, f.switch_only ? nlohmann::json(raw->switches[f.flag])
                                                            : flag_value(f, raw->values[f.flag], m.defaults.at(f.key)));
                    }
                }
                if (!raw->target_regex.empty()) o->adapter.target_modules = ModuleSelector::regex(raw->target_regex);
                else if (!raw->targets.empty()) o->adapter.target_modules = ModuleSelector::of(raw->targets);
                if (!raw->save.empty()) o->adapter.modules_to_save = raw->save;
                if (!raw->layers.empty()) o->adapter.layers_to_transform = raw->layers;
                o->strategy = parse_hra_strategy(raw->strategy);
                o->schedule = parse_schedule(raw->schedule);
                o->ortho_form = core::parse_penalty_form(raw->ortho_form);
                o->dtype = parse_train_dtype(raw->dtype);
                o->data_options.on_bad_record = io::parse_on_bad_record(raw->bad_records);
                info.defaults(*o, given);
                validate(*o);
                const char* world = std::getenv("WORLD_SIZE");
                if (raw->nproc > 1 && !(world && *world)) return launch_workers(raw->nproc);
                auto result = train(*o);
                const char* rank = std::getenv("RANK");
                if (!rank || std::string(rank) == "0") std::printf("%s\n", result.result.dump().c_str());
                return result.interrupted ? 130 : 0;
            }};
}

std::vector<std::string> expand_resume(CLI::App* train, const std::vector<std::string>& args) {
    std::string out;
    bool resume = false;
    std::set<std::string> given;
    for (size_t i = 0; i < args.size(); ++i) {
        const std::string& a = args[i];
        if (a == "--resume") resume = true;
        if (a.rfind("--", 0) != 0) continue;
        const size_t eq = a.find('=');
        const std::string name = a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
        if (const auto* opt = train->get_option_no_throw("--" + name))
            for (const auto& n : opt->get_lnames()) given.insert(n);
        if (name == "out") out = eq != std::string::npos ? a.substr(eq + 1) : (i + 1 < args.size() ? args[i + 1] : "");
    }
    if (!resume || out.empty()) return args;
    const auto recorded = recorded_command_line(out);
    if (!recorded.is_object()) return args;  // a run from before config.json recorded its command line
    std::vector<std::string> expanded = args;
    for (auto it = recorded.begin(); it != recorded.end(); ++it) {
        const auto* opt = train->get_option_no_throw("--" + it.key());
        if (!opt || given.count(it.key())) continue;
        if (it.value().is_boolean()) {
            if (it.value().get<bool>() != flag_default(it.key())) expanded.push_back(flag_text(it.key(), it.value().get<bool>()));
            continue;
        }
        expanded.push_back("--" + it.key());
        for (const auto& v : it.value()) expanded.push_back(v.get<std::string>());
    }
    return expanded;
}

}  // namespace hra::cli
