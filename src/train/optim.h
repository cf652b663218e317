// AdamW (PyTorch's update, decoupled weight decay) and the learning-rate
// schedules of Hugging Face's trainer (libtorch ships neither in a form whose
// state can be saved and restored bit for bit).
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "io/safetensors.h"

namespace hra {

struct AdamWOptions {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
public:
    AdamW(std::vector<at::Tensor> params, AdamWOptions options);
    // One update with learning rate lr from the parameters' .grad() (missing grads skip).
    void step(double lr);
    void zero_grad();
    int64_t steps() const { return steps_; }
    // exp_avg.<i>, exp_avg_sq.<i> (and "step"); load_state checks shapes.
    io::NamedTensors state() const;
    void load_state(const io::SafetensorsFile& file);

private:
    std::vector<at::Tensor> params_, exp_avg_, exp_avg_sq_;
    AdamWOptions o_;
    int64_t steps_ = 0;
};

// An exponential moving average of the trained weights, as diffusers' EMAModel
// (train_text_to_image --use_ema): after optimizer step k (1-based) each shadow
// s becomes d·s + (1 − d)·p with d = min(decay, k / (9 + k)).
class Ema {
public:
    Ema(std::vector<at::Tensor> params, double decay);
    void update(int64_t step);
    // Exchanges the parameters' values with the averages (twice: back as before).
    void swap();
    // Checkpoints hold the averages as the model's weights (what generation
    // loads) and the raw weights as ema.raw.<i> beside the optimizer state: the
    // averages are the parameters' values when Ema is built on resume, and
    // load_raw puts the raw weights back into the parameters.
    io::NamedTensors raw_state() const;
    void load_raw(const io::SafetensorsFile& file);

private:
    std::vector<at::Tensor> params_, shadow_;
    double decay_;
};

enum class Schedule { Constant, Linear, Cosine };
Schedule parse_schedule(const std::string& name);

// Hugging Face's LambdaLR schedules: step counts optimizer steps from 0;
// warmup ramps linearly from 0, then constant / linear decay to 0 / half cosine to 0.
double learning_rate(Schedule kind, double base_lr, int64_t step, int64_t total_steps, int64_t warmup_steps);

// torch.nn.utils.clip_grad_norm_: scales grads so their global L2 norm is at
// most max_norm (<= 0: no clipping); returns the norm before clipping.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace hra
