// Task causal-lm: supervised fine-tuning of a LLaMA-family model with HRA or
// LoRA adapters on JSON / JSONL records (train/options.h's data fields), the
// loss on the response tokens, evaluation as validation loss and perplexity.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/method.h"
#include "adapters/peft_model.h"
#include "common/error.h"
#include "common/log.h"
#include "io/atomic_file.h"
#include "data/batch.h"
#include "models/llama_loader.h"
#include "text/tokenizer.h"
#include "train/task.h"

namespace hra {

namespace {

AdapterConfig adapter_config(const TrainOptions& o) {
    AdapterConfig cfg = o.adapter;
    cfg.inference_mode = false;
    if (!cfg.task_type) cfg.task_type = "CAUSAL_LM";
    if (!cfg.base_model_name_or_path) cfg.base_model_name_or_path = o.model;
    return cfg;
}

// hra renders chat data with a named template (it does not run Jinja); the model's own
// chat_template, when tokenizer_config.json has one, is reported with the named one it matches.
void report_chat_template(const std::string& model_dir, const std::string& used) {
    const auto path = std::filesystem::path(model_dir) / "tokenizer_config.json";
    if (!std::filesystem::is_regular_file(path)) return;
    const auto j = nlohmann::json::parse(io::read_file(path.string()), nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("chat_template") || !j["chat_template"].is_string()) return;
    const std::string match = chat_template_matching(j["chat_template"].get<std::string>());
    if (match.empty())
        log_warning(path.string() + " has a chat_template that matches none of llama2, llama3, chatml; training renders "
                    "chat records with --chat-template " + used);
    else if (match != used)
        log_warning(path.string() + "'s chat_template is " + match + "'s, and training renders chat records with "
                    "--chat-template " + used + "; pass --chat-template " + match + " to train in the model's own format");
    else
        log_info("hra: chat records rendered with --chat-template " + used + ", the format of " + path.string() + "'s chat_template");
}

class CausalLmTask : public TrainTask {
public:
    explicit CausalLmTask(TrainOptions o) : o_(std::move(o)) {}

    void setup(const std::string& resume_dir) override {
        if (o_.data.empty()) throw Error("--task causal-lm needs --data (JSON or JSONL records)");
        LoadOptions lo;
        lo.dtype = o_.dtype;
        base_ = load_llama(o_.model, lo);
        tokenizer_ = load_tokenizer(o_.model);
        if (tokenizer_->vocab_size() > base_.config.vocab_size)
            throw Error("the tokenizer has " + std::to_string(tokenizer_->vocab_size()) + " tokens and the model's embedding " +
                            std::to_string(base_.config.vocab_size) + " rows: ids beyond them would index past the embedding",
                        {o_.model});
        pad_ = base_.config.pad_token_id.value_or(tokenizer_->eos_id().value_or(0));
        const auto records = read_records(o_.data, o_.data_options);
        const bool chat = std::any_of(records.begin(), records.end(), [](const Rendered& r) {
            return std::any_of(r.segments.begin(), r.segments.end(), [](const auto& s) { return s.special; });
        });
        if (chat) report_chat_template(o_.model, o_.data_options.chat_template);
        // Tokenized data are cached in the run folder, keyed by records, tokenizer and options.
        const std::string cache = (std::filesystem::path(o_.out) / "cache").string();
        train_ = tokenize_records_cached(records, *tokenizer_, o_.data_options, o_.data, o_.model, cache);
        if (!o_.val_data.empty()) {
            // Validation data always fails on a bad record: a silently smaller set changes the metric.
            DataOptions val_options = o_.data_options;
            val_options.on_bad_record = io::OnBadRecord::Fail;
            val_ = tokenize_records_cached(read_records(o_.val_data, val_options), *tokenizer_, val_options, o_.val_data, o_.model,
                                           cache);
        } else if (o_.val_split > 0) {
            std::tie(train_, val_) = split_validation(std::move(train_), o_.val_split, o_.seed);
        }
        if (o_.data_options.packing) train_ = pack_examples(train_, o_.data_options.max_length);
        peft_ = std::make_unique<PeftModel>(base_.model.ptr(), llama_inject_options(base_.config.model_type));
        if (!resume_dir.empty()) peft_->load_adapter(resume_dir, "default", /*trainable=*/true);
        else peft_->add_adapter("default", adapter_config(o_));
        peft_->set_strategy(o_.strategy);
        base_.model->set_gradient_checkpointing(o_.grad_checkpoint);
        base_.model->to(c10::Device(o_.device));
    }
    int64_t train_size() const override { return static_cast<int64_t>(train_.size()); }
    int64_t eval_size() const override { return static_cast<int64_t>(val_.size()); }
    std::vector<at::Tensor> trainable_parameters() override { return peft_->trainable_parameters(); }

    BatchLoss loss(const std::vector<int64_t>& rows) override {
        auto b = batch(train_, rows);
        LlamaInputs in;
        in.input_ids = b.ids;
        in.attention_mask = b.mask;
        auto logits = base_.model->forward(in).logits;
        BatchLoss out;
        out.sum = token_loss_sum(logits, b.labels, out.count);
        out.tokens = b.tokens;
        out.seq_len = b.ids.size(1);
        return out;
    }

    at::Tensor orthogonality_penalty(core::PenaltyForm form) const override { return peft_->orthogonality_penalty(form); }

    nlohmann::json evaluate() override {
        torch::NoGradGuard ng;
        const int64_t bs = o_.eval_batch_size > 0 ? o_.eval_batch_size : o_.batch_size;
        double sum = 0, count = 0;
        for (int64_t start = 0; start < eval_size(); start += bs) {
            std::vector<int64_t> rows;
            for (int64_t i = start; i < std::min(eval_size(), start + bs); ++i) rows.push_back(i);
            auto b = batch(val_, rows);
            LlamaInputs in;
            in.input_ids = b.ids;
            in.attention_mask = b.mask;
            double c = 0;
            sum += token_loss_sum(base_.model->forward(in).logits, b.labels, c).item<double>();
            count += c;
        }
        const double loss = count > 0 ? sum / count : 0;
        return {{"loss", loss}, {"ppl", std::exp(loss)}, {"tokens", static_cast<int64_t>(count)}};
    }

    void save(const std::string& dir) const override { peft_->save_adapter(dir, "default"); }
    void set_training(bool on) override { base_.model->train(on); }

    // Matrix FLOPs per trained token: frozen weights take a forward (2N) and an
    // input-gradient backward (2N); attention 4·T·q_dim per layer forward, 3x
    // with backward; adapters 3x their forward cost.
    double flops_per_token(double seq_len) const override {
        double n = 0, adapters = 0;
        for (const auto& [name, layer] : peft_->adaptable_layers()) {
            n += static_cast<double>(layer->weight.numel());
            for (const auto& a : layer->adapter_names()) adapters += 3 * 2 * layer->adapter(a)->row_cost();
        }
        const auto& c = base_.config;
        const double attention = 3 * 4 * seq_len * static_cast<double>(c.q_dim()) * static_cast<double>(c.num_hidden_layers);
        return 4 * n + attention + adapters;
    }
    std::string summary() const override { return peft_->trainable_summary(); }
    nlohmann::json describe() const override {
        return {{"data", o_.data},
                {"val_data", o_.val_data},
                {"val_split", o_.val_split},
                {"format", o_.data_options.format},
                {"prompt_template", o_.data_options.prompt_template},
                {"chat_template", o_.data_options.chat_template},
                {"train_on_prompt", o_.data_options.train_on_prompt},
                {"packing", o_.data_options.packing},
                {"train_examples", train_.size()},
                {"val_examples", val_.size()}};
    }

private:
    PaddedBatch batch(const std::vector<Example>& data, const std::vector<int64_t>& rows) const {
        TokenRows ids, labels;
        for (auto r : rows) {
            ids.push_back(&data[static_cast<size_t>(r)].input_ids);
            labels.push_back(&data[static_cast<size_t>(r)].labels);
        }
        PadOptions po;
        po.pad_id = pad_;
        auto b = pad_batch(ids, po, labels);
        const c10::Device d(o_.device);
        if (!d.is_cpu()) {
            b.ids = b.ids.to(d);
            b.mask = b.mask.to(d);
            b.labels = b.labels.to(d);
        }
        return b;
    }
    // Σ of the next-token losses over the labelled positions (float32 or wider).
    static at::Tensor token_loss_sum(const at::Tensor& logits, const at::Tensor& labels, double& count) {
        const int64_t v = logits.size(-1);
        auto shifted = logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, v});
        if (shifted.scalar_type() != torch::kDouble) shifted = shifted.to(torch::kFloat);
        auto targets = labels.narrow(1, 1, labels.size(1) - 1).reshape({-1});
        count = static_cast<double>(targets.ne(-100).sum().item<int64_t>());
        return torch::nn::functional::cross_entropy(
            shifted, targets, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
    }

    TrainOptions o_;
    LoadedModel base_;
    std::shared_ptr<Tokenizer> tokenizer_;
    int64_t pad_ = 0;
    std::vector<Example> train_, val_;
    std::unique_ptr<PeftModel> peft_;
};

}  // namespace

std::vector<TaskInfo> causal_lm_tasks() {
    TaskInfo t;
    t.name = "causal-lm";
    t.help = "supervised fine-tuning of a LLaMA-family model on JSON/JSONL records (default)";
    t.options = {"data",          "val-data",     "val-split",     "format",       "prompt-field",
                 "response-field", "input-field", "text-field",    "messages-field", "prompt-template",
                 "chat-template", "train-on-prompt", "max-length", "packing"};
    t.methods = adapter_method_names();
    t.grad_checkpoint = true;
    t.defaults = [](TrainOptions&, const std::set<std::string>&) {};
    t.make = [](const TrainOptions& o) { return std::make_unique<CausalLmTask>(o); };
    return {t};
}

}  // namespace hra
