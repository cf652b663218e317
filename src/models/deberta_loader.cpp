#include "models/deberta_loader.h"

#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "models/model_weights.h"

namespace hra {

InjectOptions deberta_inject_options() {
    InjectOptions o;
    o.model_type = "deberta-v2";
    o.default_targets = {"query_proj", "value_proj"};  // PEFT's for deberta-v2
    return o;
}

namespace {

DebertaConfig config_for(const std::string& dir, const DebertaLoadOptions& o) {
    auto c = read_deberta_config(dir);
    if (o.num_labels) {
        if (*o.num_labels < 1) throw Error("num_labels must be at least 1", {dir});
        if (static_cast<int64_t>(c.id2label.size()) != *o.num_labels) c.id2label.clear();
        c.num_labels = *o.num_labels;
    }
    if (!o.problem_type.empty()) c.problem_type = o.problem_type;
    return c;
}

// Loads `store` into `model`; `head` names the prefixes this model's head owns
// (initialised when absent); `other_heads` are skipped when present.
std::vector<std::string> load_into(torch::nn::Module& model, const DebertaConfig& c, const std::string& dir,
                                   const std::vector<std::string>& head, const std::vector<std::string>& other_heads,
                                   uint64_t seed) {
    auto store = io::WeightStore::open(dir);
    auto params = base_parameters(model);
    bool bare = !store.contains("deberta.embeddings.word_embeddings.weight") &&
                store.contains("embeddings.word_embeddings.weight");
    std::map<std::string, torch::Tensor> by_file_name;
    for (auto& [name, p] : params)
        by_file_name[bare && starts_with(name, "deberta.") ? name.substr(8) : name] = p;
    auto is_head = [&](const std::string& k) {
        for (const auto& h : head)
            if (starts_with(k, h)) return true;
        return false;
    };
    auto report = load_named_weights(
        by_file_name, store,
        [&](const std::string& k) {
            if (ends_with(k, "position_ids") || starts_with(k, "cls.predictions.decoder.")) return true;  // tied decoder
            for (const auto& p : other_heads)
                if (starts_with(k, p)) return true;
            return false;
        },
        is_head);
    if (!report.ignored.empty()) {
        std::string msg = store.path() + ": ignored " + std::to_string(report.ignored.size()) + " tensors not used by this model:";
        for (const auto& k : report.ignored) msg += " " + k;
        warn_once(msg);
    }
    if (!report.not_in_file.empty()) {
        auto gen = at::detail::createCPUGenerator(seed);
        torch::NoGradGuard ng;
        for (const auto& k : report.not_in_file) {
            auto& p = by_file_name.at(k);
            if (k.find("LayerNorm") != std::string::npos) ends_with(k, ".bias") ? p.zero_() : p.fill_(1);
            else if (ends_with(k, ".bias")) p.zero_();
            else p.normal_(0, c.initializer_range, gen);
        }
        std::string msg = store.path() + ": " + std::to_string(report.not_in_file.size()) +
                          " head tensors are not in the checkpoint and were initialised (normal(0, " +
                          c10::str(c.initializer_range) + "), seed " + std::to_string(seed) + "):";
        for (const auto& k : report.not_in_file) msg += " " + k;
        warn_once(msg);
    }
    return report.not_in_file;
}

}  // namespace

LoadedDeberta load_deberta(const std::string& dir, const DebertaLoadOptions& o) {
    LoadedDeberta out;
    out.dir = dir;
    out.config = config_for(dir, o);
    {
        SkipInitGuard skip;
        out.model = DebertaForSequenceClassification(out.config);
    }
    out.model->to(o.dtype);  // before loading, so that nothing is rounded through float32
    out.initialized = load_into(*out.model, out.config, dir, {"pooler.", "classifier."},
                                {"lm_predictions.", "mask_predictions.", "cls."}, o.init_seed);
    out.model->to(torch::Device(o.device));
    out.model->eval();
    for (auto& p : out.model->parameters()) p.set_requires_grad(false);
    return out;
}

}  // namespace hra
