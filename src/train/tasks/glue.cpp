#include "train/tasks/glue.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "adapters/method.h"
#include "adapters/peft_model.h"
#include "common/error.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "eval/glue_model.h"
#include "models/deberta_loader.h"
#include "models/model_weights.h"
#include "text/pair_encoder.h"
#include "train/task.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* const kGlueTargetRegex =
    ".*layer\\.\\d+\\.(attention\\.self\\.(query|key|value)_proj|attention\\.output\\.dense|intermediate\\.dense|output\\.dense)";

namespace {

class GlueTask : public TrainTask {
public:
    explicit GlueTask(TrainOptions o) : o_(std::move(o)), task_(glue::task(o_.task.substr(5))) {}

    void setup(const std::string& resume_dir) override {
        train_file_ = !o_.train_file.empty() ? o_.train_file : glue::train_path(task_, o_.data_dir);
        dev_file_ = !o_.dev_file.empty() ? o_.dev_file : glue::dev_path(task_, o_.data_dir);
        if (o_.train_file.empty() && o_.data_dir.empty())
            throw Error("--task " + o_.task + ": give --data-dir (the glue_data folder) or --train-file/--dev-file");
        const int64_t max_length = o_.data_options.max_length;
        auto train_ex = glue::limited(glue::read_tsv(task_, train_file_, o_.data_options.on_bad_record), o_.max_train_examples);
        // The dev file always fails on a bad row: a silently smaller dev set changes the score.
        auto dev_ex = glue::limited(glue::read_tsv(task_, dev_file_, io::OnBadRecord::Fail), o_.max_eval_examples);
        encoder_ = std::make_unique<PairEncoder>(PairEncoder::load(o_.model));
        train_ = glue::encode_all(*encoder_, train_ex, max_length);
        dev_ = glue::encode_all(*encoder_, dev_ex, max_length);

        loaded_ = load_deberta(o_.model, glue::classifier_load_options(task_, o_.dtype, o_.seed));
        auto& model = *loaded_.model;
        if (o_.method == "head") {
            for (auto* m : {model.pooler_dense.get(), model.classifier.get()})
                for (auto& p : m->parameters()) p.set_requires_grad(true), params_.push_back(p);
            if (!resume_dir.empty()) {
                const std::string file = (std::filesystem::path(resume_dir) / "head.safetensors").string();
                auto f = io::WeightStore::open(file);
                std::map<std::string, torch::Tensor> head;
                for (auto& [name, p] : unique_named_parameters(model))
                    if (name.rfind("pooler.", 0) == 0 || name.rfind("classifier.", 0) == 0) head[name] = p;
                load_named_weights(head, f);
            }
        } else {
            cfg_ = o_.adapter;
            if (!cfg_.target_modules.is_set()) cfg_.target_modules = ModuleSelector::regex(kGlueTargetRegex);
            if (o_.adapters_only && cfg_.modules_to_save)
                throw Error("--adapters-only trains the adapters alone; it contradicts --modules-to-save");
            if (!o_.adapters_only && !cfg_.modules_to_save) cfg_.modules_to_save = std::vector<std::string>{"pooler", "classifier"};
            if (o_.adapters_only) cfg_.modules_to_save.reset();
            cfg_.task_type = "SEQ_CLS";
            cfg_.inference_mode = false;
            if (!cfg_.base_model_name_or_path) cfg_.base_model_name_or_path = o_.model;
            peft_ = std::make_unique<PeftModel>(loaded_.model.ptr(), glue::classifier_inject_options());
            if (!resume_dir.empty()) peft_->load_adapter(resume_dir, "default", /*trainable=*/true);
            else peft_->add_adapter("default", cfg_);
            peft_->set_strategy(o_.strategy);
            params_ = peft_->trainable_parameters();
        }
        for (auto& [name, p] : unique_named_parameters(model)) {
            total_params_ += p.numel();
            if (name.find(".adapters.") != std::string::npos) adapter_params_ += p.numel();
        }
        for (auto& p : params_) trainable_params_ += p.numel();
        model.to(c10::Device(o_.device));
        if (o_.method == "head") {
            params_.clear();
            for (auto* m : {model.pooler_dense.get(), model.classifier.get()})
                for (auto& p : m->parameters()) params_.push_back(p);
        } else {
            params_ = peft_->trainable_parameters();
        }
    }
    int64_t train_size() const override { return static_cast<int64_t>(train_.ids.size()); }
    int64_t eval_size() const override { return static_cast<int64_t>(dev_.ids.size()); }
    std::vector<at::Tensor> trainable_parameters() override { return params_; }

    BatchLoss loss(const std::vector<int64_t>& rows) override {
        const c10::Device d(o_.device);
        auto b = glue::collate(train_, rows, encoder_->pad_id());
        std::vector<double> labels;
        for (auto r : rows) labels.push_back(train_.labels[static_cast<size_t>(r)]);
        auto target = torch::tensor(labels, torch::kDouble).to(d);
        auto out = loaded_.model->forward(b.ids.to(d), b.mask.to(d), b.types.to(d));
        BatchLoss l;
        l.count = static_cast<double>(rows.size());
        auto logits = out.logits.scalar_type() == torch::kDouble ? out.logits : out.logits.to(torch::kFloat);
        l.sum = deberta_classification_loss(loaded_.config, logits, target) * l.count;
        l.tokens = b.tokens;
        l.seq_len = b.ids.size(1);
        return l;
    }
    at::Tensor orthogonality_penalty(core::PenaltyForm form) const override {
        return peft_ ? peft_->orthogonality_penalty(form) : at::Tensor();
    }
    json evaluate() override {
        const int64_t bs = o_.eval_batch_size > 0 ? o_.eval_batch_size : o_.batch_size;
        return glue::metrics(task_, glue::predict_encoded(*loaded_.model, dev_, encoder_->pad_id(), bs, o_.device), dev_.labels);
    }
    std::string main_metric() const override { return glue::main_metric(task_); }
    bool higher_is_better() const override { return true; }
    void save(const std::string& dir) const override {
        if (peft_) {
            peft_->save_adapter(dir, "default");
            return;
        }
        io::NamedTensors head;
        for (auto& [name, p] : unique_named_parameters(*loaded_.model))
            if (name.rfind("pooler.", 0) == 0 || name.rfind("classifier.", 0) == 0) head.emplace_back(name, p.detach().cpu());
        io::save_safetensors((std::filesystem::path(dir) / "head.safetensors").string(), head);
    }
    void set_training(bool on) override { loaded_.model->train(on); }
    std::string summary() const override {
        return o_.method + " on " + task_.name + ": adapter params " +
               std::to_string(adapter_params_) + ", trainable params " + std::to_string(trainable_params_) +
               ", all params " + std::to_string(total_params_);
    }
    json describe() const override {
        json j = {{"glue_task", task_.name},
                  {"preset", o_.preset},
                  {"adapters_only", o_.adapters_only},
                  {"train_file", train_file_},
                  {"dev_file", dev_file_},
                  {"train_examples", train_.ids.size()},
                  {"dev_examples", dev_.ids.size()},
                  {"adapter_params", adapter_params_},
                  {"trainable_params", trainable_params_},
                  {"total_params", total_params_}};
        if (peft_) j["adapter"] = json::parse(adapter_config_json(cfg_));
        return j;
    }

private:
    TrainOptions o_;
    glue::Task task_;
    std::string train_file_, dev_file_;
    std::unique_ptr<PairEncoder> encoder_;
    glue::Encoded train_, dev_;
    LoadedDeberta loaded_;
    AdapterConfig cfg_;
    std::unique_ptr<PeftModel> peft_;
    std::vector<torch::Tensor> params_;
    int64_t adapter_params_ = 0, trainable_params_ = 0, total_params_ = 0;
};

}  // namespace

void glue_task_defaults(TrainOptions& o, const std::set<std::string>& given) {
    const auto preset = glue_preset(glue::task(o.task.substr(5)), given.count("preset") ? o.preset : "seed");
    if (!given.count("lr")) o.lr = preset.lr;
    if (!given.count("epochs")) o.epochs = preset.epochs;
    if (!given.count("warmup-steps") && !given.count("warmup-ratio")) o.warmup_steps = preset.warmup_steps;
    if (!given.count("max-length")) o.data_options.max_length = preset.max_length;
    if (!given.count("batch-size")) o.batch_size = 32;
    if (!given.count("eval-batch-size")) o.eval_batch_size = 64;
    if (!given.count("weight-decay")) o.weight_decay = 0.01;
    if (!given.count("adam-eps")) o.adam_eps = 1e-6;
}

std::vector<TaskInfo> glue_tasks() {
    std::vector<TaskInfo> out;
    for (const auto& name : glue::task_names()) {
        TaskInfo t;
        t.name = "glue-" + name;
        t.help = "GLUE " + name + ": a DeBERTa-v2/v3 classifier (HRA, LoRA or head), dev metrics every epoch, best kept";
        t.options = {"data-dir", "train-file", "dev-file", "preset", "adapters-only", "max-train-examples",
                     "max-eval-examples", "max-length"};
        t.methods = adapter_method_names();
        t.methods.push_back("head");
        t.defaults = [](TrainOptions& o, const std::set<std::string>& given) { glue_task_defaults(o, given); };
        t.make = [](const TrainOptions& o) { return std::make_unique<GlueTask>(o); };
        out.push_back(std::move(t));
    }
    return out;
}

}  // namespace hra
