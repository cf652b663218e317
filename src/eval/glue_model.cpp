#include "eval/glue_model.h"

#include <cmath>

#include <torch/torch.h>

#include "common/error.h"
#include "io/atomic_file.h"

namespace hra {

using json = nlohmann::json;

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

namespace glue {

Encoded encode_all(const PairEncoder& enc, const std::vector<Example>& ex, int64_t max_length) {
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
                                    int64_t batch_size, const std::string& device) {
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

DebertaLoadOptions classifier_load_options(const Task& t, c10::ScalarType dtype, uint64_t seed) {
    DebertaLoadOptions lo;
    lo.dtype = dtype;
    lo.num_labels = t.num_labels();
    lo.problem_type = t.regression() ? "regression" : "single_label_classification";
    lo.init_seed = seed;
    return lo;
}

InjectOptions classifier_inject_options() {
    InjectOptions inject = deberta_inject_options();
    inject.output_layers = {"classifier"};
    return inject;
}

std::vector<Example> limited(std::vector<Example> v, int64_t limit) {
    if (limit > 0 && static_cast<int64_t>(v.size()) > limit) v.resize(static_cast<size_t>(limit));
    return v;
}

}  // namespace glue

std::vector<double> predict_glue(DebertaForSequenceClassificationImpl& model, const PairEncoder& encoder,
                                 const std::vector<glue::Example>& examples, int64_t max_length, int64_t batch_size) {
    return glue::predict_encoded(model, glue::encode_all(encoder, examples, max_length), encoder.pad_id(), batch_size);
}

json evaluate_glue(const GlueEvalOptions& o) {
    const auto task = glue::task(o.task.rfind("glue-", 0) == 0 ? o.task.substr(5) : o.task);
    if (o.dev_file.empty() && o.data_dir.empty()) throw Error("give --data-dir (the glue_data folder) or --data (a dev TSV)");
    const std::string file = !o.dev_file.empty() ? o.dev_file : glue::dev_path(task, o.data_dir);
    auto examples = glue::limited(glue::read_tsv(task, file, o.on_bad_record), o.limit);
    auto loaded = load_deberta(o.model, glue::classifier_load_options(task, o.dtype, 0));
    std::unique_ptr<PeftModel> peft;
    if (!o.adapters.empty()) {
        peft = std::make_unique<PeftModel>(loaded.model.ptr(), glue::classifier_inject_options());
        std::vector<std::string> names;
        for (size_t i = 0; i < o.adapters.size(); ++i) {
            names.push_back(i == 0 ? "default" : "adapter" + std::to_string(i));
            peft->load_adapter(o.adapters[i], names.back());
        }
        peft->set_active_adapters(names);
    } else if (!loaded.initialized.empty()) {
        throw Error("the model has no trained classification head; give --adapter (a run's best/ folder)", {o.model});
    }
    const auto encoder = PairEncoder::load(o.model);
    const int64_t len = o.max_length > 0 ? o.max_length : glue_preset(task, "seed").max_length;
    auto pred = predict_glue(*loaded.model, encoder, examples, len, o.batch_size);
    std::vector<double> gold;
    for (const auto& e : examples) gold.push_back(e.label);
    if (!o.output.empty()) {
        std::string lines;
        for (size_t i = 0; i < pred.size(); ++i) {
            json r = {{"prediction", task.regression() ? json(pred[i]) : json(std::llround(pred[i]))},
                      {"label", task.regression() ? json(gold[i]) : json(std::llround(gold[i]))}};
            lines += r.dump() + "\n";
        }
        io::write_file_atomically(o.output, lines);
    }
    return glue::metrics(task, pred, gold);
}

}  // namespace hra
