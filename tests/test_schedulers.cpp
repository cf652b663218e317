// Schedulers beyond the diffusers trajectories of sd_parity: spacings worked
// out by hand from DIFFUSION.md §2, the ≥0.26 DPM final step, guidance, and
// bad configurations.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/error.h"
#include "diffusion/schedulers.h"

using namespace hra::diffusion;

namespace {

ScheduleConfig sd15() {
    return parse_schedule_config(R"({"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000, "set_alpha_to_one": false,
        "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null})",
                                 "scheduler_config.json");
}

}  // namespace

TEST(Schedulers, SpacingsAsDiffusionMdGivesThem) {
    // DDIM leading, 50 steps: 981, 961, ..., 1; trailing: 999, 979, ..., 19.
    auto lead = leading_timesteps(1000, 50, 1);
    ASSERT_EQ(lead.size(), 50u);
    EXPECT_EQ(lead.front(), 981);
    EXPECT_EQ(lead.back(), 1);
    auto trail = trailing_timesteps(1000, 50);
    ASSERT_EQ(trail.size(), 50u);
    EXPECT_EQ(trail.front(), 999);
    EXPECT_EQ(trail.back(), 19);
    // DPM linspace, 25 steps: ..., 519, 480, 440, ... (numpy rounds 479.52 up and 519.48 down).
    auto lin = linspace_timesteps(1000, 25);
    ASSERT_EQ(lin.size(), 25u);
    EXPECT_EQ(lin[0], 999);
    EXPECT_EQ(lin[12], 519);
    EXPECT_EQ(lin[13], 480);
    EXPECT_EQ(lin[24], 40);
    // ᾱ₀ and ᾱ₉₉₉ of SD 1.5 (DIFFUSION.md §2).
    auto ac = alphas_cumprod(sd15());
    EXPECT_NEAR(ac[0].item<double>(), 0.99914998, 1e-8);
    EXPECT_NEAR(ac[999].item<double>(), 0.0046600960, 1e-9);
}

TEST(Schedulers, DpmFinalSigmaZeroEndsAtTheDenoisedSample) {
    auto cfg = sd15();
    DpmSolverScheduler zero(cfg, DpmSolverScheduler::FinalSigma::Zero), t0(cfg);
    zero.set_timesteps(10);
    t0.set_timesteps(10);
    EXPECT_EQ(zero.sigmas()[10].item<float>(), 0.0f);
    EXPECT_GT(t0.sigmas()[10].item<float>(), 0.0f);
    torch::manual_seed(0);
    auto x = torch::randn({1, 4, 4, 4});
    StepOutput a, b;
    for (int64_t k = 0; k < 10; ++k) {
        auto eps = torch::randn({1, 4, 4, 4});
        a = zero.step(eps, zero.timesteps()[static_cast<size_t>(k)], x);
        b = t0.step(eps, t0.timesteps()[static_cast<size_t>(k)], x);
        if (k < 9) {
            EXPECT_TRUE(a.prev_sample.equal(b.prev_sample)) << k;  // the same until the last step
        }
        x = a.prev_sample;
    }
    EXPECT_TRUE(a.prev_sample.equal(a.pred_original_sample));  // σ = 0: the last step returns x̂₀
    // Multistep: a step out of order is refused.
    zero.set_timesteps(10);
    EXPECT_THROW(zero.step(x, 5, x), hra::Error);
}

TEST(Schedulers, GuidanceAndBadInput) {
    auto u = torch::tensor({1.0, 2.0}), c = torch::tensor({3.0, 0.0});
    EXPECT_TRUE(guidance(u, c, 7.5).allclose(torch::tensor({16.0, -13.0})));  // 1 + 7.5·2, 2 + 7.5·(−2)
    EXPECT_THROW(make_scheduler("euler_a", sd15()), hra::Error);
    EXPECT_THROW(parse_schedule_config(R"({"prediction_type": "x0"})", "x"), hra::Error);
    EXPECT_THROW(parse_schedule_config(R"({"thresholding": true})", "x"), hra::Error);
    EXPECT_THROW(parse_schedule_config(R"({"clip_sample": true, "clip_sample_range": 0})", "x"), hra::Error);
    auto sample_cfg = parse_schedule_config(R"({"prediction_type": "sample"})", "x");
    auto pndm = make_scheduler("pndm", sample_cfg);  // diffusers' PNDM takes epsilon and v_prediction only
    pndm->set_timesteps(10);
    auto z = torch::zeros({1, 4, 2, 2});
    EXPECT_THROW(pndm->step(z, pndm->timesteps()[0], z), hra::Error);
    EXPECT_THROW(parse_schedule_config(R"({"beta_schedule": "sigmoid"})", "x"), hra::Error);  // not in SD's configs
    EXPECT_NO_THROW(parse_schedule_config(R"({"beta_schedule": "squaredcos_cap_v2"})", "x"));
    EXPECT_THROW(parse_schedule_config(R"({"trained_betas": [0.1]})", "x"), hra::Error);
    EXPECT_NO_THROW(parse_schedule_config(R"({"lambda_min_clipped": -Infinity})", "x"));  // diffusers writes this
    auto ddpm = make_scheduler("ddpm", sd15());
    EXPECT_THROW(ddpm->set_timesteps(0), hra::Error);
    ddpm->set_timesteps(50);
    auto x = torch::zeros({1, 4, 2, 2});
    EXPECT_THROW(ddpm->step(x, 981, x), hra::Error);  // t > 0 needs the variance noise
}
