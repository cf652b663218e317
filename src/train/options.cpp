#include "train/options.h"

#include <cmath>
#include <regex>

#include <nlohmann/json.hpp>

#include "adapters/hra.h"
#include "adapters/method.h"
#include "common/error.h"
#include "common/strings.h"
#include "train/task.h"

namespace hra {

using json = nlohmann::json;

std::vector<std::string> train_method_names() {
    auto names = adapter_method_names();
    names.push_back("head");
    names.push_back("full");
    return names;
}

bool is_known_train_method(const std::string& name) {
    const auto names = train_method_names();
    return std::find(names.begin(), names.end(), name) != names.end();
}

void TrainOptions::set_method(const std::string& name) {
    if (!is_known_train_method(name))
        throw Error("unknown method '" + name + "' (expected " + join_names(train_method_names()) + ")");
    method = name;
    if (trains_adapters() && adapter_method(name).peft_type != adapter.peft_type) adapter.set_method(name);
}

bool TrainOptions::trains_adapters() const { return is_adapter_method(method) && method != "head" && method != "full"; }

c10::ScalarType parse_train_dtype(const std::string& n) {
    if (n == "float32") return c10::ScalarType::Float;
    if (n == "bfloat16") return c10::ScalarType::BFloat16;
    if (n == "float64") return c10::ScalarType::Double;
    throw Error("--dtype must be float32, bfloat16 or float64, got '" + n + "'");
}

const char* train_dtype_name(c10::ScalarType t) {
    switch (t) {
        case c10::ScalarType::Float: return "float32";
        case c10::ScalarType::BFloat16: return "bfloat16";
        case c10::ScalarType::Double: return "float64";
        default: return "unsupported";
    }
}

namespace {

const char* schedule_name(Schedule s) {
    switch (s) {
        case Schedule::Constant: return "constant";
        case Schedule::Linear: return "linear";
        case Schedule::Cosine: return "cosine";
    }
    return "?";
}

void check(bool ok, const std::string& option, const std::string& what) {
    if (!ok) throw Error("--" + option + " " + what);
}

}  // namespace

void validate(const TrainOptions& o) {
    const auto& info = find_task(o.task);
    check(!o.model.empty(), "model", "is required");
    check(!o.out.empty(), "out", "is required");
    if (!is_known_train_method(o.method))
        throw Error("unknown method '" + o.method + "' (expected " + join_names(train_method_names()) + ")");
    if (std::find(info.methods.begin(), info.methods.end(), o.method) == info.methods.end())
        throw Error("--method " + o.method + " does not apply to --task " + o.task + " (it takes " +
                    join_names(info.methods) + ")");
    if (o.trains_adapters() && adapter_method(o.method).peft_type != o.adapter.peft_type)
        throw Error("--method " + o.method + " with a " + o.adapter.peft_type +
                    " adapter configuration (set the method with TrainOptions::set_method)");
    if (o.grad_checkpoint && !info.grad_checkpoint)
        throw Error("--grad-checkpoint does not apply to --task " + o.task + " (LLaMA-family tasks only)");
    static const std::regex device_re("cpu|cuda(:[0-9]+)?");
    check(std::regex_match(o.device, device_re), "device", "must be cpu, cuda or cuda:N, got '" + o.device + "'");
    check(std::string(train_dtype_name(o.dtype)) != "unsupported", "dtype", "must be float32, bfloat16 or float64");
    auto finite = [](double v) { return std::isfinite(v); };
    check(finite(o.lr) && o.lr > 0, "lr", "must be a positive number");
    check(o.warmup_steps >= 0, "warmup-steps", "must be >= 0");
    check(finite(o.warmup_ratio) && o.warmup_ratio >= 0 && o.warmup_ratio <= 1, "warmup-ratio", "must be in [0, 1]");
    check(finite(o.weight_decay) && o.weight_decay >= 0, "weight-decay", "must be >= 0");
    check(finite(o.adam_beta1) && o.adam_beta1 >= 0 && o.adam_beta1 < 1, "adam-beta1", "must be in [0, 1)");
    check(finite(o.adam_beta2) && o.adam_beta2 >= 0 && o.adam_beta2 < 1, "adam-beta2", "must be in [0, 1)");
    check(finite(o.adam_eps) && o.adam_eps > 0, "adam-eps", "must be a positive number");
    check(o.batch_size > 0, "batch-size", "must be positive");
    check(o.grad_accum > 0, "grad-accum", "must be positive");
    check(finite(o.max_grad_norm) && o.max_grad_norm >= 0, "max-grad-norm", "must be >= 0 (0: no clipping)");
    check(finite(o.ema_decay) && o.ema_decay >= 0 && o.ema_decay < 1, "ema-decay", "must be in [0, 1) (0: no EMA)");
    check(o.epochs > 0, "epochs", "must be positive");
    check(o.max_steps >= 0, "max-steps", "must be >= 0");
    check(finite(o.max_minutes) && o.max_minutes >= 0, "max-minutes", "must be >= 0");
    check(finite(o.ortho_lambda) && o.ortho_lambda >= 0, "ortho-lambda", "must be >= 0");
    check(o.eval_every >= 0, "eval-every", "must be >= 0");
    check(o.eval_batch_size >= 0, "eval-batch-size", "must be >= 0");
    check(o.save_every >= 0, "save-every", "must be >= 0");
    check(o.log_every > 0, "log-every", "must be positive");
    check(finite(o.val_split) && o.val_split >= 0, "val-split", "must be >= 0");
    check(o.data_options.max_length > 0, "max-length", "must be positive");
    check(o.max_train_examples >= 0, "max-train-examples", "must be >= 0");
    check(o.max_eval_examples >= 0, "max-eval-examples", "must be >= 0");
    check(finite(o.mask_prob) && o.mask_prob > 0 && o.mask_prob < 1, "mask-prob", "must be in (0, 1)");
    check(o.preset == "seed" || o.preset == "paper" || (o.preset == "peft" && o.task == "dreambooth"), "preset",
          o.task == "dreambooth" ? "must be seed, paper or peft" : "must be seed or paper");
    check(o.resolution >= 0, "resolution", "must be >= 0 (0: the model's own)");
    check(finite(o.caption_dropout) && o.caption_dropout >= 0 && o.caption_dropout < 1, "caption-dropout", "must be in [0, 1)");
    check(o.num_class_images >= 0, "num-class-images", "must be >= 0");
    check(finite(o.prior_loss_weight) && o.prior_loss_weight >= 0, "prior-loss-weight", "must be >= 0 (0: no prior preservation)");
    check(o.validation_images > 0 && o.validation_images <= 64, "validation-images", "must be in [1, 64]");
    if (o.trains_adapters()) o.adapter.validate();
}

json to_json(const TrainOptions& o) {
    json j;
    j["task"] = o.task;
    j["model"] = o.model;
    j["out"] = o.out;
    j["device"] = o.device;
    j["dtype"] = train_dtype_name(o.dtype);
    j["method"] = o.method;
    if (o.trains_adapters()) {
        j["adapter"] = json::parse(adapter_config_json(o.adapter));
        if (o.method == "hra") j["strategy"] = hra_strategy_name(o.strategy);
    }
    j["lr"] = o.lr;
    j["schedule"] = schedule_name(o.schedule);
    j["warmup_steps"] = o.warmup_steps;
    j["warmup_ratio"] = o.warmup_ratio;
    j["weight_decay"] = o.weight_decay;
    j["adam_beta1"] = o.adam_beta1;
    j["adam_beta2"] = o.adam_beta2;
    j["adam_eps"] = o.adam_eps;
    j["batch_size"] = o.batch_size;
    j["grad_accum"] = o.grad_accum;
    j["max_grad_norm"] = o.max_grad_norm;
    j["ema_decay"] = o.ema_decay;
    j["epochs"] = o.epochs;
    j["max_steps"] = o.max_steps;
    j["max_minutes"] = o.max_minutes;
    j["ortho_lambda"] = o.ortho_lambda;
    j["ortho_form"] = o.ortho_form == core::PenaltyForm::Squared ? "squared" : "frobenius";
    j["seed"] = o.seed;
    j["shuffle"] = o.shuffle;
    j["grad_checkpoint"] = o.grad_checkpoint;
    j["eval_every"] = o.eval_every;
    j["eval_batch_size"] = o.eval_batch_size;
    j["save_every"] = o.save_every;
    j["save_total_limit"] = o.save_total_limit;
    j["log_every"] = o.log_every;
    j["max_length"] = o.data_options.max_length;
    j["bad_records"] = io::on_bad_record_name(o.data_options.on_bad_record);
    if (!o.command_line.empty()) j["command_line"] = o.command_line;
    return j;
}

}  // namespace hra
