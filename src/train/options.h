// The one options structure of `hra train`, for every task: parsed and
// validated before anything is written (enums are enums, numbers are checked,
// a task-specific option given to another task is an error), and written to
// the run folder's config.json in resolved form.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <c10/core/ScalarType.h>
#include <nlohmann/json_fwd.hpp>

#include "adapters/config.h"
#include "adapters/layers.h"
#include "core/householder.h"
#include "data/dataset.h"
#include "train/optim.h"

namespace hra {

// What trains (`--method`): adapters of a registered method (hra, lora; see
// adapters/method.h), the classifier head alone ("head"), or every parameter ("full").
bool is_known_train_method(const std::string& name);
std::vector<std::string> train_method_names();  // the adapter methods, then head and full

// Base-weight dtypes training takes: float32, bfloat16, float64 (hra::Error otherwise).
c10::ScalarType parse_train_dtype(const std::string& name);
const char* train_dtype_name(c10::ScalarType t);

struct TrainOptions {
    std::string task = "causal-lm";  // a name of the task registry (train/task.h)
    std::string model;               // Hugging Face model folder
    std::string out;                 // run folder
    std::string device = "cpu";      // cpu, cuda, cuda:N
    c10::ScalarType dtype = c10::ScalarType::Float;  // base weights: Float, BFloat16 or Double; adapters and optimizer state stay float32

    // What trains.
    std::string method = "hra";  // set with set_method() so that `adapter` follows
    AdapterConfig adapter;       // r, targets, ... with PEFT's names and defaults (lora_alpha 8)
    MultiplyPath strategy = MultiplyPath::Auto;  // HRA's path (--strategy wy_input, ...)

    // Sets `method`; for an adapter method also `adapter`'s method (its own options reset).
    void set_method(const std::string& name);
    bool trains_adapters() const;

    // Optimisation (AdamW with PyTorch's defaults, Hugging Face's schedules).
    double lr = 1e-4;
    Schedule schedule = Schedule::Linear;
    int64_t warmup_steps = 0;
    double warmup_ratio = 0;  // used when warmup_steps is 0
    double weight_decay = 0;
    double adam_beta1 = 0.9, adam_beta2 = 0.999, adam_eps = 1e-8;
    int64_t batch_size = 8;  // examples per micro-batch, over all processes
    int64_t grad_accum = 1;
    double max_grad_norm = 1.0;  // 0: no clipping
    double ema_decay = 0;        // > 0: checkpoints hold an EMA of the weights (diffusers' --use_ema; 0.9999 there)
    int64_t epochs = 1;
    int64_t max_steps = 0;     // > 0 overrides epochs
    double max_minutes = 0;    // > 0: stop (with a checkpoint) after this wall-clock time
    double ortho_lambda = 0;   // HRA orthogonality penalty weight
    core::PenaltyForm ortho_form = core::PenaltyForm::Squared;
    uint64_t seed = 0;
    bool shuffle = true;
    bool grad_checkpoint = false;  // recompute each layer in backward

    // Evaluation, checkpoints, logs.
    int64_t eval_every = 0;  // steps; 0: at the end of each epoch and of the run
    int64_t eval_batch_size = 0;  // 0: batch_size
    int64_t save_every = 0;  // steps; 0: at the end
    int64_t save_total_limit = 0;  // keep the last N checkpoint-K folders (0: all); best/ is kept apart
    int64_t log_every = 1;
    bool resume = false;
    bool overwrite = false;  // start over in a non-empty run folder
    // The command line's settings (option name -> values as given, after --config), saved in the
    // run's config.json so that `--resume` alone continues the run with them.
    nlohmann::json command_line = nlohmann::json::object();

    // causal-lm
    std::string data, val_data;  // records (JSON / JSONL); mlm: text, one example per line
    double val_split = 0;        // fraction (< 1) or count (>= 1) of the training data, when no val_data
    DataOptions data_options;    // max_length is every text task's

    // glue-*
    std::string data_dir, train_file, dev_file;
    std::string preset = "seed";  // seed or paper
    bool adapters_only = false;   // no modules_to_save: the seed's run.py trains hra_u alone
    int64_t max_train_examples = 0, max_eval_examples = 0;  // 0: all

    // mlm
    double mask_prob = 0.15;
    bool from_scratch = false;  // random initialisation (seeded) instead of the folder's weights (mlm, text-to-image)

    // text-to-image
    int64_t resolution = 0;        // image side in pixels (0: the UNet's sample_size × the VAE factor)
    double caption_dropout = 0;    // share of captions replaced by "" (classifier-free guidance)

    // dreambooth (images of --data are the instance images)
    std::string class_word;        // fills "a photo of qwe {class}" / "a photo of {class}"
    std::string instance_prompt, class_prompt;
    std::string class_data;        // class images; generated into it when fewer than num_class_images
    int64_t num_class_images = 200;
    double prior_loss_weight = 1.0;  // 0: no prior preservation
    bool center_crop = false;      // instead of diffusers' random crop
    bool train_text_encoder = false;  // the text encoder too: adapters on q/k/v/out_proj (or every weight with --method full)
    std::string validation_prompt;  // images at every evaluation, written as a grid
    int64_t validation_images = 4;

    // Test hooks: raise SIGINT after this step / make this step's loss NaN /
    // SIGKILL inside this step's checkpoint write (files written, folder not yet in place) /
    // SIGKILL with half of this step's optimizer.safetensors written.
    int64_t inject_sigint_at_step = 0;
    int64_t inject_nan_at_step = 0;
    int64_t inject_sigkill_in_save = 0;
    int64_t inject_sigkill_mid_file = 0;
};

// Checks every value and that the task exists; hra::Error naming the option.
void validate(const TrainOptions& options);

// The resolved options as written to config.json.
nlohmann::json to_json(const TrainOptions& options);

}  // namespace hra
