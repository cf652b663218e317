// Stable Diffusion 1.5 speed and memory on this machine, with random weights
// of SD 1.5's shapes (speed does not depend on values), float32, batch 1:
//   unet_forward/PX        one UNet call at PX pixels (latents PX/8), no grad
//   unet_forward_chunked   the same at 512 px with attention in chunks of 1024 query rows
//   unet_train/PX          forward + backward with HRA r=8 on every attention
//                          projection (to_q, to_k, to_v, to_out.0: 128 layers), base frozen
//   dreambooth_step/512    unet_train at DreamBooth's shape: batch 2 (instance + class
//                          image), 512 px, attention in chunks of 1024 query rows
//   control_step/512       the control experiment's step, batch 1 (the seed's is 8 per GPU):
//                          the hint encoder (1,086,480 parameters, trained) on a 512 px
//                          condition, its residual into the UNet, HRA r=8 on the seed's 144
//                          control projections, forward + backward, chunks of 1024
//   vae_decode/PX          the VAE decoder from PX/8 latents
// Each case makes one untimed call first (not in smoke mode), then reports seconds
// per call, nominal GFLOP/s (forward FLOPs of DIFFUSION.md §5: UNet 180 / 803
// GFLOP, VAE decoder 622 / 2515 GFLOP at 256 / 512 px) next to the measured
// float32 GEMM rate, and the process's peak resident memory
// during the case (VmHWM, reset before it). The peer, diffusers' own
// UNet2DConditionModel on Debian's python3-torch (../shared/tools/peers/
// sd_unet_peer.py, the same config), runs in the same process afterwards when
// python3-torch and a diffusers snapshot (HRA_DIFFUSERS_GIT) are there.
// Target (exit 1 when missed): hra's UNet forward at 256 px takes at most
// 1.1x the peer's time.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <fstream>
#include <map>
#include <string>

#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "smoke.h"
#include "adapters/peft_model.h"
#include "common/allocator.h"
#include "common/runtime.h"
#include "models/autoencoder_kl.h"
#include "models/hint_encoder.h"
#include "models/sd_checkpoint.h"
#include "models/unet_2d_condition.h"

namespace {

struct Result {
    double seconds = 0, peak_mib = 0;
};
std::map<std::string, Result> g_results;

void reset_peak() {
    hra::release_free_memory();  // freed pages kept by jemalloc would count in this case's peak
    std::ofstream f("/proc/self/clear_refs");
    f << "5";
}

double peak_mib() {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return 0;
}

bool g_smoke = false;

// One case: the peak reset, one untimed call as the peer makes (sd_unet_peer.py; the first
// call after jemalloc's pages went back to the kernel faults its working set in, and its
// memory still counts in the case's peak; not in smoke mode, whose one call only checks that
// the case runs), then the timed calls; their mean and the peak go into g_results.
template <class F>
void time_calls(benchmark::State& state, const std::string& name, const F& call) {
    reset_peak();
    if (!g_smoke) call();
    double total = 0;
    for (auto _ : state) {
        const auto start = std::chrono::steady_clock::now();
        call();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        state.SetIterationTime(s);
        total += s;
    }
    g_results[name] = {total / static_cast<double>(state.iterations()), peak_mib()};
}

hra::UNet2DConditionModel& unet() {
    static hra::UNet2DConditionModel m{nullptr};
    if (!m) {
        {
            hra::SkipInitGuard skip;
            m = hra::UNet2DConditionModel(hra::parse_unet_config(hra::sd15_unet_config_json(), "SD 1.5 UNet"));
        }
        torch::NoGradGuard ng;
        for (auto& p : m->parameters()) p.normal_(0, 0.02).set_requires_grad(false);
        m->eval();
    }
    return m;
}

void run_unet(benchmark::State& state, const std::string& name, int64_t px, bool train, int64_t chunk, int64_t batch = 1,
              bool control = false) {
    auto& m = unet();
    m->set_attention_chunk(chunk);
    std::unique_ptr<hra::PeftModel> peft;
    if (train) {
        peft = std::make_unique<hra::PeftModel>(m.ptr());
        auto c = hra::AdapterConfig::of("hra");
        c.r = 8;
        c.target_modules = control ? hra::ModuleSelector::regex(R"(.*(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj))")
                                   : hra::ModuleSelector::regex(R"(.*attn[12]\.(to_q|to_k|to_v|to_out\.0))");
        const auto n = peft->add_adapter("default", c).size();
        if (control && n != 144) throw std::runtime_error("the control placement must adapt 144 layers, got " + std::to_string(n));
    }
    hra::HintEncoder hint_encoder{nullptr};
    torch::Tensor hint;
    if (control) {
        hint_encoder = hra::HintEncoder();  // SD 1.5's widths, trained: its parameters take gradients
        hint = torch::rand({batch, 3, px, px});
    }
    auto x = torch::randn({batch, 4, px / 8, px / 8}), ctx = torch::randn({batch, 77, 768});
    auto t = batch == 1 ? torch::tensor(500, torch::kLong) : torch::full({batch}, 500, torch::kLong);
    auto call = [&] {
        if (train) {
            const auto residual = control ? hint_encoder->forward(hint) : torch::Tensor();
            auto loss = m->forward(x, t, ctx, residual).square().mean();
            loss.backward();
            for (auto& p : peft->trainable_parameters()) p.mutable_grad() = torch::Tensor();
            if (control)
                for (auto& p : hint_encoder->parameters()) p.mutable_grad() = torch::Tensor();
        } else {
            torch::NoGradGuard ng;
            benchmark::DoNotOptimize(m->forward(x, t, ctx).data_ptr());
        }
    };
    time_calls(state, name, call);
    if (peft) peft->merge_and_unload();  // back to the plain model for the next case
    m->set_attention_chunk(0);
}

void run_vae(benchmark::State& state, const std::string& name, int64_t px) {
    static hra::AutoencoderKL vae{nullptr};
    if (!vae) {
        {
            hra::SkipInitGuard skip;
            vae = hra::AutoencoderKL(hra::parse_vae_config(hra::sd15_vae_config_json(), "SD 1.5 VAE"));
        }
        torch::NoGradGuard ng;
        for (auto& p : vae->parameters()) p.normal_(0, 0.02).set_requires_grad(false);
        vae->eval();
    }
    auto z = torch::randn({1, 4, px / 8, px / 8});
    auto call = [&] {
        torch::NoGradGuard ng;
        benchmark::DoNotOptimize(vae->decode(z).data_ptr());
    };
    time_calls(state, name, call);
}

// The peer's JSON line, or an empty object when it cannot run here.
nlohmann::json run_peer(int64_t px) {
    const char* git = std::getenv("HRA_DIFFUSERS_GIT");
    const std::string repo = git && *git ? git : "/work/.mirror/huggingface+diffusers/repo";
    const std::string script = std::string(HRA_SHARED_DIR) + "/tools/peers/sd_unet_peer.py";
    if (access(repo.c_str(), R_OK) != 0 || access(script.c_str(), R_OK) != 0 || access("/usr/bin/python3", X_OK) != 0) return {};
    const std::string cmd = "/usr/bin/python3 " + script + " " + repo + " --px " + std::to_string(px) + " --reps 3 2>/dev/null";
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return {};
    std::string out;
    char buf[4096];
    while (fgets(buf, sizeof buf, p)) out += buf;
    if (pclose(p) != 0) return {};
    const auto at = out.rfind('{');
    if (at == std::string::npos) return {};
    auto j = nlohmann::json::parse(out.substr(at), nullptr, false);
    return j.is_discarded() ? nlohmann::json{} : j;
}

}  // namespace

int main(int argc, char** argv) {
    const bool smoke = hra::bench::take_smoke_flag(argc, argv);
    g_smoke = smoke;
    const auto info = hra::init_runtime(0);
    std::fprintf(stderr, "runtime: %s\n", hra::describe(info).c_str());
    auto reg = [smoke](const std::string& name, std::function<void(benchmark::State&, const std::string&)> f, int64_t iterations) {
        if (smoke && name != "unet_forward/256" && name != "vae_decode/256") return;
        if (smoke) iterations = 1;
        benchmark::RegisterBenchmark(name.c_str(), [f, name](benchmark::State& s) { f(s, name); })
            ->Unit(benchmark::kSecond)
            ->UseManualTime()
            ->Iterations(iterations);
    };
    reg("unet_forward/256", [](benchmark::State& s, const std::string& n) { run_unet(s, n, 256, false, 0); }, 3);
    reg("unet_forward/512", [](benchmark::State& s, const std::string& n) { run_unet(s, n, 512, false, 0); }, 1);
    reg("unet_forward_chunked/512", [](benchmark::State& s, const std::string& n) { run_unet(s, n, 512, false, 1024); }, 1);
    reg("unet_train/256", [](benchmark::State& s, const std::string& n) { run_unet(s, n, 256, true, 0); }, 2);
    reg("unet_train/512", [](benchmark::State& s, const std::string& n) { run_unet(s, n, 512, true, 1024); }, 1);
    reg("dreambooth_step/512", [](benchmark::State& s, const std::string& n) { run_unet(s, n, 512, true, 1024, 2); }, 1);
    reg("control_step/512", [](benchmark::State& s, const std::string& n) { run_unet(s, n, 512, true, 1024, 1, true); }, 1);
    reg("vae_decode/256", [](benchmark::State& s, const std::string& n) { run_vae(s, n, 256); }, 2);
    reg("vae_decode/512", [](benchmark::State& s, const std::string& n) { run_vae(s, n, 512); }, 1);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();  // stdout: the reporter's (JSON with --benchmark_format=json); tables on stderr

    const double gemm = hra::matmul_rate(torch::kFloat, "cpu", 2048) / 1e9;  // GFLOP/s
    const std::map<std::string, double> gflop = {{"unet_forward/256", 180},        {"unet_forward/512", 803},
                                                 {"unet_forward_chunked/512", 803}, {"vae_decode/256", 622},
                                                 {"vae_decode/512", 2515}};
    std::fprintf(stderr, "\nSD 1.5 shapes, float32, batch 1, dreambooth_step batch 2 (float32 GEMM 2048^3: %.1f GFLOP/s)\n", gemm);
    std::fprintf(stderr, "%-26s %10s %10s %9s %12s\n", "case", "s/call", "GFLOP/s*", "of GEMM", "peak MiB");
    for (const auto& [name, r] : g_results) {
        const auto it = gflop.find(name);
        const double rate = it != gflop.end() && r.seconds > 0 ? it->second / r.seconds : 0;
        std::fprintf(stderr, "%-26s %10.2f %10s %8s%% %12.0f\n", name.c_str(), r.seconds, rate > 0 ? std::to_string(static_cast<int>(rate)).c_str() : "-",
                    rate > 0 ? std::to_string(static_cast<int>(100 * rate / gemm)).c_str() : "-", r.peak_mib);
    }
    std::fprintf(stderr,
                 "* nominal: the forward FLOPs of DIFFUSION.md over the time (3x3 convolutions may use fewer\n"
                 "  multiplications than nominal, e.g. Winograd); peak MiB: the whole process, weights included\n");
    int rc = 0;
    if (smoke || !g_results.count("unet_forward/256")) return 0;  // a smoke run or a filtered subset: no target
    const auto peer = run_peer(256);
    if (peer.contains("seconds") && g_results.count("unet_forward/256")) {
        const double ours = g_results["unet_forward/256"].seconds, theirs = peer["seconds"].get<double>();
        std::fprintf(stderr, "\npeer: %s, 256 px forward: %.2f s; hra %.2f s (%.2fx the peer's speed)\n",
                    peer.value("peer", std::string("diffusers")).c_str(), theirs, ours, theirs / ours);
        if (ours > 1.1 * theirs) {
            std::fprintf(stderr, "TARGET MISSED: hra's UNet forward at 256 px must take at most 1.1x the peer's time\n");
            rc = 1;
        }
    } else {
        std::fprintf(stderr, "\npeer: not run (needs /usr/bin/python3 with python3-torch and a diffusers git snapshot in HRA_DIFFUSERS_GIT)\n");
    }
    return rc;
}
