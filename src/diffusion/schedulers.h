// Stable Diffusion's noise schedule and samplers, as diffusers computes them
// (../shared/docs/DIFFUSION.md §2; checked against diffusers v0.25.1 by
// sd_parity): the scaled-linear betas and float32 alphas_cumprod, add_noise for
// training, and the DDPM, DDIM (eta 0) and DPM-Solver++ 2M steps with their
// timestep spacings. Every scalar is a float32 0-dim tensor, as in diffusers,
// so results agree to rounding.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace hra::diffusion {

// The keys of a diffusers scheduler_config.json that decide the schedule
// (SD 1.5 ships a PNDMScheduler config; every sampler is built from it).
struct ScheduleConfig {
    int64_t num_train_timesteps = 1000;
    double beta_start = 0.0001, beta_end = 0.02;
    std::string beta_schedule = "linear";  // linear or scaled_linear
    // What the model predicts: epsilon (the noise), v_prediction (v = √ᾱ·ε − √(1−ᾱ)·x₀,
    // SD 2.x's 768 px models) or sample (x₀); every sampler but PNDM takes all three (PNDM: not sample).
    std::string prediction_type = "epsilon";
    int64_t steps_offset = 0;
    bool set_alpha_to_one = true;
    // DDIM and DDPM clamp x̂₀ to ±clip_sample_range (diffusers' pixel-space default);
    // the other samplers have no such option in diffusers and ignore it.
    bool clip_sample = false;
    double clip_sample_range = 1.0;
};
// Errors name the file and key; unsupported values (thresholding, trained_betas,
// other beta schedules and prediction types) are refused rather than ignored.
ScheduleConfig parse_schedule_config(const std::string& json_text, const std::string& source);
ScheduleConfig read_schedule_config(const std::string& path);  // a file, or a folder's scheduler/scheduler_config.json
// A scheduler_config.json for `c` (a PNDMScheduler config, as SD ships; every sampler is built from it).
std::string schedule_config_json(const ScheduleConfig& c);

// betas [T] and alphas_cumprod [T], float32.
torch::Tensor betas(const ScheduleConfig& c);
torch::Tensor alphas_cumprod(const ScheduleConfig& c);
// sqrt(ac[t])·x0 + sqrt(1 − ac[t])·noise, t one timestep per batch row.
torch::Tensor add_noise(const torch::Tensor& alphas_cumprod, const torch::Tensor& x0, const torch::Tensor& noise,
                        const torch::Tensor& timesteps);
// What a model of `prediction_type` is trained to output: the noise (epsilon),
// x0 (sample), or diffusers' get_velocity sqrt(ac[t])·noise − sqrt(1 − ac[t])·x0.
torch::Tensor training_target(const std::string& prediction_type, const torch::Tensor& alphas_cumprod, const torch::Tensor& x0,
                              const torch::Tensor& noise, const torch::Tensor& timesteps);

struct StepOutput {
    torch::Tensor prev_sample;
    torch::Tensor pred_original_sample;  // x̂₀
};

class Scheduler {
public:
    explicit Scheduler(const ScheduleConfig& c);
    virtual ~Scheduler() = default;
    virtual std::string name() const = 0;
    // Chooses N inference timesteps (and resets any multistep state).
    virtual void set_timesteps(int64_t n) = 0;
    const std::vector<int64_t>& timesteps() const { return timesteps_; }
    // One denoising step from `sample` at timestep t with the model's ε.
    // `noise`: the variance noise of stochastic samplers (DDPM), ignored by the others.
    virtual StepOutput step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample,
                            const torch::Tensor& noise = {}) = 0;
    // The timestep the model sees at step k (Euler's are fractional: float32).
    virtual torch::Tensor model_timestep(size_t k) const { return torch::tensor(timesteps_.at(k), torch::kLong); }
    // The initial noise's scale and the model input at step k (Euler: σ-scaled).
    virtual double init_noise_sigma() const { return 1.0; }
    virtual torch::Tensor scale_model_input(const torch::Tensor& sample, size_t) const { return sample; }
    const torch::Tensor& alphas_cumprod() const { return ac_; }
    const ScheduleConfig& config() const { return c_; }

protected:
    // x̂₀ and ε̂ from the model output at timestep t (as diffusers' DDIM computes
    // them for each prediction type), x̂₀ clamped when clip_sample.
    std::pair<torch::Tensor, torch::Tensor> x0_and_eps(const torch::Tensor& model_output, int64_t t, const torch::Tensor& x,
                                                       bool clip) const;
    ScheduleConfig c_;
    torch::Tensor ac_;  // float32 [T]
    std::vector<int64_t> timesteps_;
    int64_t n_ = 0;
};

// "leading" spacing: t_k = (N−1−k)·(T/N) + steps_offset.
std::vector<int64_t> leading_timesteps(int64_t train_steps, int64_t n, int64_t offset);
// "trailing" spacing: round(arange(T, 0, −T/N)) − 1.
std::vector<int64_t> trailing_timesteps(int64_t train_steps, int64_t n);
// "linspace" spacing: round(linspace(0, T−1, N+1))[::-1][:-1] (numpy rounding: half to even).
std::vector<int64_t> linspace_timesteps(int64_t train_steps, int64_t n);

// DDIM with eta 0 (deterministic): leading (default) or trailing spacing; the
// last step uses ac[0] unless set_alpha_to_one.
class DdimScheduler : public Scheduler {
public:
    explicit DdimScheduler(const ScheduleConfig& c, std::string spacing = "leading");
    std::string name() const override { return "ddim"; }
    void set_timesteps(int64_t n) override;
    StepOutput step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample,
                    const torch::Tensor& noise = {}) override;

private:
    std::string spacing_;
};

// DDPM ancestral sampling, fixed_small variance; the caller gives the noise
// (a seeded generator, or a reference run's).
class DdpmScheduler : public Scheduler {
public:
    explicit DdpmScheduler(const ScheduleConfig& c);
    std::string name() const override { return "ddpm"; }
    void set_timesteps(int64_t n) override;
    StepOutput step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample,
                    const torch::Tensor& noise = {}) override;
};

// DPM-Solver++ 2M (midpoint), linspace spacing, lower_order_final. The final
// sigma: that of t = 0 with a second-order last step (diffusers 0.17.1 .. 0.25,
// what the seed ran; default), or 0 with a first-order last step that returns
// x̂₀ (diffusers >= 0.26, final_sigmas_type "zero").
class DpmSolverScheduler : public Scheduler {
public:
    enum class FinalSigma { TimestepZero, Zero };
    explicit DpmSolverScheduler(const ScheduleConfig& c, FinalSigma final_sigma = FinalSigma::TimestepZero);
    std::string name() const override { return final_ == FinalSigma::Zero ? "dpm++2m-zero" : "dpm++2m"; }
    void set_timesteps(int64_t n) override;
    StepOutput step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample,
                    const torch::Tensor& noise = {}) override;
    const torch::Tensor& sigmas() const { return sigmas_; }  // float32 [N+1]

private:
    FinalSigma final_;
    torch::Tensor sigmas_;
    int64_t step_index_ = 0, lower_order_nums_ = 0;
    torch::Tensor prev_x0_;
};

// PNDM as SD 1.5 ships it (skip_prk_steps: pseudo linear multistep only):
// N+1 model calls on leading timesteps with the second-to-last repeated
// (981, 961, 961, 941, ..., 1 for 50), the two calls at the repeated step
// averaged, then Adams–Bashforth combinations of up to four outputs.
class PndmScheduler : public Scheduler {
public:
    explicit PndmScheduler(const ScheduleConfig& c);
    std::string name() const override { return "pndm"; }
    void set_timesteps(int64_t n) override;
    StepOutput step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample,
                    const torch::Tensor& noise = {}) override;

private:
    int64_t counter_ = 0;
    std::vector<torch::Tensor> ets_;
    torch::Tensor cur_sample_;
};

// Euler (EulerDiscreteScheduler, s_churn 0): linspace timesteps (fractional),
// σ = sqrt((1 − ᾱ)/ᾱ) interpolated linearly at them, model input x/sqrt(σ²+1),
// x ← x + (σ_next − σ)·ε; the initial noise is scaled by σ_max.
class EulerScheduler : public Scheduler {
public:
    explicit EulerScheduler(const ScheduleConfig& c);
    std::string name() const override { return "euler"; }
    void set_timesteps(int64_t n) override;
    StepOutput step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample,
                    const torch::Tensor& noise = {}) override;
    torch::Tensor model_timestep(size_t k) const override { return model_t_[static_cast<int64_t>(k)]; }
    double init_noise_sigma() const override;
    torch::Tensor scale_model_input(const torch::Tensor& sample, size_t k) const override;
    const torch::Tensor& sigmas() const { return sigmas_; }  // float32 [N+1]

private:
    torch::Tensor sigmas_, model_t_;
    int64_t step_index_ = 0;
};

// "ddim", "ddim-trailing", "ddpm", "dpm++2m", "dpm++2m-zero", "pndm", "euler"; hra::Error naming the choices otherwise.
std::unique_ptr<Scheduler> make_scheduler(const std::string& name, const ScheduleConfig& config);
std::vector<std::string> scheduler_names();

// Classifier-free guidance: ε_u + g·(ε_c − ε_u).
torch::Tensor guidance(const torch::Tensor& eps_uncond, const torch::Tensor& eps_cond, double scale);

}  // namespace hra::diffusion
