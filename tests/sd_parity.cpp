// Stable Diffusion parity against the reference libraries: every subfolder of
// $HRA_SD_FIXTURES (default: the repo's tests/fixtures/sd) is recognised by the
// `model_class` (or `classes`) of its io.safetensors metadata and every stored
// output, hidden state and gradient is compared. A folder this program cannot
// recognise is a failure, as is finding no folder: nothing is skipped silently.
//
// Recognised: CLIPTextModel (transformers v4.36.2), UNet2DConditionModel and
// AutoencoderKL (diffusers v0.25.1) in float64 at 1e-13 and float32 at 1e-5
// (UNet gradients 2e-5); the DDPM, DDIM, DPM-Solver++, PNDM and Euler
// schedulers at 1e-6; the tiny StableDiffusionPipeline (uint8 pixels exact in
// float64, one level allowed in float32); and a single file made by diffusers'
// conversion script (every tensor exact, both directions). Measured values are
// in README.md ("Stable Diffusion").
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "diffusion/pipeline.h"
#include "diffusion/schedulers.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/autoencoder_kl.h"
#include "models/clip_text.h"
#include "models/model_weights.h"
#include "models/sd_checkpoint.h"
#include "models/unet_2d_condition.h"
#include "test_util.h"

namespace {

using hra::io::SafetensorsFile;
using hra::test::rel_err;

// A fixture's tensors, remembering which were read: report() fails on the rest.
struct Tracked {
    explicit Tracked(const SafetensorsFile& f) : io(f) {}
    torch::Tensor operator()(const std::string& name) {
        used.insert(name);
        return io.tensor(name);
    }
    void report(const std::string& tag, hra::test::ParityReport& rep) const {
        for (const auto& name : io.names())
            if (!used.count(name)) rep.check(tag + "unchecked tensor " + name, 1.0, 0);
    }
    const SafetensorsFile& io;
    std::set<std::string> used;
};

// Compares every fixture tensor but `inputs` with `ours` (a "loss" scalar
// relative to `loss_scale`: the sum cancels), grouped by `group_of`, and
// reports each group at `tol_of(group)`; a missing tensor or group fails.
void compare_all(const SafetensorsFile& io, const std::map<std::string, torch::Tensor>& ours, const std::set<std::string>& inputs,
                 const std::vector<std::string>& needed, const std::string& tag,
                 const std::function<std::string(const std::string&)>& group_of,
                 const std::function<double(const std::string&)>& tol_of, hra::test::ParityReport& rep, double loss = 0,
                 double loss_scale = 0) {
    std::map<std::string, double> group;
    std::map<std::string, int> count;
    for (const auto& name : io.names()) {
        if (inputs.count(name)) continue;
        auto ref = io.tensor(name);
        double err = 1.0;
        if (name == "loss" && loss_scale > 0) {
            err = std::abs(loss - ref.item<double>()) / loss_scale;
        } else {
            auto it = ours.find(name);
            if (it == ours.end() || !it->second.defined()) {
                rep.check(tag + "unknown or missing tensor " + name, 1.0, 0);
                continue;
            }
            err = it->second.sizes() == ref.sizes() ? rel_err(it->second, ref) : 1.0;
        }
        const std::string g = group_of(name);
        group[g] = std::max(group[g], err);
        ++count[g];
    }
    for (const auto& n : needed)
        if (!count.count(n)) rep.check(tag + "the fixture has no " + n, 1.0, 0);
    for (const auto& [g, err] : group) rep.check(tag + g + " (" + std::to_string(count[g]) + ")", err, tol_of(g));
}

void check_clip_text(const std::string& dir, const SafetensorsFile& io, c10::ScalarType dtype, double tol,
                     hra::test::ParityReport& rep) {
    const std::string tag = std::string(dtype == torch::kDouble ? "float64 " : "float32 ") + "CLIPTextModel ";
    auto loaded = hra::load_clip_text(dir, dtype);
    auto& model = *loaded.model;
    for (auto& p : model.parameters()) p.set_requires_grad(true);
    auto out = model.forward(io.tensor("input_ids"));
    auto g1 = io.tensor("cotangent.last_hidden_state").to(dtype), g2 = io.tensor("cotangent.pooler_output").to(dtype);
    auto loss = (out.last_hidden_state * g1).sum() + (out.pooler_output * g2).sum();
    loss.backward();

    std::map<std::string, torch::Tensor> ours;
    ours["last_hidden_state"] = out.last_hidden_state;
    ours["pooler_output"] = out.pooler_output;
    for (size_t i = 0; i < out.hidden_states.size(); ++i) ours["hidden_states." + std::to_string(i)] = out.hidden_states[i];
    for (auto& [name, p] : hra::unique_named_parameters(model)) ours["grad." + name] = p.grad();
    const double scale = ((out.last_hidden_state * g1).abs().sum() + (out.pooler_output * g2).abs().sum()).item<double>();
    compare_all(io, ours, {"input_ids", "cotangent.last_hidden_state", "cotangent.pooler_output"},
                {"last_hidden_state", "pooler_output", "hidden_states", "loss", "grad"}, tag,
                [](const std::string& n) { return n.substr(0, n.find('.')); }, [&](const std::string&) { return tol; }, rep,
                loss.item<double>(), scale);
}

// DDPM, DDIM and DPM-Solver++ 2M from SD 1.5's scheduler config: schedules,
// timesteps (exact), add_noise, and every step of the stored trajectories, each
// fed the stored input sample (so that errors do not accumulate).
void check_schedulers(const std::string& dir, const SafetensorsFile& io, double tol, hra::test::ParityReport& rep) {
    namespace d = hra::diffusion;
    const auto cfg = d::read_schedule_config((std::filesystem::path(dir) / "config.json").string());
    Tracked ref(io);
    auto ids = [](const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); };
    rep.check("schedulers betas", rel_err(d::betas(cfg), ref("betas")), tol);
    rep.check("schedulers alphas_cumprod", rel_err(d::alphas_cumprod(cfg), ref("alphas_cumprod")), tol);
    rep.check("schedulers add_noise",
              rel_err(d::add_noise(d::alphas_cumprod(cfg), ref("add_noise.original_samples"), ref("add_noise.noise"),
                                   ref("add_noise.timesteps")),
                      ref("add_noise.noisy_samples")),
              tol);
    struct Run {
        std::string prefix, scheduler;
        int64_t steps;
    };
    for (const Run& run : {Run{"ddim", "ddim", 50}, Run{"ddpm", "ddpm", 50}, Run{"dpm", "dpm++2m", 25}}) {
        auto sch = d::make_scheduler(run.scheduler, cfg);
        sch->set_timesteps(run.steps);
        const bool exact = ids(sch->timesteps()).equal(ref(run.prefix + ".timesteps"));
        rep.check(run.prefix + " timesteps (exact)", exact ? 0.0 : 1.0, 0);
        if (run.prefix == "dpm")
            rep.check("dpm sigmas", rel_err(dynamic_cast<d::DpmSolverScheduler&>(*sch).sigmas(), ref("dpm.sigmas")), tol);
        double prev_err = 0, x0_err = 0;
        int x0_count = 0;
        for (int64_t k = 0; k < run.steps; ++k) {
            const std::string K = std::to_string(k);
            auto sample = k == 0 ? ref(run.prefix + ".sample.0") : io.tensor(run.prefix + ".prev_sample." + std::to_string(k - 1));
            const std::string noise_name = run.prefix + ".variance_noise." + K;
            auto noise = io.contains(noise_name) ? ref(noise_name) : torch::Tensor();
            auto out = sch->step(ref(run.prefix + ".model_output." + K), sch->timesteps()[static_cast<size_t>(k)], sample, noise);
            prev_err = std::max(prev_err, rel_err(out.prev_sample, ref(run.prefix + ".prev_sample." + K)));
            const std::string x0_name = run.prefix + ".pred_original_sample." + K;
            if (io.contains(x0_name)) {
                x0_err = std::max(x0_err, rel_err(out.pred_original_sample, ref(x0_name)));
                ++x0_count;
            }
        }
        rep.check(run.prefix + " prev_sample (" + std::to_string(run.steps) + " steps)", prev_err, tol);
        if (x0_count) rep.check(run.prefix + " pred_original_sample (" + std::to_string(x0_count) + ")", x0_err, tol);
    }
    ref.report("schedulers: ", rep);
}

// AutoencoderKL: the latent distribution and every stored activation of encode,
// and decode of the stored latent_mean (so the decoder is checked on its own).
void check_vae(const std::string& dir, const SafetensorsFile& io, c10::ScalarType dtype, double tol,
               hra::test::ParityReport& rep) {
    const std::string tag = std::string(dtype == torch::kDouble ? "float64 " : "float32 ") + "AutoencoderKL ";
    auto loaded = hra::load_vae(dir, dtype);
    torch::NoGradGuard ng;
    std::map<std::string, torch::Tensor> acts;
    auto dist = loaded.model->encode(io.tensor("image").to(dtype), &acts);
    auto decoded = loaded.model->decode(io.tensor("latent_mean").to(dtype), &acts);
    std::map<std::string, torch::Tensor> ours = {
        {"latent_mean", dist.mean}, {"latent_logvar", dist.logvar}, {"latent_std", dist.std}, {"decoded", decoded}};
    for (auto& [k, v] : acts) ours["act." + k] = v;
    compare_all(io, ours, {"image"}, {"latent_mean", "latent_logvar", "latent_std", "decoded", "activations"}, tag,
                [](const std::string& n) { return n.rfind("act.", 0) == 0 ? std::string("activations") : n; },
                [&](const std::string&) { return tol; }, rep);
}

// UNet2DConditionModel: the predicted noise, every stored activation, the loss
// sum(out · cotangent) and the stored input and parameter gradients.
void check_unet(const std::string& dir, const SafetensorsFile& io, c10::ScalarType dtype, double tol, double grad_tol,
                hra::test::ParityReport& rep) {
    const std::string tag = std::string(dtype == torch::kDouble ? "float64 " : "float32 ") + "UNet2DConditionModel ";
    auto loaded = hra::load_unet(dir, dtype);
    auto& model = *loaded.model;
    for (auto& p : model.parameters()) p.set_requires_grad(true);
    auto sample = io.tensor("sample").to(dtype).requires_grad_(true);
    auto context = io.tensor("encoder_hidden_states").to(dtype).requires_grad_(true);
    std::map<std::string, torch::Tensor> acts;
    auto out = model.forward(sample, io.tensor("timestep"), context, {}, &acts);
    auto g = io.tensor("cotangent").to(dtype);
    auto loss = (out * g).sum();
    loss.backward();
    std::map<std::string, torch::Tensor> ours = {{"out", out}, {"grad.sample", sample.grad()},
                                                 {"grad.encoder_hidden_states", context.grad()}};
    for (auto& [k, v] : acts) ours["act." + k] = v;
    for (auto& [name, p] : hra::unique_named_parameters(model)) ours["grad." + name] = p.grad();
    compare_all(
        io, ours, {"sample", "timestep", "encoder_hidden_states", "cotangent"}, {"out", "loss", "activations", "gradients"}, tag,
        [](const std::string& n) {
            return n.rfind("act.", 0) == 0 ? std::string("activations") : n.rfind("grad.", 0) == 0 ? std::string("gradients") : n;
        },
        [&](const std::string& g) { return g == "gradients" || g == "loss" ? grad_tol : tol; }, rep, loss.item<double>(),
        (out * g).abs().sum().item<double>());
}

// The tiny pipeline (diffusers' StableDiffusionPipeline with openai/CLIP's
// tokenizer and text transformer): token ids, prompt embeddings, the latents
// after every step from the stored initial latents, the float image and the
// uint8 pixels; also that the run's seed gives the stored initial latents.
void check_pipeline(const std::string& dir, const SafetensorsFile& io, c10::ScalarType dtype, double tol, int64_t pixel_tol,
                    hra::test::ParityReport& rep) {
    namespace d = hra::diffusion;
    const std::string tag = std::string(dtype == torch::kDouble ? "float64 " : "float32 ") + "pipeline ";
    auto sd = d::load_stable_diffusion(dir, dtype);
    const auto runs = nlohmann::json::parse(io.metadata().at("runs"));
    Tracked ref(io);
    for (auto it = runs.begin(); it != runs.end(); ++it) {
        const std::string run = it.key() + " ";
        const auto& r = it.value();
        d::GenerateOptions o;
        o.prompt = r.at("prompt");
        o.negative_prompt = r.at("negative_prompt");
        o.steps = r.at("steps");
        o.guidance = r.at("guidance");
        o.scheduler = r.at("scheduler") == "DDIMScheduler" ? "ddim" : "dpm++2m";
        o.seed = r.at("latent_seed");
        o.latents = ref(it.key() + ".latents.init");
        const auto ids = sd.tokenizer->encode_padded(o.prompt).ids, neg = sd.tokenizer->encode_padded(o.negative_prompt).ids;
        rep.check(tag + run + "input ids (exact)", torch::tensor(ids).equal(ref(it.key() + ".input_ids")[0]) ? 0.0 : 1.0, 0);
        rep.check(tag + run + "negative ids (exact)",
                  torch::tensor(neg).equal(ref(it.key() + ".negative_input_ids")[0]) ? 0.0 : 1.0, 0);
        std::vector<torch::Tensor> steps;
        std::vector<int64_t> timesteps;
        o.on_step = [&](int64_t, int64_t t, const torch::Tensor& x) {
            steps.push_back(x.clone());
            timesteps.push_back(t);
        };
        auto g = d::generate(sd, o);
        rep.check(tag + run + "prompt_embeds", rel_err(g.prompt_embeds, ref(it.key() + ".prompt_embeds")), tol);
        rep.check(tag + run + "negative_prompt_embeds", rel_err(g.negative_prompt_embeds, ref(it.key() + ".negative_prompt_embeds")),
                  tol);
        rep.check(tag + run + "timesteps (exact)", torch::tensor(timesteps).equal(ref(it.key() + ".timesteps")) ? 0.0 : 1.0, 0);
        double lat = steps.size() == static_cast<size_t>(o.steps) ? 0.0 : 1.0;
        for (size_t k = 0; k < steps.size(); ++k)
            lat = std::max(lat, rel_err(steps[k], ref(it.key() + ".latents." + std::to_string(k))));
        rep.check(tag + run + "latents after each step", lat, tol);
        // diffusers hands out the image as float32 (pt_to_numpy): compare it so.
        rep.check(tag + run + "image (float32)",
                  rel_err(g.image.to(torch::kFloat).to(torch::kDouble).permute({0, 2, 3, 1}), ref(it.key() + ".image_float")), tol);
        const auto px = ref(it.key() + ".image");
        const int64_t worst = (g.pixels.to(torch::kLong) - px.to(torch::kLong)).abs().max().item<int64_t>();
        rep.check(tag + run + "uint8 pixels (max level difference)", static_cast<double>(worst), static_cast<double>(pixel_tol));
        if (dtype == torch::kDouble) {  // the seed's noise is torch's CPU generator's
            auto gen = at::detail::createCPUGenerator(o.seed);
            rep.check(run + "seed -> initial latents (exact)",
                      torch::randn({1, 4, 16, 16}, gen, torch::kDouble).equal(io.tensor(it.key() + ".latents.init")) ? 0.0 : 1.0, 0);
        }
    }
    ref.report(tag, rep);
}

// A single file made by diffusers' own converter (io.safetensors, and the same
// tensors as a torch.save .ckpt) against the diffusers folder it came from:
// reading it gives every folder tensor exactly; writing the folder gives the
// converter's names and tensors exactly.
void check_single_file(const std::string& dir, const SafetensorsFile& io, hra::test::ParityReport& rep) {
    namespace fs = std::filesystem;
    const std::string file = (fs::path(dir) / "io.safetensors").string();
    auto unet = hra::load_unet(dir + "/unet");
    auto vae = hra::load_vae(dir + "/vae");
    auto text = hra::load_clip_text(dir + "/text_encoder");
    for (const std::string& source : {file, (fs::path(dir) / "single_file.ckpt").string()}) {
        hra::diffusion::SdLoadOptions o;
        o.config_dir = dir;
        auto sd = hra::diffusion::load_stable_diffusion(source, torch::kFloat, o);
        auto same = [](const torch::nn::Module& a, const torch::nn::Module& b) {
            auto pa = hra::base_parameters(a), pb = hra::base_parameters(b);
            if (pa.size() != pb.size()) return false;
            for (auto& [k, v] : pa)
                if (!pb.count(k) || !pb.at(k).equal(v)) return false;
            return true;
        };
        const std::string tag = "single file -> diffusers (" + fs::path(source).extension().string() + ") ";
        rep.check(tag + "unet (exact)", same(*sd.unet.model, *unet.model) ? 0.0 : 1.0, 0);
        rep.check(tag + "vae (exact)", same(*sd.vae.model, *vae.model) ? 0.0 : 1.0, 0);
        rep.check(tag + "text encoder (exact)", same(*sd.text_encoder.model, *text.model) ? 0.0 : 1.0, 0);
    }
    const auto ours = hra::sd_to_single_file(hra::base_parameters(*unet.model), hra::base_parameters(*vae.model),
                                             hra::base_parameters(*text.model), unet.config, vae.config);
    std::set<std::string> names;
    bool equal = ours.size() == io.names().size();
    int quirks = 0;
    for (const auto& [k, t] : ours) {
        names.insert(k);
        if (!io.contains(k)) {
            equal = false;
            continue;
        }
        auto ref = io.tensor(k);
        // The converter also reshapes the VAE attention biases to [C, 1, 1]
        // (original ldm files have [C]); hra writes [C].
        if (k.find(".mid.attn_1.") != std::string::npos && k.size() > 5 && k.substr(k.size() - 5) == ".bias" && ref.dim() == 3) {
            ref = ref.flatten();
            ++quirks;
        }
        equal = equal && ref.equal(t);
    }
    rep.check("converter's [C, 1, 1] VAE attention biases: " + std::to_string(quirks) + " of 8", quirks == 8 ? 0.0 : 1.0, 0);
    rep.check("diffusers -> single file: " + std::to_string(ours.size()) + " tensors (exact)", equal ? 0.0 : 1.0, 0);
}

// PNDM (PLMS, SD 1.5's own) and Euler: timesteps, Euler's sigmas, initial
// noise scale and scaled model inputs, and every step fed the stored sample.
void check_pndm_euler(const std::string& dir, const SafetensorsFile& io, double tol, hra::test::ParityReport& rep) {
    namespace d = hra::diffusion;
    const auto cfg = d::read_schedule_config((std::filesystem::path(dir) / "config.json").string());
    const auto runs = nlohmann::json::parse(io.metadata().at("runs"));
    Tracked ref(io);
    for (auto it = runs.begin(); it != runs.end(); ++it) {
        const std::string r = it.key();
        const bool euler = it.value().at("class") == "EulerDiscreteScheduler";
        auto sch = d::make_scheduler(euler ? "euler" : "pndm", cfg);
        const int64_t n = it.value().at("steps");
        sch->set_timesteps(n);
        const auto steps = sch->timesteps();
        std::vector<torch::Tensor> model_t;
        for (size_t k = 0; k < steps.size(); ++k) model_t.push_back(sch->model_timestep(k));
        rep.check(r + " timesteps (exact)", torch::stack(model_t).equal(ref(r + ".timesteps")) ? 0.0 : 1.0, 0);
        if (euler) {
            rep.check(r + " sigmas", rel_err(dynamic_cast<d::EulerScheduler&>(*sch).sigmas(), ref(r + ".sigmas")), tol);
            rep.check(r + " init_noise_sigma",
                      std::abs(sch->init_noise_sigma() - ref(r + ".init_noise_sigma").item<double>()), tol);
        }
        double prev_err = 0, scaled_err = 0;
        for (size_t k = 0; k < steps.size(); ++k) {
            const std::string K = std::to_string(k);
            auto sample = k == 0 ? ref(r + ".sample.0") : io.tensor(r + ".prev_sample." + std::to_string(k - 1));
            if (euler) scaled_err = std::max(scaled_err, rel_err(sch->scale_model_input(sample, k), ref(r + ".scaled_input." + K)));
            auto out = sch->step(ref(r + ".model_output." + K), steps[k], sample);
            prev_err = std::max(prev_err, rel_err(out.prev_sample, ref(r + ".prev_sample." + K)));
        }
        rep.check(r + " prev_sample (" + std::to_string(steps.size()) + " steps)", prev_err, tol);
        if (euler) rep.check(r + " scaled model input", scaled_err, tol);
    }
    ref.report("pndm/euler: ", rep);
}

// v-prediction and x0 ("sample", with clip_sample) models through every
// sampler: each step fed the stored sample and model output (DDPM also its
// variance noise), and the v training target (get_velocity).
void check_prediction_types(const SafetensorsFile& io, double tol, hra::test::ParityReport& rep) {
    namespace d = hra::diffusion;
    const auto runs = nlohmann::json::parse(io.metadata().at("runs"));
    Tracked ref(io);
    const std::map<std::string, std::string> sampler = {{"DDIMScheduler", "ddim"},
                                                        {"DDPMScheduler", "ddpm"},
                                                        {"DPMSolverMultistepScheduler", "dpm++2m"},
                                                        {"EulerDiscreteScheduler", "euler"},
                                                        {"PNDMScheduler", "pndm"}};
    for (auto it = runs.begin(); it != runs.end(); ++it) {
        const std::string r = it.key();
        const auto cfg = d::parse_schedule_config(it.value().at("config").dump(), r);
        auto sch = d::make_scheduler(sampler.at(it.value().at("class")), cfg);
        sch->set_timesteps(it.value().at("steps").get<int64_t>());
        const auto steps = sch->timesteps();
        std::vector<torch::Tensor> model_t;
        for (size_t k = 0; k < steps.size(); ++k) model_t.push_back(sch->model_timestep(k));
        rep.check(r + " timesteps (exact)", torch::stack(model_t).equal(ref(r + ".timesteps")) ? 0.0 : 1.0, 0);
        double err = 0;
        for (size_t k = 0; k < steps.size(); ++k) {
            const std::string K = std::to_string(k);
            auto sample = k == 0 ? ref(r + ".sample.0") : io.tensor(r + ".prev_sample." + std::to_string(k - 1));
            torch::Tensor noise;
            if (io.contains(r + ".noise." + K)) noise = ref(r + ".noise." + K);
            auto out = sch->step(ref(r + ".model_output." + K), steps[k], sample, noise);
            err = std::max(err, rel_err(out.prev_sample, ref(r + ".prev_sample." + K)));
        }
        rep.check(r + " prev_sample (" + std::to_string(steps.size()) + " steps)", err, tol);
    }
    const auto vcfg = d::parse_schedule_config(io.metadata().at("velocity_config"), "velocity_config");
    auto v = d::training_target(vcfg.prediction_type, d::alphas_cumprod(vcfg), ref("velocity.x0"), ref("velocity.noise"),
                                ref("velocity.timesteps"));
    rep.check("v-prediction target (get_velocity)", rel_err(v, ref("velocity.v")), tol);
    const auto ccfg = d::parse_schedule_config(io.metadata().at("cosine_config"), "cosine_config");
    rep.check("squaredcos_cap_v2 alphas_cumprod (exact)", d::alphas_cumprod(ccfg).equal(ref("cosine.alphas_cumprod")) ? 0.0 : 1.0, 0);
    ref.report("prediction types: ", rep);
}

}  // namespace

int main() {
    try {
        hra::test::ParityReport rep;
        rep.width = 44;
        // The repo's copies: clip-text-tiny, sd-pipeline-tiny, sd-schedulers, sd-schedulers-pndm-euler,
        // sd-schedulers-prediction, sd-single-file-tiny, sd-unet-tiny, sd-unet-v2-tiny, sd-vae-tiny.
        const auto dirs = hra::test::parity_folders("HRA_SD_FIXTURES", "sd", 9, rep);
        for (const auto& dir : dirs) {
            const auto io = SafetensorsFile::open((std::filesystem::path(dir) / "io.safetensors").string());
            const auto& meta = io.metadata();
            const std::string cls = meta.count("model_class") ? meta.at("model_class")
                                    : meta.count("classes")   ? meta.at("classes")
                                                              : "";
            std::printf("%s: %s\n", dir.c_str(), cls.c_str());
            if (cls == "scheduler prediction types") {
                check_prediction_types(io, 1e-5, rep);
            } else if (cls == "PNDMScheduler, EulerDiscreteScheduler") {
                check_pndm_euler(dir, io, 1e-6, rep);
            } else if (cls == "DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler") {
                check_schedulers(dir, io, 1e-6, rep);
            } else if (cls == "AutoencoderKL") {
                check_vae(dir, io, torch::kDouble, 1e-13, rep);
                check_vae(dir, io, torch::kFloat, 1e-5, rep);
            } else if (cls == "StableDiffusionSingleFile") {
                check_single_file(dir, io, rep);
            } else if (cls == "StableDiffusionPipeline") {
                check_pipeline(dir, io, torch::kDouble, 1e-13, 0, rep);
                check_pipeline(dir, io, torch::kFloat, 1e-5, 1, rep);  // one level: a float32 rounding may flip (measured 0)
            } else if (cls == "UNet2DConditionModel") {
                // upcast_attention computes the scores in float32 even in a float64 run (diffusers does too):
                // bit-identical where OpenBLAS picks the generator's SGEMM kernel, 7.6e-8 (gradients 3e-7) on
                // AVX-512 (Cooperlake) kernels, so such a model's float64 check is at float32's 1e-6.
                const bool upcast = hra::io::read_json_file(dir + "/config.json").value("upcast_attention", false);
                check_unet(dir, io, torch::kDouble, upcast ? 1e-6 : 1e-13, upcast ? 1e-6 : 1e-13, rep);
                check_unet(dir, io, torch::kFloat, 1e-5, 2e-5, rep);
            } else if (cls == "CLIPTextModel") {
                check_clip_text(dir, io, torch::kDouble, 1e-13, rep);
                check_clip_text(dir, io, torch::kFloat, 1e-5, rep);
            } else {
                rep.check("not recognised: '" + cls + "'", 1.0, 0);
            }
        }
        return hra::test::parity_exit(rep, dirs.size());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
