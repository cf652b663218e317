// hra demo: the bundled end-to-end demo (no downloads).
#include <cstdio>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "common/error.h"
#include "demo/control_demo.h"
#include "demo/demo.h"
#include "demo/nlu_demo.h"
#include "demo/diffusion_demo.h"
#include "demo/subject_demo.h"

namespace hra::cli {

Command add_demo(CLI::App& app) {
    auto* cmd = app.add_subcommand("demo", "fine-tune the bundled stories260K with HRA and LoRA on a small task, before/after");
    auto o = std::make_shared<DemoOptions>();
    o->data_dir = HRA_DATA_DIR;
    cmd->add_option("--out", o->out, "run folder (replaced if it holds an earlier demo)")->default_val("demo-run");
    cmd->add_option("--data-dir", o->data_dir, "bundled data folder")->default_val(o->data_dir);
    cmd->add_option("--steps", o->steps, "optimizer steps per run")->default_val(o->steps);
    cmd->add_option("--batch-size", o->batch_size, "examples per step")->default_val(o->batch_size);
    cmd->add_option("--hra-lrs", o->hra_lrs, "HRA learning rates to try");
    cmd->add_option("--lora-lrs", o->lora_lrs, "LoRA learning rates to try");
    cmd->add_option("--train-examples", o->train_examples, "training questions")->default_val(o->train_examples);
    cmd->add_option("--val-examples", o->val_examples, "validation questions (learning rates are chosen on them)")
        ->default_val(o->val_examples);
    cmd->add_option("--test-examples", o->test_examples, "held-out questions")->default_val(o->test_examples);
    cmd->add_option("--data-seed", o->data_seed, "order of the question pool, hence the split")->default_val(o->data_seed);
    auto nlu = std::make_shared<NluDemoOptions>();
    auto want_nlu = std::make_shared<bool>(false);
    cmd->add_flag("--nlu", *want_nlu,
                  "the NLU demo instead: pretrain a tiny DeBERTa (MLM) on SST-2 text, then head-only vs HRA vs LoRA over 3 seeds");
    cmd->add_option("--glue-dir", nlu->data_dir, "--nlu: the glue_data folder holding SST-2/train.tsv and dev.tsv");
    cmd->add_option("--pretrain-minutes", nlu->pretrain_minutes, "--nlu: MLM pretraining time box")->default_val(nlu->pretrain_minutes);
    cmd->add_option("--finetune-examples", nlu->finetune_examples, "--nlu: SST-2 training examples per run")
        ->default_val(nlu->finetune_examples);
    cmd->add_option("--finetune-epochs", nlu->finetune_epochs, "--nlu: epochs per run")->default_val(nlu->finetune_epochs);
    auto diff = std::make_shared<DiffusionDemoOptions>();
    auto want_diff = std::make_shared<bool>(false);
    cmd->add_flag("--diffusion", *want_diff,
                  "the diffusion demo instead: a tiny Stable Diffusion (CLIP text encoder + UNet, pixel space) trained from "
                  "scratch on the shape world, held-out captions checked from the pixels, over 3 seeds");
    cmd->add_option("--train-minutes", diff->train_minutes, "--diffusion: training time box per seed")->default_val(diff->train_minutes);
    cmd->add_option("--max-steps", diff->max_steps, "--diffusion: stop each run at this many steps instead (0: the time box)")
        ->default_val(0);
    cmd->add_option("--seeds", diff->seeds, "training seeds (the learning rates are chosen with the first)")->default_str("0 1 2");
    cmd->add_option("--sample-steps", diff->sample_steps, "--diffusion: sampler steps per image")->default_val(diff->sample_steps);
    cmd->add_option("--guidance", diff->guidance, "--diffusion: classifier-free guidance scale")->default_val(diff->guidance);
    cmd->add_option("--prediction", diff->prediction, "--diffusion: what the UNet predicts")
        ->default_val(diff->prediction)
        ->check(CLI::IsMember({"sample", "epsilon", "v_prediction"}));
    cmd->add_option("--image-size", diff->image_size, "--diffusion: pixels per side of the world's images")
        ->default_val(diff->image_size)
        ->check(CLI::IsMember({32, 64}));
    cmd->add_option("--beta-schedule", diff->beta_schedule, "--diffusion: the noise schedule")
        ->default_val(diff->beta_schedule)
        ->check(CLI::IsMember({"linear", "squaredcos_cap_v2"}));
    cmd->add_option("--layers-per-block", diff->layers_per_block, "--diffusion: ResNet blocks per UNet level")
        ->default_val(diff->layers_per_block)
        ->check(CLI::PositiveNumber);
    cmd->add_option("--channels", diff->channels, "--diffusion: the UNet's block_out_channels")->default_str("32 64 64 64");
    cmd->add_option("--train-batch", diff->batch_size, "--diffusion: images per step")->default_val(diff->batch_size);
    cmd->add_option("--ema-decay", diff->ema_decay, "--diffusion: EMA of the weights for sampling (0: off)")
        ->default_val(diff->ema_decay);
    cmd->add_option("--lr", diff->lr, "--diffusion: AdamW learning rate")->default_val(diff->lr);
    cmd->add_option("--attention-levels", diff->attention_levels, "--diffusion: UNet levels with cross-attention (coarsest first)")
        ->default_val(diff->attention_levels);
    cmd->add_option("--text-layers", diff->text_layers, "--diffusion: CLIP text encoder layers (0: token and position embeddings alone)")
        ->default_val(diff->text_layers)
        ->check(CLI::Range(0, 12));
    cmd->add_option("--max-tokens", diff->max_tokens, "--diffusion: prompt length in tokens")->default_val(diff->max_tokens);
    cmd->add_option("--renders", diff->renders_per_caption, "--diffusion: training images per caption")
        ->default_val(diff->renders_per_caption);
    auto subj = std::make_shared<SubjectDemoOptions>();
    auto want_subj = std::make_shared<bool>(false);
    cmd->add_flag("--subject", *want_subj,
                  "the DreamBooth demo instead: pretrain the --diffusion model without a subject (a wide bar), then teach it from 4 images "
                  "with HRA and LoRA (same budget, prior preservation), subject prompts in held-out colours and cells, 3 seeds");
    cmd->add_option("--base-minutes", subj->base_minutes,
                    "--subject, --control: pretrain the base model for this time instead of --base-steps (--control: 2.5 unless given)")
        ->default_val(subj->base_minutes);
    cmd->add_option("--base", subj->base, "--subject, --control: reuse the base model of an earlier run (OUT/base/checkpoint-N) instead of pretraining");
    cmd->add_option("--base-steps", subj->base_max_steps,
                    "--subject, --control: pretraining steps of the base model (0: the time box)")
        ->default_val(subj->base_max_steps);
    cmd->add_option("--finetune-steps", subj->steps, "--subject, --control: fine-tuning steps per run (--subject: batch 1 + 1 class image; --control: 120 unless given)")->default_val(subj->steps);
    cmd->add_option("--class-images", subj->class_images, "--subject: class images the base generates")->default_val(subj->class_images);
    cmd->add_option("--instance-contexts", subj->instance_contexts,
                    "--subject: colours and cells the instance images show, each with its caption (1: one instance prompt)")
        ->default_val(subj->instance_contexts);
    auto ctrl = std::make_shared<ControlDemoOptions>();
    auto want_ctrl = std::make_shared<bool>(false);
    cmd->add_flag("--control", *want_ctrl,
                  "the control demo instead: pretrain the --diffusion model, then learn canny -> image (hint encoder + HRA or LoRA, same "
                  "budget), edge F1 on conditions of held-out layouts before and after, 3 seeds");
    cmd->add_option("--renders-per-pair", ctrl->renders, "--control: control pairs per training layout and colour")->default_val(ctrl->renders);
    cmd->add_option("--batch", ctrl->batch_size, "--control: control pairs per step")->default_val(ctrl->batch_size);
    return {cmd, [cmd, o, nlu, want_nlu, diff, want_diff, subj, want_subj, ctrl, want_ctrl]() {
                if (*want_nlu + *want_diff + *want_subj + *want_ctrl > 1) throw Error("give one of --nlu, --diffusion, --subject and --control");
                if ((*want_subj || *want_ctrl) && (cmd->count("--steps") || cmd->count("--batch-size")))
                    throw Error("--steps and --batch-size are the stories260K demo's; --subject and --control take --finetune-steps "
                                "(and --control --batch)");
                if (*want_ctrl) {
                    // The options --subject shares with --control: the base model and the fine-tuning runs.
                    ctrl->out = cmd->count("--out") ? o->out : "demo-control";
                    const int64_t levels = ctrl->world.attention_levels;
                    ctrl->world = *diff;
                    if (!cmd->count("--attention-levels")) ctrl->world.attention_levels = levels;
                    if (cmd->count("--base-minutes")) ctrl->base_minutes = subj->base_minutes;
                    ctrl->base = subj->base;
                    if (cmd->count("--base-steps")) ctrl->base_max_steps = subj->base_max_steps;
                    else if (cmd->count("--base-minutes")) ctrl->base_max_steps = 0;  // the time box
                    if (cmd->count("--finetune-steps")) ctrl->steps = subj->steps;
                    if (cmd->count("--seeds")) ctrl->seeds = diff->seeds;
                    if (cmd->count("--hra-lrs")) ctrl->hra_lrs = o->hra_lrs;
                    if (cmd->count("--lora-lrs")) ctrl->lora_lrs = o->lora_lrs;
                    auto r = run_control_demo(*ctrl);
                    std::printf("%s", r.table.c_str());
                    return 0;
                }
                if (*want_subj) {
                    subj->out = cmd->count("--out") ? o->out : "demo-subject";
                    const int64_t levels = subj->world.attention_levels;
                    subj->world = *diff;  // the world model and sampler options apply to the base
                    if (!cmd->count("--attention-levels")) subj->world.attention_levels = levels;
                    if (cmd->count("--base-minutes") && !cmd->count("--base-steps")) subj->base_max_steps = 0;  // the time box
                    if (cmd->count("--seeds")) subj->seeds = diff->seeds;
                    if (cmd->count("--hra-lrs")) subj->hra_lrs = o->hra_lrs;
                    if (cmd->count("--lora-lrs")) subj->lora_lrs = o->lora_lrs;
                    auto r = run_subject_demo(*subj);
                    std::printf("%s", r.table.c_str());
                    return 0;
                }
                if (*want_diff) {
                    diff->out = cmd->count("--out") ? o->out : "demo-diffusion";
                    auto r = run_diffusion_demo(*diff);
                    std::printf("%s", r.table.c_str());
                    return 0;
                }
                if (*want_nlu) {
                    if (cmd->count("--out")) nlu->out = o->out;
                    auto r = run_nlu_demo(*nlu);
                    std::printf("%s", r.table.c_str());
                    return 0;
                }
                if (cmd->count("--seeds")) o->seeds = diff->seeds;
                auto r = run_demo(*o);
                std::printf("%s%s\n", r.table.c_str(), r.summary.dump().c_str());  // the last line: the table as JSON
                return 0;
            }};
}

}  // namespace hra::cli
