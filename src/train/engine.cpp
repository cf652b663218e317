#include "train/engine.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <regex>

#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "common/runtime.h"
#include "common/torch_compat.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/output_folder.h"
#include "io/safetensors.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/plot.h"
#include "train/task.h"

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

// Deletes all but the newest `keep` checkpoint-N folders (best/ is another folder and stays).
void remove_old_checkpoints(const std::string& run, int64_t keep) {
    static const std::regex re("checkpoint-([0-9]{1,12})");
    std::vector<std::pair<int64_t, fs::path>> found;
    for (const auto& e : fs::directory_iterator(run)) {
        std::smatch m;
        const std::string name = e.path().filename().string();
        if (e.is_directory() && std::regex_match(name, m, re)) found.emplace_back(std::stoll(m[1].str()), e.path());
    }
    std::sort(found.begin(), found.end());
    for (size_t i = 0; i + static_cast<size_t>(keep) < found.size(); ++i) {
        std::error_code ec;
        fs::remove_all(found[i].second, ec);
        if (ec) log_warning("cannot remove " + found[i].second.string() + ": " + ec.message());
    }
}

// checkpoint-N folders of a run; half-written ones (.checkpoint-N.tmp-*, left
// by a killed process) are removed when `clean` is set.
std::optional<std::pair<int64_t, std::string>> latest_checkpoint(const std::string& run, bool clean) {
    std::optional<std::pair<int64_t, std::string>> best;
    if (!fs::is_directory(run)) return best;
    static const std::regex re("checkpoint-([0-9]{1,12})"), tmp("\\.checkpoint-[0-9]+\\.tmp-.*");
    for (const auto& e : fs::directory_iterator(run)) {
        std::smatch m;
        const std::string name = e.path().filename().string();
        if (clean && e.is_directory() && std::regex_match(name, tmp)) {
            std::error_code ec;
            fs::remove_all(e.path(), ec);
            continue;
        }
        if (e.is_directory() && std::regex_match(name, m, re) && fs::exists(e.path() / "trainer_state.json")) {
            const int64_t step = std::stoll(m[1].str());
            if (!best || step > best->first) best = {{step, e.path().string()}};
        }
    }
    return best;
}

struct Cursor {
    int64_t epoch = 0, position = 0;
};

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

// The RNG states of this process: the CPU generator and, on CUDA, the device's.
at::Tensor cpu_rng_state() { return at::detail::getDefaultCPUGenerator().get_state(); }
void set_cpu_rng_state(const at::Tensor& t) {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t);
}
at::Tensor cuda_rng_state(const c10::Device& d) { return at::globalContext().defaultGenerator(d).get_state(); }
void set_cuda_rng_state(const c10::Device& d, const at::Tensor& t) {
    auto gen = at::globalContext().defaultGenerator(d);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t);
}

int64_t json_int(const json& j, const char* key, int64_t lo, int64_t hi, const std::string& file) {
    if (!j.contains(key) || !j[key].is_number_integer()) throw Error(std::string("missing or non-integer '") + key + "'", {file, key});
    const int64_t v = j[key].get<int64_t>();
    if (v < lo || v > hi)
        throw Error(std::string("'") + key + "' = " + std::to_string(v) + " is outside [" + std::to_string(lo) + ", " +
                        std::to_string(hi) + "]",
                    {file, key});
    return v;
}

}  // namespace

double peak_memory_mb(const std::string& device) {
    if (device.rfind("cuda", 0) == 0) {
        const double b = compat::cuda_peak_allocated_bytes(c10::Device(device).has_index() ? c10::Device(device).index() : 0);
        if (b >= 0) return b / (1024.0 * 1024.0);
    }
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_maxrss) / 1024.0;  // Linux: KiB
}

TrainResult train(const TrainOptions& options) {
    validate(options);
    const auto& info = find_task(options.task);
    const DistEnv env = dist_env_from_environment();
    TrainOptions o = options;
    // Data parallel on CUDA: each process on the GPU of its LOCAL_RANK unless one was named.
    if (env.world_size > 1 && o.device == "cuda") o.device = "cuda:" + std::to_string(env.local_rank);
    const c10::Device device(o.device);
    if (device.is_cuda() && !torch::cuda::is_available())
        throw Error("--device " + o.device + ": this libtorch has no CUDA or no GPU is visible");
    // Collectives wait up to 30 minutes (rank 0 evaluates and saves while the
    // others wait); a peer that dies is seen at once, through its closed connection.
    Distributed dist(env, o.device, std::chrono::minutes(30));
    const bool main = dist.is_main();
    const int world = dist.world_size(), rank = dist.rank();
    if (o.batch_size < world)
        throw Error("--batch-size " + std::to_string(o.batch_size) + " is smaller than the " + std::to_string(world) +
                    " processes (the batch size is global)");

    // Run folder. Every process looks at it before rank 0 writes anything there.
    const bool not_empty = fs::exists(o.out) && !fs::is_empty(o.out);
    dist.barrier();
    std::optional<std::pair<int64_t, std::string>> resume_from;
    if (o.resume) {
        resume_from = latest_checkpoint(o.out, main);
        if (!resume_from) throw Error("--resume: no checkpoint-N folder to resume from", {o.out});
    } else if (not_empty) {
        if (!o.overwrite)
            throw Error("run folder exists and is not empty (use --resume to continue it, or --force to start over)", {o.out});
        // --force starts over for real: the old checkpoints, best/ and metrics move
        // into previous-N/, where no later --resume looks.
        if (dist.is_main()) {
            int k = 1;
            while (fs::exists(fs::path(o.out) / ("previous-" + std::to_string(k)))) ++k;
            const auto aside = fs::path(o.out) / ("previous-" + std::to_string(k));
            static const std::regex old(R"((\.?checkpoint-.*|best|metrics\.jsonl|results\.json|config\.json|loss\.svg))");
            for (const auto& e : fs::directory_iterator(o.out)) {
                if (!std::regex_match(e.path().filename().string(), old)) continue;
                fs::create_directories(aside);
                fs::rename(e.path(), aside / e.path().filename());
            }
        }
        dist.barrier();
    }
    json state;  // trainer_state.json of the checkpoint resumed from
    std::string state_path;
    if (resume_from) {
        state_path = (fs::path(resume_from->second) / "trainer_state.json").string();
        state = io::read_json_file(state_path);
        const int64_t saved_world = state.contains("world_size") ? json_int(state, "world_size", 1, 65536, state_path) : 1;
        if (saved_world != world)
            throw Error("the checkpoint was written by " + std::to_string(saved_world) + " processes and this run has " +
                            std::to_string(world) + "; resume with the same --nproc / WORLD_SIZE",
                        {state_path});
    }

    // Task: model, data, what trains.
    torch::manual_seed(o.seed);
    auto task = info.make(o);
    task->setup(resume_from ? resume_from->second : "");
    const int64_t n = task->train_size();
    if (n <= 0) throw Error("no training examples");
    const int64_t per_step = o.batch_size * o.grad_accum;
    const int64_t steps_per_epoch = (n + per_step - 1) / per_step;
    const int64_t total_steps = o.max_steps > 0 ? o.max_steps : o.epochs * steps_per_epoch;
    const int64_t warmup = o.warmup_steps > 0 ? o.warmup_steps
                                              : static_cast<int64_t>(std::ceil(o.warmup_ratio * static_cast<double>(total_steps)));
    json resolved = to_json(o);
    resolved["task_config"] = task->describe();
    resolved["total_steps"] = total_steps;
    resolved["warmup_steps_resolved"] = warmup;
    resolved["world_size"] = world;
    if (main) {
        io::make_dirs(o.out);
        io::write_file_atomically((fs::path(o.out) / "config.json").string(), resolved.dump(2) + "\n");
    }

    auto params = task->trainable_parameters();
    if (params.empty()) throw Error("task " + o.task + ": nothing to train");
    if (!resume_from) {
        torch::NoGradGuard ng;
        std::vector<at::Tensor> data;
        for (auto& p : params) data.push_back(p.detach());
        dist.broadcast(data);  // the same start on every process
    }
    AdamW opt(params, {o.adam_beta1, o.adam_beta2, o.adam_eps, o.weight_decay});
    // On resume the parameters hold the checkpoint's averages here; load_raw below restores the raw weights.
    std::optional<Ema> ema;
    if (o.ema_decay > 0) ema.emplace(params, o.ema_decay);
    Cursor cursor;
    int64_t step = 0;
    double loss_since_eval = 0;  // training loss summed since the last evaluation
    int64_t steps_since_eval = 0;
    TrainResult result;
    result.main_metric = task->main_metric();
    const bool higher = task->higher_is_better();
    result.best_dir = (fs::path(o.out) / "best").string();
    if (resume_from) {
        const std::string dir = resume_from->second;
        auto saved = io::SafetensorsFile::open((fs::path(dir) / "optimizer.safetensors").string());
        opt.load_state(saved);
        if (ema)
            ema->load_raw(saved);
        else if (saved.contains("ema.raw.0"))
            throw Error("the checkpoint's weights are an EMA (its run had --ema-decay); resume with the same --ema-decay",
                        {saved.path()});
        step = json_int(state, "step", 0, total_steps, state_path);
        cursor.epoch = json_int(state, "epoch", 0, std::numeric_limits<int32_t>::max(), state_path);
        cursor.position = json_int(state, "position", 0, n, state_path);
        if (state.contains("loss_since_eval") && state["loss_since_eval"].is_number()) {
            loss_since_eval = state["loss_since_eval"].get<double>();
            steps_since_eval = json_int(state, "steps_since_eval", 0, total_steps, state_path);
        }
        if (state.contains("best_score") && state["best_score"].is_number()) {
            result.best_score = state["best_score"].get<double>();
            result.best_step = state.value("best_step", int64_t(0));
        }
        set_cpu_rng_state(saved.tensor("rng.cpu." + std::to_string(rank)).clone());
        if (device.is_cuda()) set_cuda_rng_state(device, saved.tensor("rng.cuda." + std::to_string(rank)).clone());
    }
    if (main) {
        log_info(strprintf("hra: task %s on %s%s: %s", o.task.c_str(), o.device.c_str(),
                           world > 1 ? (", " + std::to_string(world) + " processes").c_str() : "", task->summary().c_str()));
        log_info(strprintf("hra: %lld training examples, %lld for evaluation; %lld steps of %lld examples%s",
                           static_cast<long long>(n), static_cast<long long>(task->eval_size()),
                           static_cast<long long>(total_steps), static_cast<long long>(per_step),
                           resume_from ? (" (resuming after step " + std::to_string(step) + ")").c_str() : ""));
    }

    // Metrics: keep the lines up to the resume point.
    const std::string metrics_path = (fs::path(o.out) / "metrics.jsonl").string();
    std::ofstream metrics;
    if (main) {
        std::string kept;
        if (resume_from && fs::exists(metrics_path)) {
            std::ifstream in(metrics_path);
            long line_no = 0;
            for (std::string line; std::getline(in, line);) {
                ++line_no;
                json j;
                try {
                    j = io::parse_json(line, metrics_path, line_no);
                } catch (const Error&) {
                    // A run killed while writing leaves a partial last line.
                    log_warning(metrics_path + ":" + std::to_string(line_no) + ": not a JSON line; dropped on resume");
                    continue;
                }
                if (!j.is_object()) {
                    log_warning(metrics_path + ":" + std::to_string(line_no) + ": not a JSON object; dropped on resume");
                    continue;
                }
                if (j.value("step", int64_t(0)) > step) continue;
                StepRecord r{j.value("step", int64_t(0)), j.value("loss", 0.0),         j.value("lr", 0.0),
                             j.value("grad_norm", 0.0),   j.value("ms", 0.0),            j.value("tokens_per_s", 0.0),
                             j.value("gemm_eff", 0.0),    j.value("peak_mem_mb", 0.0), std::nullopt};
                if (j.contains("val_loss") && j["val_loss"].is_number()) r.val_loss = j["val_loss"].get<double>();
                if (j.contains("eval") && j["eval"].is_object()) {
                    EvalRecord e;
                    e.step = r.step;
                    e.epoch = j.value("epoch", int64_t(0));
                    e.train_loss = j.value("train_loss", 0.0);
                    e.metrics = j["eval"];
                    e.score = j.value("score", 0.0);
                    e.best = j.value("best", false);
                    result.evals.push_back(e);
                }
                result.history.push_back(r);
                kept += line + "\n";
            }
        }
        io::write_file_atomically(metrics_path, kept);
        metrics.open(metrics_path, std::ios::app);
    }

    // GEMM efficiency is against the rate in the base weights' dtype.
    const double gemm_rate = matmul_rate(o.dtype, o.device, 1024, 0.3);
    if (main)
        log_info(strprintf("hra: GEMM eff = the step's matrix FLOP/s over this machine's %s GEMM rate, %.1f GFLOP/s "
                           "(median of 1024^3 products over 0.3 s at start), not over the hardware's peak",
                           c10::toString(o.dtype), gemm_rate / 1e9));
    SigintScope sigint;
    std::vector<int64_t> order = epoch_order(n, o.seed, cursor.epoch, o.shuffle);
    auto save = [&](int64_t at_step) {
        // Every process's RNG goes into the one checkpoint.
        std::vector<at::Tensor> cpu_states = dist.all_gather(cpu_rng_state());
        std::vector<at::Tensor> cuda_states;
        if (device.is_cuda()) cuda_states = dist.all_gather(cuda_rng_state(device));
        if (!main) return;
        io::OutputFolder out((fs::path(o.out) / ("checkpoint-" + std::to_string(at_step))).string(), /*overwrite=*/true);
        if (ema) ema->swap();  // the checkpoint's model is the average
        task->save(out.temp_path());
        if (ema) ema->swap();
        auto st = opt.state();
        if (ema)
            for (auto& kv : ema->raw_state()) st.push_back(std::move(kv));
        for (int r = 0; r < world; ++r) {
            st.emplace_back("rng.cpu." + std::to_string(r), cpu_states[static_cast<size_t>(r)].cpu());
            if (device.is_cuda()) st.emplace_back("rng.cuda." + std::to_string(r), cuda_states[static_cast<size_t>(r)].cpu());
        }
        if (o.inject_sigkill_mid_file == at_step) {
            const std::string bytes = io::serialize_safetensors(st);
            io::write_atomically(out.file("optimizer.safetensors"), [&](std::ostream& f) {
                f.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
                f.flush();
                std::raise(SIGKILL);
            });
        }
        io::save_safetensors(out.file("optimizer.safetensors"), st);
        json ts;
        ts["step"] = at_step;
        ts["epoch"] = cursor.epoch;
        ts["position"] = cursor.position;
        ts["world_size"] = world;
        ts["loss_since_eval"] = loss_since_eval;
        ts["steps_since_eval"] = steps_since_eval;
        if (result.best_score) {
            ts["best_score"] = *result.best_score;
            ts["best_step"] = result.best_step;
        }
        ts["config"] = resolved;
        io::write_file_atomically(out.file("trainer_state.json"), ts.dump(2) + "\n");
        if (o.inject_sigkill_in_save == at_step) std::raise(SIGKILL);
        out.commit();
        if (o.save_total_limit > 0) remove_old_checkpoints(o.out, o.save_total_limit);
    };

    const auto run_start = std::chrono::steady_clock::now();
    double seconds_per_step = 0;
    task->set_training(true);
    while (step < total_steps) {
        if (cursor.position >= n) {
            ++cursor.epoch;
            cursor.position = 0;
            order = epoch_order(n, o.seed, cursor.epoch, o.shuffle);
        }
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<std::vector<int64_t>> micro;
        for (int64_t m = 0; m < o.grad_accum && cursor.position < n; ++m) {
            const int64_t end = std::min(n, cursor.position + o.batch_size);
            micro.emplace_back(order.begin() + cursor.position, order.begin() + end);
            cursor.position = end;
        }
        const double n_micro = static_cast<double>(micro.size());
        double loss_value = 0;
        int64_t tokens = 0, seq_len = 0;
        for (size_t m = 0; m < micro.size(); ++m) {
            // This process's shard: every world-th row of the global micro-batch.
            std::vector<int64_t> mine;
            for (size_t i = static_cast<size_t>(rank); i < micro[m].size(); i += static_cast<size_t>(world)) mine.push_back(micro[m][i]);
            BatchLoss bl;
            double local_sum = 0;
            if (!mine.empty()) {
                bl = task->loss(mine);
                if (o.inject_nan_at_step == step + 1 && m == 0) bl.sum = bl.sum * std::numeric_limits<double>::quiet_NaN();
                local_sum = bl.sum.item<double>();
            }
            auto stats = torch::tensor({local_sum, bl.count, static_cast<double>(bl.tokens)}, torch::kDouble);
            dist.sum(stats);
            const double global_sum = stats[0].item<double>(), global_count = stats[1].item<double>();
            if (!std::isfinite(global_sum))
                throw Error("non-finite loss (" + std::to_string(global_sum) + ") at step " + std::to_string(step + 1) +
                                "; stopping. The last checkpoint was left as it was.",
                            {o.out});
            tokens += static_cast<int64_t>(stats[2].item<double>());
            seq_len = std::max(seq_len, bl.seq_len);
            if (global_count <= 0) continue;
            if (!mine.empty()) (bl.sum / (global_count * n_micro)).backward();
            loss_value += global_sum / global_count / n_micro;
        }
        if (o.ortho_lambda > 0 && main) {
            auto penalty = task->orthogonality_penalty(o.ortho_form);
            if (penalty.defined() && penalty.requires_grad()) (o.ortho_lambda * penalty).backward();
        }
        dist.sum_grads(params);
        const double grad_norm = clip_grad_norm(params, o.max_grad_norm);
        if (!std::isfinite(grad_norm))
            throw Error("non-finite gradient norm at step " + std::to_string(step + 1) +
                            "; stopping. The last checkpoint was left as it was.",
                        {o.out});
        const double lr = learning_rate(o.schedule, o.lr, step, total_steps, warmup);
        opt.step(lr);
        opt.zero_grad();
        ++step;
        if (ema) ema->update(step);
        if (device.is_cuda()) compat::cuda_synchronize(device);
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        seconds_per_step = seconds_per_step == 0 ? secs : 0.9 * seconds_per_step + 0.1 * secs;
        loss_since_eval += loss_value;
        ++steps_since_eval;

        // Stop together: SIGINT on any process, or rank 0's clock.
        if (o.inject_sigint_at_step == step) std::raise(SIGINT);
        const bool out_of_time =
            main && o.max_minutes > 0 &&
            std::chrono::duration<double>(std::chrono::steady_clock::now() - run_start).count() > o.max_minutes * 60;
        const double flags = dist.max((g_sigint ? 2.0 : 0.0) + (out_of_time ? 1.0 : 0.0));
        const bool interrupted = flags >= 2, timed_out = std::fmod(flags, 2.0) >= 1;
        const bool last = step == total_steps || timed_out;
        const bool epoch_end = cursor.position >= n;

        StepRecord rec{step,
                       loss_value,
                       lr,
                       grad_norm,
                       secs * 1e3,
                       static_cast<double>(tokens) / secs,
                       task->flops_per_token(static_cast<double>(seq_len)) * static_cast<double>(tokens) / secs / gemm_rate,
                       peak_memory_mb(o.device),
                       std::nullopt};
        json line = {{"step", rec.step},   {"epoch", cursor.epoch + 1}, {"loss", rec.loss},
                     {"lr", rec.lr},       {"grad_norm", rec.grad_norm}, {"ms", rec.ms},
                     {"tokens_per_s", rec.tokens_per_s}, {"gemm_eff", rec.gemm_efficiency}, {"peak_mem_mb", rec.peak_mem_mb}};
        const bool eval_due = task->eval_size() > 0 &&
                              ((o.eval_every > 0 && step % o.eval_every == 0) || (o.eval_every == 0 && epoch_end) || last);
        std::string eval_msg;
        if (eval_due && main) {
            task->set_training(false);
            if (ema) ema->swap();  // evaluation and best/ see the average
            EvalRecord e;
            e.metrics = task->evaluate();
            task->set_training(true);
            e.step = step;
            e.epoch = cursor.epoch + 1;
            e.train_loss = loss_since_eval / static_cast<double>(std::max<int64_t>(1, steps_since_eval));
            const auto& mm = e.metrics;
            if (!mm.contains(result.main_metric) || !mm[result.main_metric].is_number())
                throw Error("task " + o.task + ": evaluation gave no '" + result.main_metric + "'");
            e.score = mm[result.main_metric].get<double>();
            e.best = !result.best_score || (higher ? e.score > *result.best_score : e.score < *result.best_score);
            if (mm.contains("loss") && mm["loss"].is_number()) {
                rec.val_loss = mm["loss"].get<double>();
                line["val_loss"] = *rec.val_loss;
                line["val_ppl"] = std::exp(*rec.val_loss);
            }
            if (e.best) {
                result.best_score = e.score;
                result.best_step = step;
                io::OutputFolder folder(result.best_dir, /*overwrite=*/true);
                task->save(folder.temp_path());
                json bi = {{"step", step}, {"epoch", e.epoch}, {"metrics", e.metrics}};
                io::write_file_atomically(folder.file("eval_result.json"), bi.dump(2) + "\n");
                folder.commit();
            }
            if (ema) ema->swap();
            line["eval"] = e.metrics;
            line["train_loss"] = e.train_loss;
            line["score"] = e.score;
            line["best"] = e.best;
            eval_msg = " | eval " + result.main_metric + " " + strprintf("%.4f", e.score) + (e.best ? " (best)" : "");
            result.evals.push_back(e);
            loss_since_eval = 0;
            steps_since_eval = 0;
        }
        if (main) {
            metrics << line.dump() << "\n" << std::flush;
            if (!metrics) throw Error("cannot append a line (disk full?)", {metrics_path});
            if (step % o.log_every == 0 || last || !eval_msg.empty()) {
                log_info(strprintf("step %5lld/%lld | loss %.4f | lr %.3e | grad norm %.3f | %.0f ms | %.0f tok/s | "
                                   "GEMM eff %.1f%% | peak %.0f MB",
                                   static_cast<long long>(step), static_cast<long long>(total_steps), rec.loss, rec.lr,
                                   rec.grad_norm, rec.ms, rec.tokens_per_s, 100 * rec.gemm_efficiency, rec.peak_mem_mb) +
                         eval_msg);
                if (!last) show_progress(progress_bar(step, total_steps, seconds_per_step));
            }
        }
        result.history.push_back(rec);
        if ((o.save_every > 0 && step % o.save_every == 0) || last || interrupted) save(step);
        if (timed_out) {
            if (main) log_info("hra: --max-minutes reached after step " + std::to_string(step));
            break;
        }
        if (interrupted && !last) {
            if (main) log_warning("interrupted; checkpoint-" + std::to_string(step) + " saved in " + o.out);
            result.interrupted = true;
            break;
        }
    }
    result.steps = step;
    if (!result.history.empty()) result.final_val_loss = result.history.back().val_loss;
    result.adapter_dir = (fs::path(o.out) / ("checkpoint-" + std::to_string(step))).string();
    if (!result.best_score) result.best_dir.clear();

    json evals = json::array();
    for (const auto& e : result.evals)
        evals.push_back({{"step", e.step}, {"epoch", e.epoch}, {"train_loss", e.train_loss}, {"metrics", e.metrics}, {"best", e.best}});
    result.result = {{"task", o.task},
                     {"method", o.method},
                     {"steps", step},
                     {"interrupted", result.interrupted},
                     {"checkpoint", result.adapter_dir},
                     {"main_metric", result.main_metric},
                     {"evaluations", evals},
                     {"config", resolved}};
    if (result.best_score) {
        result.result["best_dir"] = result.best_dir;
        result.result["best_step"] = result.best_step;
        result.result["best_score"] = *result.best_score;
        for (const auto& e : result.evals)
            if (e.step == result.best_step) {
                result.result["best"] = e.metrics;
                result.result["best_epoch"] = e.epoch;
            }
    }
    if (main) {
        io::write_file_atomically((fs::path(o.out) / "loss.svg").string(), loss_curve_svg({{"train", result.history}}));
        io::write_file_atomically((fs::path(o.out) / "results.json").string(), result.result.dump(2) + "\n");
    }
    return result;
}

}  // namespace hra
