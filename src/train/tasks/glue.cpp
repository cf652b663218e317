#include "train/tasks/glue.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/deberta_loader.h"
#include "models/llama.h"
#include "models/loader.h"
#include "text/pair_encoder.h"
#include "train/task.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

const char* const kGlueTargetRegex =
    ".*layer\\.\\d+\\.(attention\\.self\\.(query|key|value)_proj|attention\\.output\\.dense|intermediate\\.dense|output\\.dense)";

GluePreset glue_preset(const glue::Task& t, const std::string& preset) {
    // lr, epochs, warmup, max_len of the seed's scripts (HRA.md §3).
    struct Row {
        const char* task;
        GluePreset seed;
        double paper_lr;
        int64_t paper_epochs;
    };
    static const Row rows[] = {
        {"mnli", {9e-4, 8, 1000, 256}, 1e-2, 8},   {"sst2", {1e-3, 16, 500, 128}, 3e-3, 10},
        {"cola", {8e-4, 28, 100, 64}, 9e-3, 34},   {"qqp", {9e-4, 10, 1000, 320}, 8e-3, 12},
        {"qnli", {1e-3, 12, 500, 512}, 1e-2, 12},  {"rte", {1e-3, 20, 50, 320}, 5e-3, 11},
        {"mrpc", {2e-3, 55, 50, 320}, 6e-3, 60},   {"stsb", {3e-3, 43, 50, 128}, 5e-3, 39},
    };
    std::string name = t.name == "mnli-mm" ? "mnli" : t.name == "wnli" ? "rte" : t.name;
    for (const auto& r : rows) {
        if (name != r.task) continue;
        if (preset == "seed") return r.seed;
        if (preset == "paper") return {r.paper_lr, r.paper_epochs, r.seed.warmup_steps, r.seed.max_length};
        throw Error("unknown preset '" + preset + "' (expected seed or paper)");
    }
    throw Error("no preset for task " + t.name);
}

namespace {

struct Encoded {
    std::vector<std::vector<int64_t>> ids, types;
    std::vector<double> labels;
};

Encoded encode_all(const PairEncoder& enc, const std::vector<glue::Example>& ex, int64_t max_length) {
    Encoded out;
    out.ids.reserve(ex.size());
    for (const auto& e : ex) {
        auto x = enc.encode(e.a, e.b, max_length);
        out.ids.push_back(std::move(x.ids));
        out.types.push_back(std::move(x.token_type_ids));
        out.labels.push_back(e.label);
    }
    return out;
}

PaddedBatch collate(const Encoded& data, const std::vector<int64_t>& rows, int64_t pad) {
    TokenRows ids, types;
    for (auto r : rows) {
        ids.push_back(&data.ids[static_cast<size_t>(r)]);
        types.push_back(&data.types[static_cast<size_t>(r)]);
    }
    PadOptions po;
    po.pad_id = pad;
    return pad_batch(ids, po, {}, types);
}

std::vector<double> predict_encoded(DebertaForSequenceClassificationImpl& model, const Encoded& data, int64_t pad,
                                    int64_t batch_size, const std::string& device = "cpu") {
    const c10::Device d(device);
    torch::NoGradGuard ng;
    const bool was_training = model.is_training();
    model.eval();
    std::vector<double> out;
    const int64_t n = static_cast<int64_t>(data.ids.size());
    for (int64_t start = 0; start < n; start += batch_size) {
        std::vector<int64_t> rows;
        for (int64_t i = start; i < std::min(n, start + batch_size); ++i) rows.push_back(i);
        auto batch = collate(data, rows, pad);
        auto logits = model.forward(batch.ids.to(d), batch.mask.to(d), batch.types.to(d)).logits.to(torch::kDouble).cpu();
        auto pred = logits.size(1) == 1 ? logits.view({-1}) : logits.argmax(1).to(torch::kDouble);
        auto acc = pred.accessor<double, 1>();
        for (int64_t i = 0; i < acc.size(0); ++i) out.push_back(acc[i]);
    }
    model.train(was_training);
    return out;
}

DebertaLoadOptions load_options(const glue::Task& t, const std::string& dtype, uint64_t seed) {
    DebertaLoadOptions lo;
    lo.dtype = parse_dtype(dtype);
    lo.num_labels = t.num_labels();
    lo.problem_type = t.regression() ? "regression" : "single_label_classification";
    lo.init_seed = seed;
    return lo;
}

// DeBERTa classifiers: the classifier is the output layer all-linear leaves out.
InjectOptions deberta_inject() {
    InjectOptions inject;
    inject.model_type = "deberta-v2";
    inject.output_layers = {"classifier"};
    return inject;
}

std::vector<glue::Example> limited(std::vector<glue::Example> v, int64_t limit) {
    if (limit > 0 && static_cast<int64_t>(v.size()) > limit) v.resize(static_cast<size_t>(limit));
    return v;
}

}  // namespace

std::vector<double> predict_glue(DebertaForSequenceClassificationImpl& model, const PairEncoder& encoder,
                                 const std::vector<glue::Example>& examples, int64_t max_length, int64_t batch_size) {
    return predict_encoded(model, encode_all(encoder, examples, max_length), encoder.pad_id(), batch_size);
}

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
        auto train_ex = limited(glue::read_tsv(task_, train_file_), o_.max_train_examples);
        auto dev_ex = limited(glue::read_tsv(task_, dev_file_), o_.max_eval_examples);
        encoder_ = std::make_unique<PairEncoder>(PairEncoder::load(o_.model));
        train_ = encode_all(*encoder_, train_ex, max_length);
        dev_ = encode_all(*encoder_, dev_ex, max_length);

        loaded_ = load_deberta(o_.model, load_options(task_, train_dtype_name(o_.dtype), o_.seed));
        auto& model = *loaded_.model;
        if (o_.method == TrainMethod::Head) {
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
            cfg_.method = o_.method == TrainMethod::Lora ? Method::Lora : Method::Hra;
            if (!cfg_.target_modules.is_set()) cfg_.target_modules = ModuleSelector::regex(kGlueTargetRegex);
            if (o_.adapters_only && cfg_.modules_to_save)
                throw Error("--adapters-only trains the adapters alone; it contradicts --modules-to-save");
            if (!o_.adapters_only && !cfg_.modules_to_save) cfg_.modules_to_save = std::vector<std::string>{"pooler", "classifier"};
            if (o_.adapters_only) cfg_.modules_to_save.reset();
            cfg_.task_type = "SEQ_CLS";
            cfg_.inference_mode = false;
            peft_ = std::make_unique<PeftModel>(loaded_.model.ptr(), deberta_inject());
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
        if (o_.method == TrainMethod::Head) {
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
        auto b = collate(train_, rows, encoder_->pad_id());
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
        return glue::metrics(task_, predict_encoded(*loaded_.model, dev_, encoder_->pad_id(), bs, o_.device), dev_.labels);
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
        return std::string(train_method_name(o_.method)) + " on " + task_.name + ": adapter params " +
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
    Encoded train_, dev_;
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
        t.methods = {TrainMethod::Hra, TrainMethod::Lora, TrainMethod::Head};
        t.defaults = [](TrainOptions& o, const std::set<std::string>& given) { glue_task_defaults(o, given); };
        t.make = [](const TrainOptions& o) { return std::make_unique<GlueTask>(o); };
        out.push_back(std::move(t));
    }
    return out;
}

json evaluate_glue(const std::string& model_dir, const std::vector<std::string>& adapters, const std::string& task_name,
                   const std::string& data_dir, const std::string& dev_file, int64_t max_length, int64_t limit,
                   const std::string& dtype, const std::string& output) {
    const auto task = glue::task(task_name);
    const std::string file = !dev_file.empty() ? dev_file : glue::dev_path(task, data_dir);
    if (dev_file.empty() && data_dir.empty()) throw Error("give --data-dir (the glue_data folder) or --data (a dev TSV)");
    auto examples = limited(glue::read_tsv(task, file), limit);
    auto loaded = load_deberta(model_dir, load_options(task, dtype, 0));
    std::unique_ptr<PeftModel> peft;
    if (!adapters.empty()) {
        peft = std::make_unique<PeftModel>(loaded.model.ptr(), deberta_inject());
        std::vector<std::string> names;
        for (size_t i = 0; i < adapters.size(); ++i) {
            names.push_back(i == 0 ? "default" : "adapter" + std::to_string(i));
            peft->load_adapter(adapters[i], names.back());
        }
        peft->set_active_adapters(names);
    } else if (!loaded.initialized.empty()) {
        throw Error("the model has no trained classification head; give --adapter (a run's best/ folder)", {model_dir});
    }
    const auto encoder = PairEncoder::load(model_dir);
    const int64_t len = max_length > 0 ? max_length : glue_preset(task, "seed").max_length;
    auto pred = predict_glue(*loaded.model, encoder, examples, len, 64);
    std::vector<double> gold;
    for (const auto& e : examples) gold.push_back(e.label);
    if (!output.empty()) {
        std::string lines;
        for (size_t i = 0; i < pred.size(); ++i) {
            json r = {{"prediction", task.regression() ? json(pred[i]) : json(std::llround(pred[i]))},
                      {"label", task.regression() ? json(gold[i]) : json(std::llround(gold[i]))}};
            lines += r.dump() + "\n";
        }
        io::write_file_atomically(output, lines);
    }
    return glue::metrics(task, pred, gold);
}

}  // namespace hra
