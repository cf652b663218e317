#include "train/glue_trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "data/dataset.h"
#include "io/atomic_file.h"
#include "io/output_folder.h"
#include "models/deberta_loader.h"
#include "models/llama.h"
#include "models/loader.h"
#include "text/pair_encoder.h"
#include "train/optim.h"

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

// ids, attention mask and token types of `rows`, right-padded.
struct Batch {
    torch::Tensor ids, mask, types;
};

Batch collate(const Encoded& data, const std::vector<int64_t>& rows, int64_t pad) {
    size_t len = 0;
    for (auto r : rows) len = std::max(len, data.ids[static_cast<size_t>(r)].size());
    const int64_t b = static_cast<int64_t>(rows.size());
    auto ids = torch::full({b, static_cast<int64_t>(len)}, pad, torch::kLong);
    auto mask = torch::zeros({b, static_cast<int64_t>(len)}, torch::kLong);
    auto types = torch::zeros({b, static_cast<int64_t>(len)}, torch::kLong);
    auto ia = ids.accessor<int64_t, 2>(), ma = mask.accessor<int64_t, 2>(), ta = types.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
        const auto row = static_cast<size_t>(rows[static_cast<size_t>(i)]);
        const auto& v = data.ids[row];
        for (size_t t = 0; t < v.size(); ++t) {
            ia[i][static_cast<int64_t>(t)] = v[t];
            ma[i][static_cast<int64_t>(t)] = 1;
            ta[i][static_cast<int64_t>(t)] = data.types[row][t];
        }
    }
    return {ids, mask, types};
}

std::vector<double> predict_encoded(DebertaForSequenceClassificationImpl& model, const Encoded& data, int64_t pad,
                                    int64_t batch_size) {
    torch::NoGradGuard ng;
    const bool was_training = model.is_training();
    model.eval();
    std::vector<double> out;
    const int64_t n = static_cast<int64_t>(data.ids.size());
    for (int64_t start = 0; start < n; start += batch_size) {
        std::vector<int64_t> rows;
        for (int64_t i = start; i < std::min(n, start + batch_size); ++i) rows.push_back(i);
        auto batch = collate(data, rows, pad);
        auto logits = model.forward(batch.ids, batch.mask, batch.types).logits.to(torch::kDouble);
        auto pred = logits.size(1) == 1 ? logits.view({-1}) : logits.argmax(1).to(torch::kDouble);
        auto acc = pred.accessor<double, 1>();
        for (int64_t i = 0; i < acc.size(0); ++i) out.push_back(acc[i]);
    }
    model.train(was_training);
    return out;
}

double score_of(const json& metrics, const std::string& key) {
    return metrics.contains(key) && metrics[key].is_number() ? metrics[key].get<double>() : -1e30;
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

GlueTrainResult train_glue(const GlueTrainOptions& o) {
    if (o.model.empty() || o.out.empty()) throw Error("train --task glue-*: needs --model and --out");
    if (o.method != "hra" && o.method != "lora" && o.method != "head")
        throw Error("method must be hra, lora or head, got '" + o.method + "'");
    const auto task = glue::task(o.task);
    const auto preset = glue_preset(task, o.preset);
    const double lr = o.lr > 0 ? o.lr : preset.lr;
    const int64_t epochs = o.epochs > 0 ? o.epochs : preset.epochs;
    const int64_t warmup = o.warmup_steps >= 0 ? o.warmup_steps : preset.warmup_steps;
    const int64_t max_length = o.max_length > 0 ? o.max_length : preset.max_length;
    if (o.batch_size <= 0 || lr <= 0) throw Error("batch size and lr must be positive");
    const std::string train_file = !o.train_file.empty() ? o.train_file : glue::train_path(task, o.data_dir);
    const std::string dev_file = !o.dev_file.empty() ? o.dev_file : glue::dev_path(task, o.data_dir);
    if (o.train_file.empty() && o.data_dir.empty()) throw Error("give --data-dir (the glue_data folder) or --train-file/--dev-file");
    if (fs::exists(o.out) && !fs::is_empty(o.out) && !o.overwrite)
        throw Error("run folder exists and is not empty (use --force to start over)", {o.out});
    io::make_dirs(o.out);

    auto train_ex = limited(glue::read_tsv(task, train_file), o.max_train_examples);
    auto dev_ex = limited(glue::read_tsv(task, dev_file), o.max_eval_examples);
    const auto encoder = PairEncoder::load(o.model);
    const auto train_data = encode_all(encoder, train_ex, max_length);
    const auto dev_data = encode_all(encoder, dev_ex, max_length);

    torch::manual_seed(o.seed);
    auto loaded = load_deberta(o.model, load_options(task, o.dtype, o.seed));
    auto& model = *loaded.model;
    std::unique_ptr<PeftModel> peft;
    std::vector<torch::Tensor> params;
    AdapterConfig cfg = o.adapter;
    if (o.method == "head") {
        for (auto* m : {model.pooler_dense.get(), model.classifier.get()})
            for (auto& p : m->parameters()) p.set_requires_grad(true), params.push_back(p);
    } else {
        cfg.method = o.method == "lora" ? Method::Lora : Method::Hra;
        if (!cfg.target_modules.is_set()) cfg.target_modules = ModuleSelector::regex(kGlueTargetRegex);
        if (!o.adapters_only && !cfg.modules_to_save) cfg.modules_to_save = std::vector<std::string>{"pooler", "classifier"};
        if (o.adapters_only) cfg.modules_to_save.reset();
        cfg.task_type = "SEQ_CLS";
        cfg.inference_mode = false;
        peft = std::make_unique<PeftModel>(loaded.model.ptr(), deberta_inject());
        peft->add_adapter("default", cfg);
        peft->set_strategy(parse_strategy(o.strategy));
        params = peft->trainable_parameters();
    }
    GlueTrainResult result;
    result.main_metric = glue::main_metric(task);
    for (auto& [name, p] : unique_named_parameters(model)) {
        result.total_params += p.numel();
        if (name.find(".adapters.") != std::string::npos) result.adapter_params += p.numel();
    }
    for (auto& p : params) result.trainable_params += p.numel();
    if (!o.quiet)
        std::fprintf(stderr, "hra: %s on %s: adapter params %lld, trainable params %lld (with the head), all params %lld\n",
                     o.method.c_str(), task.name.c_str(), static_cast<long long>(result.adapter_params),
                     static_cast<long long>(result.trainable_params), static_cast<long long>(result.total_params));

    const int64_t n = static_cast<int64_t>(train_data.ids.size());
    const int64_t steps_per_epoch = (n + o.batch_size - 1) / o.batch_size;
    const int64_t total_steps = steps_per_epoch * epochs;
    AdamW opt(params, {0.9, 0.999, o.adam_eps, o.weight_decay});
    const auto schedule = parse_schedule(o.schedule);
    json config = {{"model", o.model},       {"task", task.name},        {"method", o.method},
                   {"preset", o.preset},     {"lr", lr},                 {"epochs", epochs},
                   {"warmup_steps", warmup}, {"max_length", max_length}, {"batch_size", o.batch_size},
                   {"weight_decay", o.weight_decay}, {"adam_eps", o.adam_eps}, {"max_grad_norm", o.max_grad_norm},
                   {"schedule", o.schedule}, {"seed", o.seed},           {"dtype", o.dtype},
                   {"adapters_only", o.adapters_only}, {"train_file", train_file}, {"dev_file", dev_file},
                   {"train_examples", n},    {"dev_examples", dev_data.ids.size()}, {"ortho_lambda", o.ortho_lambda}};
    if (peft) config["adapter"] = json::parse(adapter_config_json(cfg));
    io::write_file_atomically((fs::path(o.out) / "config.json").string(), config.dump(2) + "\n");
    const std::string metrics_path = (fs::path(o.out) / "metrics.jsonl").string();
    io::write_file_atomically(metrics_path, "");
    std::ofstream metrics_file(metrics_path, std::ios::app);
    result.best_dir = (fs::path(o.out) / "best").string();

    model.train();
    int64_t step = 0;
    result.best_score = -1e30;
    for (int64_t epoch = 0; epoch < epochs; ++epoch) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto order = epoch_order(n, o.seed, epoch, true);
        double loss_sum = 0;
        for (int64_t start = 0; start < n; start += o.batch_size) {
            std::vector<int64_t> rows(order.begin() + start, order.begin() + std::min(n, start + o.batch_size));
            auto batch = collate(train_data, rows, encoder.pad_id());
            std::vector<double> labels;
            for (auto r : rows) labels.push_back(train_data.labels[static_cast<size_t>(r)]);
            auto target = torch::tensor(labels, torch::kDouble);
            auto out = model.forward(batch.ids, batch.mask, batch.types);
            auto loss = deberta_classification_loss(loaded.config, out.logits, target);
            if (o.ortho_lambda > 0 && peft) loss = loss + o.ortho_lambda * peft->orthogonality_penalty();
            const double v = loss.item<double>();
            if (!std::isfinite(v))
                throw Error("non-finite loss at step " + std::to_string(step + 1) + "; stopping (best/ kept as it was)", {o.out});
            loss.backward();
            if (o.max_grad_norm > 0) clip_grad_norm(params, o.max_grad_norm);
            opt.step(learning_rate(schedule, lr, step, total_steps, warmup));
            opt.zero_grad();
            ++step;
            loss_sum += v * static_cast<double>(rows.size());
        }
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        GlueEpoch e;
        e.epoch = epoch + 1;
        e.train_loss = loss_sum / static_cast<double>(n);
        e.seconds = secs;
        e.examples_per_s = static_cast<double>(n) / secs;
        e.metrics = glue::metrics(task, predict_encoded(model, dev_data, encoder.pad_id(), o.eval_batch_size), dev_data.labels);
        const double score = score_of(e.metrics, result.main_metric);
        const bool best = score > result.best_score;
        if (best) {
            result.best_score = score;
            result.best_epoch = e.epoch;
            io::OutputFolder folder(result.best_dir, /*overwrite=*/true);
            if (peft) {
                peft->save_adapter(folder.temp_path(), "default");
            } else {
                io::NamedTensors head;
                for (auto& [name, p] : unique_named_parameters(model))
                    if (name.rfind("pooler.", 0) == 0 || name.rfind("classifier.", 0) == 0) head.emplace_back(name, p);
                io::save_safetensors(folder.file("head.safetensors"), head);
            }
            json info = {{"epoch", e.epoch}, {"metrics", e.metrics}};
            io::write_file_atomically(folder.file("glue_result.json"), info.dump(2) + "\n");
            folder.commit();
        }
        json line = {{"epoch", e.epoch}, {"step", step}, {"train_loss", e.train_loss}, {"seconds", secs},
                     {"examples_per_s", e.examples_per_s}, {"dev", e.metrics}, {"best", best}};
        metrics_file << line.dump() << "\n" << std::flush;
        if (!o.quiet)
            std::fprintf(stderr, "epoch %lld/%lld | train loss %.4f | dev %s %.4f%s | %.1f s\n", static_cast<long long>(e.epoch),
                         static_cast<long long>(epochs), e.train_loss, result.main_metric.c_str(), score,
                         best ? " (best)" : "", secs);
        result.epochs.push_back(std::move(e));
    }
    json per_epoch = json::array();
    for (const auto& e : result.epochs)
        per_epoch.push_back({{"epoch", e.epoch}, {"train_loss", e.train_loss}, {"dev", e.metrics}, {"seconds", e.seconds}});
    result.results = {{"task", task.name},
                      {"method", o.method},
                      {"main_metric", result.main_metric},
                      {"best_epoch", result.best_epoch},
                      {"best", result.epochs.at(static_cast<size_t>(result.best_epoch - 1)).metrics},
                      {"adapter_params", result.adapter_params},
                      {"trainable_params", result.trainable_params},
                      {"total_params", result.total_params},
                      {"epochs", per_epoch},
                      {"config", config}};
    io::write_file_atomically((fs::path(o.out) / "results.json").string(), result.results.dump(2) + "\n");
    return result;
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
