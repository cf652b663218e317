#include "diffusion/schedulers.h"

#include <algorithm>
#include <cmath>
#include <vector>
#include <filesystem>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/strings.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/json_value.h"

namespace hra::diffusion {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

torch::Tensor f32(double v) { return torch::tensor(static_cast<float>(v), torch::kFloat); }

// A sample-shaped update a·x + b·y with 0-dim float32 coefficients, in the sample's dtype.
torch::Tensor lin(const torch::Tensor& a, const torch::Tensor& x, const torch::Tensor& b, const torch::Tensor& y) {
    return a.to(x.options()) * x + b.to(y.options()) * y;
}

}  // namespace

ScheduleConfig parse_schedule_config(const std::string& text, const std::string& source) {
    // diffusers writes Python's -Infinity/NaN in some configs (lambda_min_clipped): read them as null.
    std::string cleaned = text;
    for (const char* word : {"-Infinity", "Infinity", "NaN"}) {
        for (size_t p = cleaned.find(word); p != std::string::npos; p = cleaned.find(word, p))
            cleaned.replace(p, std::string(word).size(), "null");
    }
    const json j = io::parse_json(cleaned, source);
    if (!j.is_object()) throw Error("scheduler config is not a JSON object", {source});
    ScheduleConfig c;
    c.num_train_timesteps = io::json_value_or<int64_t>(j, "num_train_timesteps", c.num_train_timesteps, source);
    c.beta_start = io::json_value_or<double>(j, "beta_start", c.beta_start, source);
    c.beta_end = io::json_value_or<double>(j, "beta_end", c.beta_end, source);
    c.beta_schedule = io::json_value_or<std::string>(j, "beta_schedule", c.beta_schedule, source);
    c.prediction_type = io::json_value_or<std::string>(j, "prediction_type", c.prediction_type, source);
    c.steps_offset = io::json_value_or<int64_t>(j, "steps_offset", c.steps_offset, source);
    c.set_alpha_to_one = io::json_value_or<bool>(j, "set_alpha_to_one", c.set_alpha_to_one, source);
    c.clip_sample = io::json_value_or<bool>(j, "clip_sample", c.clip_sample, source);
    c.clip_sample_range = io::json_value_or<double>(j, "clip_sample_range", c.clip_sample_range, source);
    if (io::json_value_or<bool>(j, "thresholding", false, source))
        throw Error("thresholding (dynamic x0 thresholding) is not supported", {source, "thresholding"});
    if (c.num_train_timesteps < 2 || c.num_train_timesteps > 100000)
        throw Error("must be in [2, 100000]", {source, "num_train_timesteps"});
    if (c.beta_schedule != "linear" && c.beta_schedule != "scaled_linear" && c.beta_schedule != "squaredcos_cap_v2")
        throw Error("beta_schedule '" + c.beta_schedule + "' is not supported (linear, scaled_linear, squaredcos_cap_v2)",
                    {source, "beta_schedule"});
    // The cosine schedule ignores beta_start/beta_end, as diffusers does.
    if (c.beta_schedule != "squaredcos_cap_v2" && !(c.beta_start > 0 && c.beta_end > c.beta_start && c.beta_end < 1))
        throw Error("betas must satisfy 0 < beta_start < beta_end < 1", {source, "beta_end"});
    if (c.prediction_type != "epsilon" && c.prediction_type != "v_prediction" && c.prediction_type != "sample")
        throw Error("prediction_type '" + c.prediction_type + "' is not supported (epsilon, v_prediction, sample)",
                    {source, "prediction_type"});
    if (!(c.clip_sample_range > 0)) throw Error("must be positive", {source, "clip_sample_range"});
    if (j.contains("trained_betas") && !j["trained_betas"].is_null())
        throw Error("trained_betas are not supported", {source, "trained_betas"});
    if (c.steps_offset < 0) throw Error("must be >= 0", {source, "steps_offset"});
    return c;
}

ScheduleConfig read_schedule_config(const std::string& path) {
    std::string file = path;
    if (fs::is_directory(path))
        file = fs::is_regular_file(fs::path(path) / "scheduler" / "scheduler_config.json")
                   ? (fs::path(path) / "scheduler" / "scheduler_config.json").string()
                   : io::file_in_folder(path, "scheduler_config.json");
    if (!fs::is_regular_file(file)) throw Error("no such scheduler config", {path});
    return parse_schedule_config(io::read_file(file), file);
}

torch::Tensor betas(const ScheduleConfig& c) {
    const auto n = c.num_train_timesteps;
    if (c.beta_schedule == "scaled_linear")
        return torch::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), n, torch::kFloat).pow(2);
    if (c.beta_schedule == "squaredcos_cap_v2") {
        // Nichol & Dhariwal's cosine schedule: alpha_bar(t) = cos²((t + 0.008)/1.008 · π/2), betas capped at 0.999,
        // in double precision and then float32, as diffusers' betas_for_alpha_bar.
        const double pi = std::acos(-1.0);
        auto alpha_bar = [pi](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * pi / 2), 2); };
        std::vector<float> b(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
            const double t1 = static_cast<double>(i) / static_cast<double>(n), t2 = static_cast<double>(i + 1) / static_cast<double>(n);
            b[static_cast<size_t>(i)] = static_cast<float>(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
        }
        return torch::tensor(b, torch::kFloat);
    }
    return torch::linspace(c.beta_start, c.beta_end, n, torch::kFloat);
}

torch::Tensor alphas_cumprod(const ScheduleConfig& c) { return torch::cumprod(1.0 - betas(c), 0); }

torch::Tensor add_noise(const torch::Tensor& ac, const torch::Tensor& x0, const torch::Tensor& noise,
                        const torch::Tensor& timesteps) {
    if (timesteps.dim() != 1 || timesteps.size(0) != x0.size(0))
        throw Error("add_noise needs one timestep per batch row, got " + c10::str(timesteps.sizes()));
    auto a = ac.index_select(0, timesteps.to(torch::kLong).cpu()).to(x0.device());
    std::vector<int64_t> shape(static_cast<size_t>(x0.dim()), 1);
    shape[0] = x0.size(0);
    auto s = a.sqrt().view(shape).to(x0.scalar_type()), r = (1.0 - a).sqrt().view(shape).to(x0.scalar_type());
    return s * x0 + r * noise;
}

torch::Tensor training_target(const std::string& type, const torch::Tensor& ac, const torch::Tensor& x0, const torch::Tensor& noise,
                              const torch::Tensor& timesteps) {
    if (type == "epsilon") return noise;
    if (type == "sample") return x0;
    if (type != "v_prediction") throw Error("prediction_type '" + type + "' is not supported (epsilon, v_prediction, sample)");
    auto a = ac.index_select(0, timesteps.to(torch::kLong).cpu()).to(x0.device());
    std::vector<int64_t> shape(static_cast<size_t>(x0.dim()), 1);
    shape[0] = x0.size(0);
    auto s = a.sqrt().view(shape).to(x0.scalar_type()), r = (1.0 - a).sqrt().view(shape).to(x0.scalar_type());
    return s * noise - r * x0;
}

Scheduler::Scheduler(const ScheduleConfig& c) : c_(c), ac_(diffusion::alphas_cumprod(c)) {}

std::pair<torch::Tensor, torch::Tensor> Scheduler::x0_and_eps(const torch::Tensor& out, int64_t t, const torch::Tensor& x,
                                                              bool clip) const {
    auto a = ac_[t];
    auto b = 1.0 - a;
    auto sa = a.sqrt().to(x.options()), sb = b.sqrt().to(x.options());
    torch::Tensor x0, eps;
    if (c_.prediction_type == "epsilon") {
        x0 = (x - sb * out) / sa;
        eps = out;
    } else if (c_.prediction_type == "sample") {
        x0 = out;
        eps = (x - sa * x0) / sb;
    } else {
        x0 = sa * x - sb * out;
        eps = sa * out + sb * x;
    }
    if (clip && c_.clip_sample) x0 = x0.clamp(-c_.clip_sample_range, c_.clip_sample_range);
    return {x0, eps};
}

std::vector<int64_t> leading_timesteps(int64_t train, int64_t n, int64_t offset) {
    std::vector<int64_t> t;
    const int64_t ratio = train / n;
    for (int64_t k = n - 1; k >= 0; --k) t.push_back(k * ratio + offset);
    return t;
}

std::vector<int64_t> trailing_timesteps(int64_t train, int64_t n) {
    std::vector<int64_t> t;
    const double ratio = static_cast<double>(train) / static_cast<double>(n);
    for (double v = static_cast<double>(train); v > 0; v -= ratio) t.push_back(static_cast<int64_t>(std::nearbyint(v)) - 1);
    return t;
}

std::vector<int64_t> linspace_timesteps(int64_t train, int64_t n) {
    std::vector<int64_t> t;
    const double last = static_cast<double>(train - 1);
    for (int64_t k = n; k >= 1; --k)  // numpy linspace: start + k·step, step = (stop − start)/N
        t.push_back(static_cast<int64_t>(std::nearbyint(static_cast<double>(k) * (last / static_cast<double>(n)))));
    return t;
}

static void check_steps(int64_t n, const ScheduleConfig& c) {
    if (n < 1 || n > c.num_train_timesteps)
        throw Error("the number of inference steps must be in [1, " + std::to_string(c.num_train_timesteps) + "], got " +
                    std::to_string(n));
}

static void check_timestep(int64_t t, const ScheduleConfig& c) {
    if (t < 0 || t >= c.num_train_timesteps) throw Error("timestep " + std::to_string(t) + " is out of range");
}

// ------------------------------------------------------------------ DDIM

DdimScheduler::DdimScheduler(const ScheduleConfig& c, std::string spacing) : Scheduler(c), spacing_(std::move(spacing)) {
    if (spacing_ != "leading" && spacing_ != "trailing")
        throw Error("DDIM timestep spacing '" + spacing_ + "' is not supported (leading, trailing)");
}

void DdimScheduler::set_timesteps(int64_t n) {
    check_steps(n, c_);
    n_ = n;
    timesteps_ = spacing_ == "leading" ? leading_timesteps(c_.num_train_timesteps, n, c_.steps_offset)
                                       : trailing_timesteps(c_.num_train_timesteps, n);
}

StepOutput DdimScheduler::step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& x, const torch::Tensor&) {
    if (n_ == 0) throw Error("DDIM: set_timesteps before step");
    check_timestep(t, c_);
    const int64_t prev = t - c_.num_train_timesteps / n_;
    auto a_prev = prev >= 0 ? ac_[prev] : (c_.set_alpha_to_one ? f32(1.0) : ac_[0]);
    StepOutput out;
    auto [x0, e] = x0_and_eps(model_output, t, x, true);
    out.pred_original_sample = x0;
    out.prev_sample = lin(a_prev.sqrt(), out.pred_original_sample, (1.0 - a_prev).sqrt(), e);
    return out;
}

// ------------------------------------------------------------------ DDPM

DdpmScheduler::DdpmScheduler(const ScheduleConfig& c) : Scheduler(c) {}

void DdpmScheduler::set_timesteps(int64_t n) {
    check_steps(n, c_);
    n_ = n;
    timesteps_ = leading_timesteps(c_.num_train_timesteps, n, c_.steps_offset);
}

StepOutput DdpmScheduler::step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& x, const torch::Tensor& noise) {
    if (n_ == 0) throw Error("DDPM: set_timesteps before step");
    check_timestep(t, c_);
    const int64_t prev = t - c_.num_train_timesteps / n_;
    auto a = ac_[t];
    auto a_prev = prev >= 0 ? ac_[prev] : f32(1.0);
    auto beta_t = 1.0 - a, beta_prev = 1.0 - a_prev;
    auto alpha = a / a_prev, beta = 1.0 - alpha;
    StepOutput out;
    out.pred_original_sample = x0_and_eps(model_output, t, x, true).first;
    auto mean = lin(a_prev.sqrt() * beta / beta_t, out.pred_original_sample, alpha.sqrt() * beta_prev / beta_t, x);
    if (t > 0) {
        if (!noise.defined() || noise.sizes() != x.sizes())
            throw Error("DDPM needs variance noise of the sample's shape at t > 0");
        auto var = torch::clamp(beta_prev / beta_t * beta, 1e-20);
        mean = mean + var.sqrt().to(x.options()) * noise;
    }
    out.prev_sample = mean;
    return out;
}

// ------------------------------------------------------------------ DPM-Solver++ 2M

DpmSolverScheduler::DpmSolverScheduler(const ScheduleConfig& c, FinalSigma final_sigma) : Scheduler(c), final_(final_sigma) {}

void DpmSolverScheduler::set_timesteps(int64_t n) {
    check_steps(n, c_);
    n_ = n;
    timesteps_ = linspace_timesteps(c_.num_train_timesteps, n);
    auto all = ((1.0 - ac_) / ac_).sqrt();  // float32, as diffusers
    std::vector<float> s;
    for (auto t : timesteps_) s.push_back(all[t].item<float>());
    s.push_back(final_ == FinalSigma::Zero ? 0.0f : all[0].item<float>());
    sigmas_ = torch::tensor(s, torch::kFloat);
    step_index_ = 0;
    lower_order_nums_ = 0;
    prev_x0_ = torch::Tensor();
}

StepOutput DpmSolverScheduler::step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& x, const torch::Tensor&) {
    if (n_ == 0) throw Error("DPM-Solver++: set_timesteps before step");
    if (step_index_ >= n_) throw Error("DPM-Solver++: more steps than set_timesteps chose");
    if (t != timesteps_[static_cast<size_t>(step_index_)])
        throw Error("DPM-Solver++ is multistep: step " + std::to_string(step_index_) + " expects timestep " +
                    std::to_string(timesteps_[static_cast<size_t>(step_index_)]) + ", got " + std::to_string(t));
    auto alpha_sigma = [](const torch::Tensor& sigma) {
        auto alpha = 1.0 / (sigma.pow(2) + 1.0).sqrt();
        return std::make_pair(alpha, sigma * alpha);
    };
    const auto k = step_index_;
    auto [alpha_s0, s_s0] = alpha_sigma(sigmas_[k]);
    StepOutput out;
    if (c_.prediction_type == "epsilon")
        out.pred_original_sample = (x - s_s0.to(x.options()) * model_output) / alpha_s0.to(x.options());
    else if (c_.prediction_type == "sample")
        out.pred_original_sample = model_output;
    else
        out.pred_original_sample = alpha_s0.to(x.options()) * x - s_s0.to(x.options()) * model_output;
    const auto& x0 = out.pred_original_sample;
    auto [alpha_t, s_t] = alpha_sigma(sigmas_[k + 1]);
    auto lambda = [](const torch::Tensor& alpha, const torch::Tensor& s) { return alpha.log() - s.log(); };
    auto lambda_t = lambda(alpha_t, s_t), lambda_s0 = lambda(alpha_s0, s_s0);
    auto h = lambda_t - lambda_s0;
    const bool last = k == n_ - 1;
    const bool lower_final = last && (n_ < 15 || final_ == FinalSigma::Zero);
    if (lower_order_nums_ < 1 || lower_final) {
        if (final_ == FinalSigma::Zero && last) {
            out.prev_sample = x0.clone();  // σ = 0: α = 1 and the update is x̂₀ itself
        } else {
            out.prev_sample = lin(s_t / s_s0, x, -(alpha_t * ((-h).exp() - 1.0)), x0);
        }
    } else {
        auto [alpha_s1, s_s1] = alpha_sigma(sigmas_[k - 1]);
        auto h0 = lambda_s0 - lambda(alpha_s1, s_s1);
        auto r0 = h0 / h;
        auto d1 = (1.0 / r0).to(x.options()) * (x0 - prev_x0_);
        auto c = alpha_t * ((-h).exp() - 1.0);
        out.prev_sample = lin(s_t / s_s0, x, -c, x0) - (0.5 * c).to(x.options()) * d1;
    }
    prev_x0_ = x0;
    if (lower_order_nums_ < 2) ++lower_order_nums_;
    ++step_index_;
    return out;
}

// ------------------------------------------------------------------ factory

PndmScheduler::PndmScheduler(const ScheduleConfig& c) : Scheduler(c) {}

void PndmScheduler::set_timesteps(int64_t n) {
    if (n < 2 || n > c_.num_train_timesteps)
        throw Error("PNDM takes 2 to " + std::to_string(c_.num_train_timesteps) + " steps, got " + std::to_string(n));
    n_ = n;
    const int64_t ratio = c_.num_train_timesteps / n;
    std::vector<int64_t> lead;
    for (int64_t i = 0; i < n; ++i) lead.push_back(i * ratio + c_.steps_offset);
    // [t_0 .. t_{n-2}, t_{n-2}, t_{n-1}] reversed.
    timesteps_.assign(lead.begin(), lead.end() - 1);
    timesteps_.push_back(lead[static_cast<size_t>(n - 2)]);
    timesteps_.push_back(lead.back());
    std::reverse(timesteps_.begin(), timesteps_.end());
    counter_ = 0;
    ets_.clear();
    cur_sample_ = torch::Tensor();
}

StepOutput PndmScheduler::step(const torch::Tensor& eps, int64_t t, const torch::Tensor& x, const torch::Tensor&) {
    if (n_ == 0) throw Error("PNDM: set_timesteps before step");
    if (c_.prediction_type == "sample") throw Error("PNDM takes epsilon or v_prediction models, not prediction_type sample");
    const int64_t ratio = c_.num_train_timesteps / n_;
    int64_t prev = t - ratio;
    if (counter_ != 1) {
        if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
        ets_.push_back(eps);
    } else {
        prev = t;
        t = t + ratio;
    }
    check_timestep(t, c_);
    torch::Tensor e = eps, sample = x;
    const size_t k = ets_.size();
    if (k == 1 && counter_ == 0) {
        cur_sample_ = x;
    } else if (k == 1 && counter_ == 1) {
        e = (eps + ets_[0]) / 2;
        sample = cur_sample_;
        cur_sample_ = torch::Tensor();
    } else if (k == 2) {
        e = (3 * ets_[1] - ets_[0]) / 2;
    } else if (k == 3) {
        e = (23 * ets_[2] - 16 * ets_[1] + 5 * ets_[0]) / 12;
    } else {
        e = (1.0 / 24) * (55 * ets_[3] - 59 * ets_[2] + 37 * ets_[1] - 9 * ets_[0]);
    }
    // diffusers' _get_prev_sample, with its float32 0-dim coefficients.
    auto a = ac_[t];
    auto a_prev = prev >= 0 ? ac_[prev] : (c_.set_alpha_to_one ? f32(1.0) : ac_[0]);
    auto b = 1.0 - a, b_prev = 1.0 - a_prev;
    if (c_.prediction_type == "v_prediction") e = a.pow(0.5) * e + b.pow(0.5) * sample;  // ε from v, as diffusers
    auto sample_coeff = (a_prev / a).pow(0.5);
    auto denom = a * b_prev.pow(0.5) + (a * b * a_prev).pow(0.5);
    StepOutput out;
    out.prev_sample = sample_coeff * sample - (a_prev - a) * e / denom;
    ++counter_;
    return out;
}

EulerScheduler::EulerScheduler(const ScheduleConfig& c) : Scheduler(c) {}

void EulerScheduler::set_timesteps(int64_t n) {
    if (n < 1 || n > c_.num_train_timesteps)
        throw Error("Euler takes 1 to " + std::to_string(c_.num_train_timesteps) + " steps, got " + std::to_string(n));
    n_ = n;
    const int64_t T = c_.num_train_timesteps;
    // numpy: linspace(0, T-1, n) in float64, cast to float32, reversed.
    std::vector<float> ts(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        const double step = n > 1 ? static_cast<double>(T - 1) / static_cast<double>(n - 1) : 0.0;
        double v = n > 1 && i == n - 1 ? static_cast<double>(T - 1) : static_cast<double>(i) * step;
        ts[static_cast<size_t>(n - 1 - i)] = static_cast<float>(v);
    }
    // σ over the training steps in float32, then numpy.interp in float64.
    auto sig = ((1.0 - ac_) / ac_).pow(0.5).to(torch::kDouble).contiguous();
    const double* sp = sig.data_ptr<double>();
    std::vector<float> sigmas;
    timesteps_.clear();
    for (float tf : ts) {
        const double x = tf;
        const int64_t j = std::min<int64_t>(static_cast<int64_t>(std::floor(x)), T - 1);
        double v;
        if (j >= T - 1 || x == static_cast<double>(j))
            v = sp[j];
        else
            v = (sp[j + 1] - sp[j]) / 1.0 * (x - static_cast<double>(j)) + sp[j];
        sigmas.push_back(static_cast<float>(v));
        timesteps_.push_back(static_cast<int64_t>(std::llround(x)));
    }
    sigmas.push_back(0.0f);
    sigmas_ = torch::tensor(sigmas, torch::kFloat);
    model_t_ = torch::tensor(ts, torch::kFloat);
    step_index_ = 0;
}

double EulerScheduler::init_noise_sigma() const {
    if (!sigmas_.defined()) throw Error("Euler: set_timesteps before init_noise_sigma");
    return sigmas_.max().item<double>();  // linspace spacing: σ_max itself
}

torch::Tensor EulerScheduler::scale_model_input(const torch::Tensor& sample, size_t k) const {
    auto sigma = sigmas_[static_cast<int64_t>(k)];
    return sample / (sigma.pow(2) + 1).pow(0.5);
}

StepOutput EulerScheduler::step(const torch::Tensor& eps, int64_t, const torch::Tensor& x, const torch::Tensor&) {
    if (n_ == 0) throw Error("Euler: set_timesteps before step");
    if (step_index_ >= n_) throw Error("Euler: more steps than set_timesteps chose");
    auto sigma = sigmas_[step_index_];
    auto sigma_hat = sigma * 1.0;  // s_churn 0: γ = 0
    auto sample = x.to(torch::kFloat);
    StepOutput out;
    if (c_.prediction_type == "epsilon")
        out.pred_original_sample = sample - sigma_hat * eps;
    else if (c_.prediction_type == "sample")
        out.pred_original_sample = eps.to(torch::kFloat);
    else
        out.pred_original_sample = eps * (-sigma / (sigma.pow(2) + 1).pow(0.5)) + sample / (sigma.pow(2) + 1);
    auto derivative = (sample - out.pred_original_sample) / sigma_hat;
    auto dt = sigmas_[step_index_ + 1] - sigma_hat;
    out.prev_sample = (sample + derivative * dt).to(eps.scalar_type());
    ++step_index_;
    return out;
}

std::vector<std::string> scheduler_names() {
    return {"dpm++2m", "dpm++2m-zero", "ddim", "ddim-trailing", "pndm", "euler", "ddpm"};
}

std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const ScheduleConfig& c) {
    if (name == "ddim") return std::make_unique<DdimScheduler>(c, "leading");
    if (name == "ddim-trailing") return std::make_unique<DdimScheduler>(c, "trailing");
    if (name == "ddpm") return std::make_unique<DdpmScheduler>(c);
    if (name == "pndm") return std::make_unique<PndmScheduler>(c);
    if (name == "euler") return std::make_unique<EulerScheduler>(c);
    if (name == "dpm++2m") return std::make_unique<DpmSolverScheduler>(c, DpmSolverScheduler::FinalSigma::TimestepZero);
    if (name == "dpm++2m-zero") return std::make_unique<DpmSolverScheduler>(c, DpmSolverScheduler::FinalSigma::Zero);
    throw Error("unknown scheduler '" + name + "' (expected " + join_names(scheduler_names()) + ")");
}

torch::Tensor guidance(const torch::Tensor& eps_uncond, const torch::Tensor& eps_cond, double scale) {
    return eps_uncond + scale * (eps_cond - eps_uncond);
}


std::string schedule_config_json(const ScheduleConfig& c) {
    nlohmann::ordered_json j = {{"_class_name", "PNDMScheduler"},
                                {"beta_end", c.beta_end},
                                {"beta_schedule", c.beta_schedule},
                                {"beta_start", c.beta_start},
                                {"clip_sample", c.clip_sample},
                                {"num_train_timesteps", c.num_train_timesteps},
                                {"prediction_type", c.prediction_type},
                                {"set_alpha_to_one", c.set_alpha_to_one},
                                {"skip_prk_steps", true},
                                {"steps_offset", c.steps_offset},
                                {"trained_betas", nullptr}};
    return j.dump(2) + "\n";
}

}  // namespace hra::diffusion
