// Task text-to-image: diffusers' train_text_to_image objective on a Stable
// Diffusion pipeline folder (diffusion/pipeline.h), for pixel-space pipelines
// (no VAE: the UNet denoises images in [-1, 1]) and latent ones (images are
// encoded by the frozen VAE, a sample of the latent distribution × the
// scaling factor). Each example: noise ε ~ N(0, I), a timestep t uniform in
// [0, T), x_t = add_noise(x₀, ε, t), loss = mean over the image of
// (UNet(x_t, t, text) − target)², the target being ε, x₀ or v by the
// scheduler config's prediction_type. The caption is replaced by "" with probability
// --caption-dropout (what classifier-free guidance needs).
//
// Data: an image folder as Hugging Face's imagefolder and diffusers read it,
// metadata.jsonl lines {"file_name": ..., "text": ...} beside PNG files;
// images are resized (shorter side, antialiased bilinear) and centre-cropped
// to --resolution (default: the UNet's sample_size × the VAE factor).
//
// What trains: --method full trains the UNet, and with --from-scratch also the
// text encoder (the model folder then needs config files only: the models
// are built with seeded random weights); checkpoints are complete pipeline
// folders. --method hra / lora put adapters on the UNet (PEFT's targets for
// diffusers UNets by default: to_q, to_k, to_v, to_out.0); checkpoints are
// PEFT folders that `hra sd generate --adapter` loads.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "diffusion/pipeline.h"
#include "io/png.h"
#include "models/model_weights.h"
#include "train/task.h"

namespace hra {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

struct CaptionedImage {
    std::string file, text;
};

// metadata.jsonl of an image folder: one {"file_name", "text"} object per line.
std::vector<CaptionedImage> read_image_folder(const std::string& dir) {
    const fs::path meta = fs::path(dir) / "metadata.jsonl";
    std::ifstream in(meta);
    if (!in) throw Error("an image folder needs metadata.jsonl (lines of {\"file_name\": ..., \"text\": ...})", {meta.string()});
    std::vector<CaptionedImage> out;
    int64_t line_no = 0;
    for (std::string line; std::getline(in, line);) {
        ++line_no;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        json j;
        try {
            j = json::parse(line);
        } catch (const std::exception& e) {
            throw Error(std::string("not JSON: ") + e.what(), {meta.string(), "", line_no});
        }
        if (!j.is_object() || !j.contains("file_name") || !j["file_name"].is_string())
            throw Error("a line needs a string \"file_name\"", {meta.string(), "", line_no});
        if (!j.contains("text") || !j["text"].is_string())
            throw Error("a line needs a string \"text\" (the caption)", {meta.string(), "", line_no});
        const fs::path file = fs::path(dir) / j["file_name"].get<std::string>();
        if (!fs::is_regular_file(file)) throw Error("the image it names does not exist: " + file.string(), {meta.string(), "", line_no});
        out.push_back({file.string(), j["text"].get<std::string>()});
    }
    if (out.empty()) throw Error("no images listed", {meta.string()});
    return out;
}

// uint8 [H, W, 3] from grey, grey+alpha, RGB or RGBA pixels (alpha dropped, as PIL's convert("RGB")).
torch::Tensor to_rgb(const torch::Tensor& p) {
    const int64_t c = p.size(2);
    if (c == 3) return p;
    if (c == 4) return p.slice(2, 0, 3).contiguous();
    return p.slice(2, 0, 1).expand({p.size(0), p.size(1), 3}).contiguous();
}

// uint8 [3, R, R]: the shorter side resized to R (antialiased bilinear), then a centre crop.
torch::Tensor fit_image(const torch::Tensor& hwc, int64_t res) {
    auto x = hwc.permute({2, 0, 1}).contiguous();
    const int64_t h = x.size(1), w = x.size(2);
    if (h == res && w == res) return x;
    const double scale = static_cast<double>(res) / static_cast<double>(std::min(h, w));
    const int64_t nh = std::max<int64_t>(res, std::llround(static_cast<double>(h) * scale));
    const int64_t nw = std::max<int64_t>(res, std::llround(static_cast<double>(w) * scale));
    auto f = torch::nn::functional::interpolate(
                 x.unsqueeze(0).to(torch::kFloat),
                 torch::nn::functional::InterpolateFuncOptions().size(std::vector<int64_t>{nh, nw}).mode(torch::kBilinear).align_corners(false).antialias(true))
                 .squeeze(0);
    const int64_t top = (nh - res) / 2, left = (nw - res) / 2;
    return f.slice(1, top, top + res).slice(2, left, left + res).round().clamp(0, 255).to(torch::kUInt8).contiguous();
}

class TextToImageTask : public TrainTask {
public:
    explicit TextToImageTask(TrainOptions o) : o_(std::move(o)) {}

    void setup(const std::string& resume_dir) override {
        if (o_.data.empty()) throw Error("--task text-to-image needs --data (an image folder with metadata.jsonl)");
        const bool full = o_.method == "full";
        diffusion::SdLoadOptions lo;
        if (o_.from_scratch && !full) throw Error("--from-scratch trains every parameter: use it with --method full");
        lo.random_init = o_.from_scratch && resume_dir.empty();
        sd_ = diffusion::load_stable_diffusion(full && !resume_dir.empty() ? resume_dir : o_.model, o_.dtype, lo);
        if (lo.random_init) {
            // CLIP's own initialisation of the embeddings (normal, std 0.02); the rest keeps PyTorch's defaults, as diffusers' UNet.
            torch::NoGradGuard ng;
            auto& te = *sd_.text_encoder.model;
            for (auto& item : te.named_parameters())
                if (item.key().find("embedding") != std::string::npos) item.value().normal_(0, 0.02);
        }
        const c10::Device d(o_.device);
        sd_.unet.model->to(d);
        sd_.text_encoder.model->to(d);
        if (sd_.has_vae()) sd_.vae.model->to(d);
        train_text_ = full && o_.from_scratch;
        if (full) {
            for (auto& p : sd_.unet.model->parameters()) p.set_requires_grad(true);
            if (train_text_)
                for (auto& p : sd_.text_encoder.model->parameters()) p.set_requires_grad(true);
        } else {
            InjectOptions io;
            io.default_targets = {"to_q", "to_k", "to_v", "to_out.0"};
            io.model_type = "UNet2DConditionModel";
            io.output_layers = {};
            peft_ = std::make_unique<PeftModel>(sd_.unet.model.ptr(), io);
            auto config = o_.adapter;
            // Written out in adapter_config.json: a diffusers UNet has no PEFT default to fall back on when loading.
            if (!config.target_modules.is_set()) config.target_modules = ModuleSelector::of(io.default_targets);
            if (resume_dir.empty()) peft_->add_adapter("default", config);
            else peft_->load_adapter(resume_dir, "default", true);
            sd_.unet.model->to(d);
        }
        const auto schedule = sd_.schedule;
        ac_ = diffusion::alphas_cumprod(schedule).to(d);
        res_ = o_.resolution > 0 ? o_.resolution : sd_.unet.config.sample_size * sd_.vae_scale_factor();
        if (res_ % 8 != 0 && sd_.has_vae())
            throw Error("--resolution must be a multiple of 8 for a latent pipeline, got " + std::to_string(res_));
        empty_ids_ = sd_.tokenizer->encode_padded("").ids;
        train_ = load_examples(o_.data);
        if (!o_.val_data.empty()) {
            val_ = load_examples(o_.val_data);
        } else if (o_.val_split > 0) {
            const auto n = static_cast<int64_t>(train_.size());
            const auto n_val = static_cast<int64_t>(o_.val_split < 1 ? o_.val_split * static_cast<double>(n) : o_.val_split);
            if (n_val <= 0 || n_val >= n) throw Error("--val-split leaves no training or no validation images", {o_.data});
            // The last share of a seeded permutation is held out.
            auto gen = at::make_generator<at::CPUGeneratorImpl>(o_.seed + 7919);
            auto perm = torch::randperm(n, gen, torch::kLong);
            std::vector<Example> t, v;
            for (int64_t i = 0; i < n; ++i)
                (i < n - n_val ? t : v).push_back(std::move(train_[static_cast<size_t>(perm[i].item<int64_t>())]));
            train_ = std::move(t);
            val_ = std::move(v);
        }
    }

    int64_t train_size() const override { return static_cast<int64_t>(train_.size()); }
    int64_t eval_size() const override { return static_cast<int64_t>(val_.size()); }

    std::vector<at::Tensor> trainable_parameters() override {
        std::vector<at::Tensor> out;
        for (auto& p : sd_.unet.model->parameters())
            if (p.requires_grad()) out.push_back(p);
        if (train_text_)
            for (auto& p : sd_.text_encoder.model->parameters()) out.push_back(p);
        return out;
    }

    BatchLoss loss(const std::vector<int64_t>& rows) override { return denoising_loss(train_, rows, nullptr, o_.caption_dropout); }

    json evaluate() override {
        const auto t = evaluate_in_batches(o_, eval_size(), [&](const std::vector<int64_t>& rows, at::Generator* gen) {
            return denoising_loss(val_, rows, gen, 0.0);  // the same noise, timesteps and captions at every evaluation
        });
        return {{"loss", t.mean()}, {"images", static_cast<int64_t>(t.count)}};
    }

    void save(const std::string& dir) const override {
        if (peft_) {
            peft_->save_adapter(dir);
            return;
        }
        diffusion::write_stable_diffusion(sd_, dir);
    }

    void set_training(bool on) override {
        sd_.unet.model->train(on);
        sd_.text_encoder.model->train(on && train_text_);
    }

    std::string summary() const override {
        auto count = [](const torch::nn::Module& m, bool trainable_only) {
            int64_t n = 0;
            for (const auto& p : m.parameters())
                if (!trainable_only || p.requires_grad()) n += p.numel();
            return n;
        };
        const int64_t unet = count(*sd_.unet.model, false), text = count(*sd_.text_encoder.model, false);
        const int64_t trained = count(*sd_.unet.model, true) + (train_text_ ? text : 0);
        return std::string("text-to-image (") + (sd_.has_vae() ? "latent" : "pixel space") + ", " + std::to_string(res_) +
               " px): UNet " + std::to_string(unet) + " parameters, text encoder " + std::to_string(text) +
               "; trainable params: " + std::to_string(trained) + (o_.from_scratch ? " (from scratch)" : "");
    }

    json describe() const override {
        return {{"data", o_.data},
                {"val_data", o_.val_data},
                {"val_split", o_.val_split},
                {"resolution", res_},
                {"caption_dropout", o_.caption_dropout},
                {"from_scratch", o_.from_scratch},
                {"pixel_space", !sd_.has_vae()},
                {"train_text_encoder", train_text_},
                {"train_examples", train_.size()},
                {"val_examples", val_.size()}};
    }

private:
    struct Example {
        torch::Tensor image;  // uint8 [3, R, R]
        std::vector<int64_t> ids;
    };

    std::vector<Example> load_examples(const std::string& dir) const {
        std::vector<Example> out;
        bool warned = false;
        for (const auto& item : read_image_folder(dir)) {
            auto img = to_rgb(io::read_png(item.file).pixels);
            if (!warned && (img.size(0) != res_ || img.size(1) != res_)) {
                log_warning(strprintf("hra: %s is %lldx%lld; images are resized and centre-cropped to %lld px", item.file.c_str(),
                                      static_cast<long long>(img.size(1)), static_cast<long long>(img.size(0)),
                                      static_cast<long long>(res_)));
                warned = true;
            }
            auto ids = sd_.tokenizer->encode_padded(item.text);
            out.push_back({fit_image(img, res_), ids.ids});
        }
        return out;
    }

    BatchLoss denoising_loss(const std::vector<Example>& data, const std::vector<int64_t>& rows, at::Generator* gen,
                             double dropout) {
        const c10::Device d(o_.device);
        const auto B = static_cast<int64_t>(rows.size());
        auto g = gen ? c10::optional<at::Generator>(*gen) : c10::nullopt;
        std::vector<torch::Tensor> images;
        std::vector<int64_t> ids;
        auto drop = dropout > 0 ? at::rand({B}, g, torch::kDouble) : torch::Tensor();
        for (int64_t i = 0; i < B; ++i) {
            const auto& e = data.at(static_cast<size_t>(rows[static_cast<size_t>(i)]));
            images.push_back(e.image);
            const bool empty = dropout > 0 && drop[i].item<double>() < dropout;
            const auto& src = empty ? empty_ids_ : e.ids;
            ids.insert(ids.end(), src.begin(), src.end());
        }
        auto x0 = torch::stack(images).to(d).to(sd_.dtype).div(127.5).sub(1.0);
        if (sd_.has_vae()) {
            torch::NoGradGuard ng;
            auto dist = sd_.vae.model->encode(x0);
            x0 = dist.sample(at::randn(dist.mean.sizes(), g, dist.mean.options())) * sd_.vae.config.scaling_factor;
        }
        auto id_tensor = torch::tensor(ids, torch::kLong).reshape({B, -1}).to(d);
        torch::Tensor context;
        if (train_text_) {
            context = sd_.text_encoder.model->forward(id_tensor).last_hidden_state;
        } else {
            torch::NoGradGuard ng;
            context = sd_.text_encoder.model->forward(id_tensor).last_hidden_state;
        }
        const int64_t T = sd_.schedule.num_train_timesteps;
        auto t = at::randint(0, T, {B}, g, torch::TensorOptions().dtype(torch::kLong)).to(d);
        auto noise = at::randn(x0.sizes(), g, x0.options());
        auto xt = diffusion::add_noise(ac_, x0, noise, t);
        auto eps = sd_.unet.model->forward(xt, t, context);
        const auto wide = eps.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
        auto target = diffusion::training_target(sd_.schedule.prediction_type, ac_, x0, noise, t);
        auto err = eps.to(wide) - target.to(wide);
        BatchLoss out;
        out.sum = err.pow(2).mean({1, 2, 3}).sum();
        out.count = static_cast<double>(B);
        out.tokens = B;
        out.seq_len = 1;
        return out;
    }

    TrainOptions o_;
    diffusion::StableDiffusion sd_;
    std::unique_ptr<PeftModel> peft_;
    bool train_text_ = false;
    torch::Tensor ac_;
    int64_t res_ = 0;
    std::vector<int64_t> empty_ids_;
    std::vector<Example> train_, val_;
};

}  // namespace

std::vector<TaskInfo> text_to_image_tasks() {
    TaskInfo t;
    t.name = "text-to-image";
    t.help = "denoising (ε) training of a Stable Diffusion pipeline folder on captioned images (pixel space or latent; --from-scratch)";
    t.options = {"data", "val-data", "val-split", "from-scratch", "resolution", "caption-dropout"};
    t.methods = {"full", "hra", "lora"};
    t.defaults = [](TrainOptions&, const std::set<std::string>&) {};
    t.make = [](const TrainOptions& o) { return std::make_unique<TextToImageTask>(o); };
    return {t};
}

}  // namespace hra
