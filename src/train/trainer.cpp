#include "train/trainer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "core/householder.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/output_folder.h"
#include "models/loader.h"
#include "text/tokenizer.h"
#include "train/optim.h"
#include "train/plot.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::atomic<bool> g_sigint{false};
extern "C" void on_sigint(int) { g_sigint = true; }

struct SigintScope {
    struct sigaction old_ {};
    SigintScope() {
        g_sigint = false;
        struct sigaction sa {};
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_);
    }
    ~SigintScope() { sigaction(SIGINT, &old_, nullptr); }
};

struct Batch {
    torch::Tensor ids, mask, labels;
    int64_t tokens = 0;  // non-padding tokens
};

Batch collate(const std::vector<Example>& data, const std::vector<int64_t>& rows, int64_t pad) {
    int64_t len = 0;
    for (auto r : rows) len = std::max<int64_t>(len, static_cast<int64_t>(data[static_cast<size_t>(r)].input_ids.size()));
    const int64_t b = static_cast<int64_t>(rows.size());
    Batch out;
    out.ids = torch::full({b, len}, pad, torch::kLong);
    out.mask = torch::zeros({b, len}, torch::kLong);
    out.labels = torch::full({b, len}, -100, torch::kLong);
    auto ids = out.ids.accessor<int64_t, 2>(), mask = out.mask.accessor<int64_t, 2>(), lab = out.labels.accessor<int64_t, 2>();
    for (int64_t i = 0; i < b; ++i) {
        const auto& e = data[static_cast<size_t>(rows[static_cast<size_t>(i)])];
        for (size_t t = 0; t < e.input_ids.size(); ++t) {
            ids[i][static_cast<int64_t>(t)] = e.input_ids[t];
            mask[i][static_cast<int64_t>(t)] = 1;
            lab[i][static_cast<int64_t>(t)] = e.labels[t];
        }
        out.tokens += static_cast<int64_t>(e.input_ids.size());
    }
    return out;
}

LossSum evaluate_loss(LlamaForCausalLMImpl& model, const std::vector<Example>& data, int64_t batch_size, int64_t pad) {
    torch::NoGradGuard ng;
    const bool was_training = model.is_training();
    model.eval();
    LossSum s;
    for (int64_t start = 0; start < static_cast<int64_t>(data.size()); start += batch_size) {
        std::vector<int64_t> rows;
        for (int64_t i = start; i < std::min<int64_t>(start + batch_size, static_cast<int64_t>(data.size())); ++i) rows.push_back(i);
        auto b = collate(data, rows, pad);
        LlamaInputs in;
        in.input_ids = b.ids;
        in.attention_mask = b.mask;
        auto logits = model.forward(in).logits;
        const int64_t v = logits.size(-1);
        auto shifted = logits.narrow(1, 0, logits.size(1) - 1).reshape({-1, v}).to(torch::kFloat);
        auto targets = b.labels.narrow(1, 1, b.labels.size(1) - 1).reshape({-1});
        s.loss_sum += torch::nn::functional::cross_entropy(
                          shifted, targets,
                          torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum))
                          .item<double>();
        s.tokens += targets.ne(-100).sum().item<int64_t>();
    }
    model.train(was_training);
    return s;
}

double peak_memory_mb() {
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

// Matrix FLOPs per trained token: frozen weights take a forward (2N) and an
// input-gradient backward (2N); attention 4·T·q_dim per layer forward, 3x with
// backward; adapters about 3x their forward cost.
double flops_per_token(const PeftModel& peft, const LlamaConfig& c, double seq_len) {
    double n = 0, adapters = 0;
    for (const auto& [name, layer] : peft.adaptable_layers()) {
        n += static_cast<double>(layer->weight.numel());
        for (const auto& a : layer->adapter_names()) {
            const auto& s = layer->shape();
            const double r = static_cast<double>(peft.config(a).r), d = static_cast<double>(s.flat_in());
            adapters += peft.config(a).method == Method::Hra ? 3 * 4 * d * r : 3 * 2 * r * (d + static_cast<double>(s.out));
        }
    }
    const double attention = 3 * 4 * seq_len * static_cast<double>(c.q_dim()) * static_cast<double>(c.num_hidden_layers);
    return 4 * n + attention + adapters;
}

std::optional<std::pair<int64_t, std::string>> latest_checkpoint(const std::string& run) {
    std::optional<std::pair<int64_t, std::string>> best;
    if (!fs::is_directory(run)) return best;
    static const std::regex re("checkpoint-([0-9]+)");
    for (const auto& e : fs::directory_iterator(run)) {
        std::smatch m;
        const std::string name = e.path().filename().string();
        if (e.is_directory() && std::regex_match(name, m, re)) {
            const int64_t step = std::stoll(m[1].str());
            if (!best || step > best->first) best = {{step, e.path().string()}};
        }
    }
    return best;
}

struct DataCursor {
    int64_t epoch = 0, position = 0;
};

json options_json(const TrainOptions& o, int64_t total_steps, int64_t warmup) {
    json j;
    j["model"] = o.model;
    j["data"] = o.data;
    j["val_data"] = o.val_data;
    j["val_split"] = o.val_split;
    j["out"] = o.out;
    j["format"] = o.data_options.format;
    j["prompt_template"] = o.data_options.prompt_template;
    j["chat_template"] = o.data_options.chat_template;
    j["train_on_prompt"] = o.data_options.train_on_prompt;
    j["max_length"] = o.data_options.max_length;
    j["packing"] = o.data_options.packing;
    j["adapter"] = json::parse(adapter_config_json(o.adapter));
    j["strategy"] = o.strategy;
    j["lr"] = o.lr;
    j["schedule"] = o.schedule;
    j["warmup_steps"] = warmup;
    j["weight_decay"] = o.weight_decay;
    j["adam_beta1"] = o.adam_beta1;
    j["adam_beta2"] = o.adam_beta2;
    j["adam_eps"] = o.adam_eps;
    j["batch_size"] = o.batch_size;
    j["grad_accum"] = o.grad_accum;
    j["max_grad_norm"] = o.max_grad_norm;
    j["epochs"] = o.epochs;
    j["max_steps"] = o.max_steps;
    j["total_steps"] = total_steps;
    j["ortho_lambda"] = o.ortho_lambda;
    j["ortho_form"] = o.ortho_form;
    j["dtype"] = o.dtype;
    j["seed"] = o.seed;
    j["shuffle"] = o.shuffle;
    j["eval_every"] = o.eval_every;
    j["save_every"] = o.save_every;
    return j;
}

void write_checkpoint(const std::string& run, int64_t step, const PeftModel& peft, const AdamW& opt,
                      const DataCursor& cursor, const json& resolved) {
    io::OutputFolder out((fs::path(run) / ("checkpoint-" + std::to_string(step))).string(), /*overwrite=*/true);
    peft.save_adapter(out.temp_path(), "default");
    auto state = opt.state();
    state.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
    io::save_safetensors(out.file("optimizer.safetensors"), state);
    json ts;
    ts["step"] = step;
    ts["epoch"] = cursor.epoch;
    ts["position"] = cursor.position;
    ts["config"] = resolved;
    io::write_file_atomically(out.file("trainer_state.json"), ts.dump(2) + "\n");
    out.commit();
}

std::string progress_bar(int64_t step, int64_t total, double seconds_per_step) {
    const int width = 30;
    const int fill = static_cast<int>(width * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, total)));
    const double eta = seconds_per_step * static_cast<double>(total - step);
    char buf[160];
    std::snprintf(buf, sizeof buf, "\r[%s%s] %lld/%lld ETA %dm%02ds", std::string(static_cast<size_t>(fill), '#').c_str(),
                  std::string(static_cast<size_t>(width - fill), '.').c_str(), static_cast<long long>(step),
                  static_cast<long long>(total), static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
    return buf;
}

}  // namespace

double matmul_rate(c10::ScalarType dtype) {
    torch::NoGradGuard ng;
    // No random numbers here: the global generator drives dropout and must not move.
    auto a = torch::linspace(-1, 1, 1024 * 1024).view({1024, 1024}).to(dtype), b = a.t().contiguous();
    auto c = torch::mm(a, b);
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        c = torch::mm(a, b);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return 2.0 * 1024 * 1024 * 1024 / best;
}

TrainResult train(const TrainOptions& o) {
    if (o.model.empty() || o.data.empty() || o.out.empty()) throw Error("train needs --model, --data and --out");
    if (o.batch_size <= 0 || o.grad_accum <= 0) throw Error("batch_size and grad_accum must be positive");
    if (o.lr <= 0) throw Error("lr must be positive");
    const auto schedule = parse_schedule(o.schedule);
    const auto ortho_form = core::parse_penalty_form(o.ortho_form);

    // Run folder.
    std::optional<std::pair<int64_t, std::string>> resume_from;
    if (o.resume) {
        resume_from = latest_checkpoint(o.out);
        if (!resume_from) throw Error("--resume: no checkpoint-N folder to resume from", {o.out});
    } else if (fs::exists(o.out) && !fs::is_empty(o.out) && !o.overwrite) {
        throw Error("run folder exists and is not empty (use --resume to continue it, or --force to start over)", {o.out});
    }
    io::make_dirs(o.out);

    // Model, tokenizer, data.
    LoadOptions lo;
    lo.dtype = parse_dtype(o.dtype);
    auto base = load_llama(o.model, lo);
    auto tokenizer = load_tokenizer(o.model);
    const int64_t pad = base.config.pad_token_id.value_or(tokenizer->eos_id().value_or(0));
    auto train_examples = tokenize_records(read_records(o.data, o.data_options), *tokenizer, o.data_options, o.data);
    std::vector<Example> val_examples;
    if (!o.val_data.empty()) {
        val_examples = tokenize_records(read_records(o.val_data, o.data_options), *tokenizer, o.data_options, o.val_data);
    } else if (o.val_split > 0) {
        std::tie(train_examples, val_examples) = split_validation(std::move(train_examples), o.val_split, o.seed);
    }
    if (o.data_options.packing) train_examples = pack_examples(train_examples, o.data_options.max_length);
    const int64_t n_train = static_cast<int64_t>(train_examples.size());
    const int64_t per_step = o.batch_size * o.grad_accum;
    const int64_t steps_per_epoch = std::max<int64_t>(1, (n_train + per_step - 1) / per_step);
    const int64_t total_steps = o.max_steps > 0 ? o.max_steps : o.epochs * steps_per_epoch;
    const int64_t warmup = o.warmup_steps > 0 ? o.warmup_steps
                                              : static_cast<int64_t>(std::ceil(o.warmup_ratio * static_cast<double>(total_steps)));
    const json resolved = options_json(o, total_steps, warmup);
    io::write_file_atomically((fs::path(o.out) / "config.json").string(), resolved.dump(2) + "\n");

    // Adapters.
    torch::manual_seed(o.seed);
    InjectOptions inject;
    inject.model_type = base.config.model_type;
    PeftModel peft(base.model.ptr(), inject);
    if (resume_from) {
        peft.load_adapter(resume_from->second, "default", /*trainable=*/true);
    } else {
        AdapterConfig cfg = o.adapter;
        cfg.inference_mode = false;
        peft.add_adapter("default", cfg);
    }
    peft.set_strategy(parse_strategy(o.strategy));
    base.model->train();
    auto params = peft.trainable_parameters();
    AdamW opt(params, {o.adam_beta1, o.adam_beta2, o.adam_eps, o.weight_decay});
    DataCursor cursor;
    int64_t step = 0;
    if (resume_from) {
        const std::string dir = resume_from->second;
        auto state = io::SafetensorsFile::open((fs::path(dir) / "optimizer.safetensors").string());
        opt.load_state(state);
        auto ts = io::read_json_file((fs::path(dir) / "trainer_state.json").string());
        step = ts.at("step").get<int64_t>();
        cursor.epoch = ts.at("epoch").get<int64_t>();
        cursor.position = ts.at("position").get<int64_t>();
        auto gen = at::detail::getDefaultCPUGenerator();  // a handle on the shared generator
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_state(state.tensor("rng.cpu").clone());
    }
    if (!o.quiet) {
        std::fprintf(stderr, "hra: %s\n", peft.trainable_summary().c_str());
        std::fprintf(stderr, "hra: %lld training examples, %lld validation; %lld steps of %lld examples%s\n",
                     static_cast<long long>(n_train), static_cast<long long>(val_examples.size()),
                     static_cast<long long>(total_steps), static_cast<long long>(per_step),
                     resume_from ? (" (resuming after step " + std::to_string(step) + ")").c_str() : "");
    }

    // Metrics: keep the lines up to the resume point.
    const std::string metrics_path = (fs::path(o.out) / "metrics.jsonl").string();
    TrainResult result;
    {
        std::string kept;
        if (resume_from && fs::exists(metrics_path)) {
            std::ifstream in(metrics_path);
            std::string line;
            while (std::getline(in, line)) {
                try {
                    auto j = json::parse(line);
                    if (j.value("step", int64_t(0)) > step) continue;
                    StepRecord r{j.value("step", int64_t(0)), j.value("loss", 0.0), j.value("lr", 0.0),
                                 j.value("grad_norm", 0.0), j.value("ms", 0.0), j.value("tokens_per_s", 0.0),
                                 j.value("mfu", 0.0), j.value("peak_mem_mb", 0.0), std::nullopt};
                    if (j.contains("val_loss")) r.val_loss = j["val_loss"].get<double>();
                    result.history.push_back(r);
                    kept += line + "\n";
                } catch (const json::exception&) {
                }
            }
        }
        io::write_file_atomically(metrics_path, kept);
    }
    std::ofstream metrics(metrics_path, std::ios::app);

    const double peak_rate = matmul_rate(lo.dtype);
    const bool tty = isatty(STDERR_FILENO) && !o.quiet;
    SigintScope sigint;
    std::vector<int64_t> order = epoch_order(n_train, o.seed, cursor.epoch, o.shuffle);
    auto next_rows = [&] {
        std::vector<int64_t> rows;
        while (static_cast<int64_t>(rows.size()) < o.batch_size) {
            if (cursor.position >= n_train) {
                ++cursor.epoch;
                cursor.position = 0;
                order = epoch_order(n_train, o.seed, cursor.epoch, o.shuffle);
            }
            rows.push_back(order[static_cast<size_t>(cursor.position++)]);
        }
        return rows;
    };
    auto save = [&] { write_checkpoint(o.out, step, peft, opt, cursor, resolved); };

    double seconds_per_step = 0;
    while (step < total_steps) {
        const auto t0 = std::chrono::steady_clock::now();
        double loss_value = 0;
        int64_t tokens = 0, seq_len = 0;
        for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
            auto batch = collate(train_examples, next_rows(), pad);
            LlamaInputs in;
            in.input_ids = batch.ids;
            in.attention_mask = batch.mask;
            auto loss = causal_lm_loss(base.model->forward(in).logits, batch.labels);
            if (o.inject_nan_at_step == step + 1 && micro == 0) loss = loss * std::numeric_limits<double>::quiet_NaN();
            const double v = loss.item<double>();
            if (!std::isfinite(v))
                throw Error("non-finite loss (" + std::to_string(v) + ") at step " + std::to_string(step + 1) +
                            "; stopping. The last checkpoint was left as it was.",
                            {o.out});
            (loss / static_cast<double>(o.grad_accum)).backward();
            loss_value += v / static_cast<double>(o.grad_accum);
            tokens += batch.tokens;
            seq_len = std::max<int64_t>(seq_len, batch.ids.size(1));
        }
        if (o.ortho_lambda > 0) {
            auto penalty = peft.orthogonality_penalty(ortho_form);
            if (penalty.requires_grad()) (o.ortho_lambda * penalty).backward();
        }
        const double grad_norm = clip_grad_norm(params, o.max_grad_norm);
        if (!std::isfinite(grad_norm))
            throw Error("non-finite gradient norm at step " + std::to_string(step + 1) +
                        "; stopping. The last checkpoint was left as it was.",
                        {o.out});
        const double lr = learning_rate(schedule, o.lr, step, total_steps, warmup);
        opt.step(lr);
        opt.zero_grad();
        ++step;
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        seconds_per_step = seconds_per_step == 0 ? secs : 0.9 * seconds_per_step + 0.1 * secs;
        StepRecord rec{step,
                       loss_value,
                       lr,
                       grad_norm,
                       secs * 1e3,
                       static_cast<double>(tokens) / secs,
                       flops_per_token(peft, base.config, static_cast<double>(seq_len)) * static_cast<double>(tokens) /
                           secs / peak_rate,
                       peak_memory_mb(),
                       std::nullopt};
        const bool last = step == total_steps;
        if (!val_examples.empty() && ((o.eval_every > 0 && step % o.eval_every == 0) || last))
            rec.val_loss = evaluate_loss(*base.model, val_examples, o.batch_size, pad).mean();
        json line = {{"step", rec.step},       {"loss", rec.loss},       {"lr", rec.lr},
                     {"grad_norm", rec.grad_norm}, {"ms", rec.ms},        {"tokens_per_s", rec.tokens_per_s},
                     {"mfu", rec.mfu},         {"peak_mem_mb", rec.peak_mem_mb}};
        if (rec.val_loss) {
            line["val_loss"] = *rec.val_loss;
            line["val_ppl"] = std::exp(*rec.val_loss);
        }
        metrics << line.dump() << "\n" << std::flush;
        result.history.push_back(rec);
        if (!o.quiet && (step % std::max<int64_t>(1, o.log_every) == 0 || last || rec.val_loss)) {
            char buf[320];
            std::snprintf(buf, sizeof buf,
                          "step %5lld/%lld | loss %.4f | lr %.3e | grad norm %.3f | %.0f ms | %.0f tok/s | MFU %.1f%% | peak %.0f MB",
                          static_cast<long long>(step), static_cast<long long>(total_steps), rec.loss, rec.lr,
                          rec.grad_norm, rec.ms, rec.tokens_per_s, 100 * rec.mfu, rec.peak_mem_mb);
            std::string msg = buf;
            if (rec.val_loss) {
                std::snprintf(buf, sizeof buf, " | val loss %.4f (ppl %.2f)", *rec.val_loss, std::exp(*rec.val_loss));
                msg += buf;
            }
            std::fprintf(stderr, "%s%s\n", tty ? "\r\033[K" : "", msg.c_str());
            if (tty && !last) std::fprintf(stderr, "%s", progress_bar(step, total_steps, seconds_per_step).c_str());
        }
        if (o.inject_sigint_at_step == step) std::raise(SIGINT);
        if ((o.save_every > 0 && step % o.save_every == 0) || last || g_sigint) save();
        if (g_sigint && !last) {
            if (tty) std::fprintf(stderr, "\r\033[K");
            std::fprintf(stderr, "hra: interrupted; checkpoint-%lld saved in %s\n", static_cast<long long>(step), o.out.c_str());
            result.interrupted = true;
            break;
        }
    }
    result.steps = step;
    if (!result.history.empty()) result.final_val_loss = result.history.back().val_loss;
    result.adapter_dir = (fs::path(o.out) / ("checkpoint-" + std::to_string(step))).string();
    io::write_file_atomically((fs::path(o.out) / "loss.svg").string(), loss_curve_svg({{"train", result.history}}));
    return result;
}

}  // namespace hra
