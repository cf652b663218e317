// Task mlm: masked-language-model training of a DeBERTa-v2/v3 encoder on
// text (one example per line), every parameter trained: 15% of the
// non-special tokens are predicted, of those 80% become [MASK], 10% a random
// token and 10% stay (BERT's recipe). The folder needs config.json and
// spm.model; weights come from model.safetensors or, with --from-scratch, a
// seeded normal(0, initializer_range) initialisation. Checkpoints are complete
// model folders.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "data/batch.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "models/deberta.h"
#include "models/deberta_config.h"
#include "models/model_weights.h"
#include "text/pair_encoder.h"
#include "train/task.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

class MlmTask : public TrainTask {
public:
    explicit MlmTask(TrainOptions o) : o_(std::move(o)) {}

    void setup(const std::string& resume_dir) override {
        if (o_.data.empty()) throw Error("--task mlm needs --data (a text file, one example per line)");
        encoder_ = std::make_unique<PairEncoder>(PairEncoder::load(o_.model));
        const std::string cfg_path = (fs::path(o_.model) / "config.json").string();
        cfg_ = parse_deberta_config(io::read_file(cfg_path), cfg_path);
        model_ = DebertaForMaskedLM(cfg_);
        if (!resume_dir.empty()) {
            load_named_weights(params_by_name(), io::WeightStore::open((fs::path(resume_dir) / "model.safetensors").string()));
        } else if (o_.from_scratch) {
            init_weights("");
        } else {
            // A checkpoint without the masked-LM head (a classifier's backbone) gets a fresh head.
            init_head();
            auto report = load_named_weights(
                params_by_name(), io::WeightStore::open(o_.model),
                [](const std::string& k) { return k.rfind("deberta.", 0) != 0 && k.rfind("cls.", 0) != 0; },
                [](const std::string& k) { return k.rfind("cls.", 0) == 0; });
            if (!report.not_in_file.empty())
                log_info(strprintf("hra: %zu masked-LM head tensors not in %s: initialised (seed %llu)",
                                   report.not_in_file.size(), o_.model.c_str(), static_cast<unsigned long long>(o_.seed)));
        }
        model_->to(o_.dtype);
        model_->to(c10::Device(o_.device));
        for (auto& p : model_->parameters()) p.set_requires_grad(true);

        auto lines = read_lines(o_.data);
        if (!o_.val_data.empty()) {
            val_ = encode(read_lines(o_.val_data));
            train_ = encode(lines);
        } else {
            train_ = encode(lines);
            if (o_.val_split > 0) {
                // The last share of a seeded permutation is held out.
                auto order = epoch_order(static_cast<int64_t>(train_.size()), o_.seed + 7919, 0, true);
                const auto n_val = static_cast<size_t>(o_.val_split < 1 ? o_.val_split * static_cast<double>(train_.size())
                                                                        : o_.val_split);
                if (n_val == 0 || n_val >= train_.size())
                    throw Error("--val-split leaves no training or no validation examples", {o_.data});
                std::vector<std::vector<int64_t>> t, v;
                for (size_t i = 0; i < order.size(); ++i)
                    (i < order.size() - n_val ? t : v).push_back(std::move(train_[static_cast<size_t>(order[i])]));
                train_ = std::move(t);
                val_ = std::move(v);
            }
        }
    }
    int64_t train_size() const override { return static_cast<int64_t>(train_.size()); }
    int64_t eval_size() const override { return static_cast<int64_t>(val_.size()); }
    std::vector<at::Tensor> trainable_parameters() override {
        std::vector<at::Tensor> out;
        for (auto& [name, p] : unique_named_parameters(*model_)) out.push_back(p);
        return out;
    }
    BatchLoss loss(const std::vector<int64_t>& rows) override { return masked_loss(train_, rows, nullptr); }

    json evaluate() override {
        double correct = 0;
        const auto t = evaluate_in_batches(o_, eval_size(), [&](const std::vector<int64_t>& rows, at::Generator* gen) {
            return masked_loss(val_, rows, gen, &correct);  // the same masks at every evaluation
        });
        return {{"loss", t.mean()}, {"accuracy", t.count > 0 ? correct / t.count : 0.0}, {"masked_tokens", static_cast<int64_t>(t.count)}};
    }

    void save(const std::string& dir) const override {
        io::NamedTensors weights;
        for (auto& [name, p] : unique_named_parameters(*model_)) weights.emplace_back(name, p.detach().cpu());
        io::save_safetensors((fs::path(dir) / "model.safetensors").string(), weights);
        for (const char* f : {"config.json", "spm.model"})
            if (fs::exists(fs::path(o_.model) / f))
                io::write_file_atomically((fs::path(dir) / f).string(), io::read_file((fs::path(o_.model) / f).string()));
    }
    void set_training(bool on) override { model_->train(on); }
    std::string summary() const override {
        int64_t n = 0;
        for (auto& [name, p] : unique_named_parameters(*model_)) n += p.numel();
        return "masked LM, every parameter trained: " + std::to_string(n) + (o_.from_scratch ? " (from scratch)" : "");
    }
    json describe() const override {
        return {{"data", o_.data}, {"val_data", o_.val_data}, {"val_split", o_.val_split}, {"mask_prob", o_.mask_prob},
                {"from_scratch", o_.from_scratch}, {"train_examples", train_.size()}, {"val_examples", val_.size()}};
    }

private:
    // normal(0, initializer_range) weights, zero biases, LayerNorms as built;
    // for the parameters whose names start with `prefix`.
    void init_weights(const std::string& prefix) {
        torch::NoGradGuard ng;
        for (auto& [name, p] : unique_named_parameters(*model_)) {
            if (name.rfind(prefix, 0) != 0 || name.find("LayerNorm") != std::string::npos) continue;
            if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) p.zero_();
            else p.normal_(0, cfg_.initializer_range);
        }
    }
    void init_head() { init_weights("cls."); }
    std::map<std::string, torch::Tensor> params_by_name() const {
        std::map<std::string, torch::Tensor> m;
        for (auto& [name, p] : unique_named_parameters(*model_)) m[name] = p;
        return m;
    }
    static std::vector<std::string> read_lines(const std::string& path) {
        std::istringstream in(io::read_file(path));  // bounded when `path` is a device or a pipe
        std::vector<std::string> out;
        for (std::string line; std::getline(in, line);)
            if (line.find_first_not_of(" \t\r") != std::string::npos) out.push_back(line);
        if (out.empty()) throw Error("no text lines", {path});
        return out;
    }
    std::vector<std::vector<int64_t>> encode(const std::vector<std::string>& lines) const {
        std::vector<std::vector<int64_t>> out;
        out.reserve(lines.size());
        for (const auto& l : lines) out.push_back(encoder_->encode(l, "", o_.data_options.max_length).ids);
        return out;
    }
    // Masks `rows` (with `gen`, else the global generator) and sums the
    // cross-entropy over the predicted positions.
    BatchLoss masked_loss(const std::vector<std::vector<int64_t>>& data, const std::vector<int64_t>& rows,
                          at::Generator* gen, double* correct = nullptr) {
        TokenRows ids;
        for (auto r : rows) ids.push_back(&data[static_cast<size_t>(r)]);
        PadOptions po;
        po.pad_id = encoder_->pad_id();
        auto b = pad_batch(ids, po);
        const int64_t vocab = cfg_.vocab_size;
        auto special = b.ids.eq(encoder_->cls_id()).logical_or(b.ids.eq(encoder_->sep_id())).logical_or(b.mask.eq(0));
        auto g = gen ? c10::optional<at::Generator>(*gen) : c10::nullopt;
        auto pick = at::rand(b.ids.sizes(), g, torch::kFloat).lt(o_.mask_prob).logical_and(special.logical_not());
        auto labels = torch::where(pick, b.ids, torch::full_like(b.ids, -100));
        auto r = at::rand(b.ids.sizes(), g, torch::kFloat);
        auto masked = pick.logical_and(r.lt(0.8));
        auto randomised = pick.logical_and(r.ge(0.8)).logical_and(r.lt(0.9));
        auto inputs = torch::where(masked, torch::full_like(b.ids, encoder_->mask_id()), b.ids);
        inputs = torch::where(randomised, at::randint(5, vocab, b.ids.sizes(), g, torch::kLong), inputs);
        const c10::Device d(o_.device);
        auto logits = model_->forward(inputs.to(d), b.mask.to(d)).logits.reshape({-1, vocab});
        if (logits.scalar_type() != torch::kDouble) logits = logits.to(torch::kFloat);
        auto target = labels.reshape({-1}).to(d);
        BatchLoss out;
        out.sum = torch::nn::functional::cross_entropy(
            logits, target, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
        out.count = static_cast<double>(target.ne(-100).sum().item<int64_t>());
        out.tokens = b.tokens;
        out.seq_len = b.ids.size(1);
        if (correct) *correct += static_cast<double>(logits.argmax(1).eq(target).logical_and(target.ne(-100)).sum().item<int64_t>());
        return out;
    }

    TrainOptions o_;
    DebertaConfig cfg_;
    DebertaForMaskedLM model_{nullptr};
    std::unique_ptr<PairEncoder> encoder_;
    std::vector<std::vector<int64_t>> train_, val_;
};

}  // namespace

std::vector<TaskInfo> mlm_tasks() {
    TaskInfo t;
    t.name = "mlm";
    t.help = "masked-LM training of a DeBERTa-v2/v3 encoder on text lines (every parameter; --from-scratch)";
    t.options = {"data", "val-data", "val-split", "max-length", "mask-prob", "from-scratch"};
    t.methods = {"full"};
    t.defaults = [](TrainOptions&, const std::set<std::string>&) {};
    t.make = [](const TrainOptions& o) { return std::make_unique<MlmTask>(o); };
    return {t};
}

}  // namespace hra
