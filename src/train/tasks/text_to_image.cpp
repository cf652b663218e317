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
// metadata.jsonl lines {"file_name": ..., "text": ...} beside PNG or JPEG files;
// images are resized (shorter side, Pillow's bilinear, as torchvision's Resize)
// and centre-cropped to --resolution (default: the UNet's sample_size × the VAE factor).
//
// What trains: --method full trains the UNet, and with --from-scratch also the
// text encoder (the model folder then needs config files only: the models
// are built with seeded random weights); checkpoints are complete pipeline
// folders. --method hra / lora put adapters on the UNet (PEFT's targets for
// diffusers UNets by default: to_q, to_k, to_v, to_out.0); checkpoints are
// PEFT folders that `hra sd generate --adapter` loads.
//
// Task control (the seed's controllable generation, DIFFUSION.md §4): the same
// objective with a condition image. A zero-initialised hint encoder (ldm's
// input_hint_block, models/hint_encoder.h) turns the condition (RGB / 255) into
// a residual added after conv_in, and adapters go on the seed's placement (q, k,
// v, out of both attentions and ff.net.0.proj). Data: a prompt file of records
// {"source": condition image, "target": image, "prompt": text} (OFT's JSON lines,
// or one JSON list as CelebA-HQ's), paths relative to the file, or a folder
// holding prompt.json; a record without "source" takes OpenCV's Canny(100, 200)
// of its target. Checkpoints hold the PEFT adapter and hint_encoder.safetensors
// (+ hint_encoder.json), which `hra sd generate --control-model` loads.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "adapters/peft_model.h"
#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "data/canny.h"
#include "data/image.h"
#include "diffusion/pipeline.h"
#include "io/png.h"
#include "models/hint_encoder.h"
#include "train/task.h"
#include "io/json_file.h"

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
        const json j = io::parse_json(line, meta.string(), static_cast<long>(line_no));
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

struct ControlRecord {
    std::string source, target, prompt;  // source empty: Canny of the target
    long line = 0;                       // line (JSON lines) or item (a JSON list), 1-based
};

// A control prompt file (or a folder's prompt.json): JSON lines, or one JSON list, of
// {"source", "target", "prompt"}; `file` gets the file read.
std::vector<ControlRecord> read_control_records(const std::string& data, std::string* file) {
    *file = fs::is_directory(data) ? (fs::path(data) / "prompt.json").string() : data;
    std::ifstream in(*file, std::ios::binary);
    if (!in) throw Error("cannot read the control prompt file (JSON lines of {\"source\", \"target\", \"prompt\"})", {*file});
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::pair<json, long>> items;
    const auto first = text.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && text[first] == '[') {
        const json all = io::parse_json(text, *file);
        long n = 0;
        for (const auto& j : all) items.emplace_back(j, ++n);
    } else {
        std::istringstream lines(text);
        long n = 0;
        for (std::string line; std::getline(lines, line);) {
            ++n;
            if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
            items.emplace_back(io::parse_json(line, *file, n), n);
        }
    }
    const fs::path root = fs::path(*file).parent_path();
    std::vector<ControlRecord> out;
    for (const auto& [j, n] : items) {
        const auto str = [&, n = n](const char* key, bool required) -> std::string {
            if (!j.is_object()) throw Error("a record must be an object {\"source\", \"target\", \"prompt\"}", {*file, "", n});
            if (!j.contains(key)) {
                if (required) throw Error(std::string("a record needs a string \"") + key + "\"", {*file, "", n});
                return "";
            }
            if (!j[key].is_string()) throw Error(std::string("\"") + key + "\" must be a string", {*file, "", n});
            return j[key].get<std::string>();
        };
        ControlRecord r;
        r.line = n;
        r.prompt = str("prompt", true);
        r.target = (root / str("target", true)).string();
        const auto source = str("source", false);
        if (!source.empty()) r.source = (root / source).string();
        for (const auto& f : {r.target, r.source})
            if (!f.empty() && !fs::is_regular_file(f)) throw Error("the image it names does not exist: " + f, {*file, "", n});
        out.push_back(std::move(r));
    }
    if (out.empty()) throw Error("no records", {*file});
    return out;
}

// Image files of a folder (PNG, JPEG), sorted by name.
std::vector<std::string> image_files(const std::string& dir) {
    std::vector<std::string> out;
    if (!fs::is_directory(dir)) return out;
    for (const auto& e : fs::directory_iterator(dir)) {
        auto ext = e.path().extension().string();
        std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (e.is_regular_file() && (ext == ".png" || ext == ".jpg" || ext == ".jpeg")) out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

class TextToImageTask : public TrainTask {
public:
    explicit TextToImageTask(TrainOptions o) : o_(std::move(o)) {}

    void setup(const std::string& resume_dir) override {
        dreambooth_ = o_.task == "dreambooth";
        control_ = o_.task == "control";
        if (o_.data.empty())
            throw Error(dreambooth_ ? "--task dreambooth needs --data (a folder of the subject's images)"
                        : control_  ? "--task control needs --data (a prompt file of {\"source\", \"target\", \"prompt\"} lines, or its folder)"
                                    : "--task text-to-image needs --data (an image folder with metadata.jsonl)");
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
        train_text_ = full && (o_.from_scratch || o_.train_text_encoder);
        res_ = o_.resolution > 0 ? o_.resolution : sd_.unet.config.sample_size * sd_.vae_scale_factor();
        if (res_ % 8 != 0 && sd_.has_vae())
            throw Error("--resolution must be a multiple of 8 for a latent pipeline, got " + std::to_string(res_));
        if (dreambooth_) prepare_dreambooth();  // class images come from the base model, before any adapter
        if (full) {
            for (auto& p : sd_.unet.model->parameters()) p.set_requires_grad(true);
            if (train_text_)
                for (auto& p : sd_.text_encoder.model->parameters()) p.set_requires_grad(true);
        } else {
            InjectOptions io;
            io.default_targets = control_ ? control_adapter_targets() : std::vector<std::string>{"to_q", "to_k", "to_v", "to_out.0"};
            io.model_type = "UNet2DConditionModel";
            io.output_layers = {};
            peft_ = std::make_unique<PeftModel>(sd_.unet.model.ptr(), io);
            auto config = o_.adapter;
            // Written out in adapter_config.json: a diffusers UNet has no PEFT default to fall back on when loading.
            if (!config.target_modules.is_set()) config.target_modules = ModuleSelector::of(io.default_targets);
            // With the text encoder's adapters, a checkpoint holds unet/ and text_encoder/ (PEFT's DreamBooth layout).
            const std::string unet_dir = o_.train_text_encoder ? (fs::path(resume_dir) / "unet").string() : resume_dir;
            if (resume_dir.empty()) peft_->add_adapter("default", config);
            else peft_->load_adapter(unet_dir, "default", true);
            sd_.unet.model->to(d);
            if (o_.train_text_encoder) {
                InjectOptions tio;
                tio.default_targets = {"q_proj", "k_proj", "v_proj", "out_proj"};
                tio.model_type = "CLIPTextModel";
                tio.output_layers = {};
                text_peft_ = std::make_unique<PeftModel>(sd_.text_encoder.model.ptr(), tio);
                auto tc = o_.adapter;  // the method and its settings; --target-modules names the UNet's layers
                tc.target_modules = ModuleSelector::of(tio.default_targets);
                if (resume_dir.empty()) text_peft_->add_adapter("default", tc);
                else text_peft_->load_adapter((fs::path(resume_dir) / "text_encoder").string(), "default", true);
                sd_.text_encoder.model->to(d);
            }
        }
        const auto schedule = sd_.schedule;
        ac_ = diffusion::alphas_cumprod(schedule).to(d);
        empty_ids_ = sd_.tokenizer->encode_padded("").ids;
        if (dreambooth_) return;
        if (control_) setup_hint_encoder(resume_dir);
        train_ = control_ ? load_control_examples(o_.data) : load_examples(o_.data);
        if (!o_.val_data.empty()) {
            val_ = control_ ? load_control_examples(o_.val_data, false) : load_examples(o_.val_data);
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

    // DreamBooth: an epoch pairs every instance image with every class image
    // once (max of the two counts, each cycled), as diffusers' DreamBoothDataset.
    int64_t train_size() const override {
        return static_cast<int64_t>(dreambooth_ && prior() ? std::max(train_.size(), class_.size()) : train_.size());
    }
    // DreamBooth has no held-out images: with --validation-prompt, evaluations
    // draw the validation grid and report the instance images' denoising loss
    // at fixed noise (a training loss, for tracking, not a held-out score).
    int64_t eval_size() const override {
        if (dreambooth_) return o_.validation_prompt.empty() ? 0 : static_cast<int64_t>(train_.size());
        return static_cast<int64_t>(val_.size());
    }

    std::vector<at::Tensor> trainable_parameters() override {
        std::vector<at::Tensor> out;
        for (auto& p : sd_.unet.model->parameters())
            if (p.requires_grad()) out.push_back(p);
        if (text_trained())
            for (auto& p : sd_.text_encoder.model->parameters())
                if (p.requires_grad()) out.push_back(p);
        if (hint_)
            for (auto& p : hint_->parameters()) out.push_back(p);
        return out;
    }

    BatchLoss loss(const std::vector<int64_t>& rows) override {
        if (!dreambooth_) return denoising_loss(train_, rows, nullptr, o_.caption_dropout);
        // diffusers' train_dreambooth: instance and class images in one batch,
        // loss = MSE(instance) + prior_loss_weight · MSE(class).
        std::vector<const Example*> batch;
        for (int64_t r : rows) batch.push_back(&train_[static_cast<size_t>(r) % train_.size()]);
        if (prior())
            for (int64_t r : rows) batch.push_back(&class_[static_cast<size_t>(r) % class_.size()]);
        const auto err = denoising_errors(batch, nullptr, 0.0, !o_.center_crop);
        const auto B = static_cast<int64_t>(rows.size());
        BatchLoss out;
        out.sum = prior() ? err.slice(0, 0, B).sum() + o_.prior_loss_weight * err.slice(0, B).sum() : err.sum();
        out.count = static_cast<double>(B);
        out.tokens = static_cast<int64_t>(batch.size());
        out.seq_len = 1;
        return out;
    }

    json evaluate() override {
        const auto t = evaluate_in_batches(o_, eval_size(), [&](const std::vector<int64_t>& rows, at::Generator* gen) {
            // the same noise, timesteps and captions at every evaluation
            return denoising_loss(dreambooth_ ? train_ : val_, rows, gen, 0.0);
        });
        json out = {{"loss", t.mean()}, {"images", static_cast<int64_t>(t.count)}};
        if (dreambooth_ && !o_.validation_prompt.empty()) out["validation_grid"] = validation_grid();
        return out;
    }

    void save(const std::string& dir) const override {
        if (text_peft_) {
            peft_->save_adapter((fs::path(dir) / "unet").string());
            text_peft_->save_adapter((fs::path(dir) / "text_encoder").string());
            return;
        }
        if (peft_) {
            peft_->save_adapter(dir);
            if (hint_) save_hint_encoder(hint_, dir);
            return;
        }
        diffusion::write_stable_diffusion(sd_, dir);
    }

    void set_training(bool on) override {
        sd_.unet.model->train(on);
        sd_.text_encoder.model->train(on && text_trained());
        if (hint_) hint_->train(on);
    }

    std::string summary() const override {
        auto count = [](const torch::nn::Module& m, bool trainable_only) {
            int64_t n = 0;
            for (const auto& p : m.parameters())
                if (!trainable_only || p.requires_grad()) n += p.numel();
            return n;
        };
        const int64_t unet = count(*sd_.unet.model, false), text = count(*sd_.text_encoder.model, false);
        const int64_t trained = count(*sd_.unet.model, true) + count(*sd_.text_encoder.model, true) + (hint_ ? count(*hint_, false) : 0);
        return std::string("text-to-image (") + (sd_.has_vae() ? "latent" : "pixel space") + ", " + std::to_string(res_) +
               " px): UNet " + std::to_string(unet) + " parameters, text encoder " + std::to_string(text) +
               "; trainable params: " + std::to_string(trained) + (o_.from_scratch ? " (from scratch)" : "") +
               (hint_ ? " (hint encoder " + std::to_string(count(*hint_, false)) + ")" : "");
    }

    json describe() const override {
        int64_t trainable = 0;
        for (const auto& p : sd_.unet.model->parameters()) trainable += p.requires_grad() ? p.numel() : 0;
        for (const auto& p : sd_.text_encoder.model->parameters()) trainable += p.requires_grad() ? p.numel() : 0;
        int64_t hint = 0;
        if (hint_)
            for (const auto& p : hint_->parameters()) hint += p.numel();
        trainable += hint;
        return {{"data", o_.data},
                {"hint_encoder_params", control_ ? json(hint) : json()},
                {"canny_from_target", control_ ? json(canny_records_) : json()},
                {"trainable_params", trainable},
                {"val_data", o_.val_data},
                {"val_split", o_.val_split},
                {"resolution", res_},
                {"caption_dropout", o_.caption_dropout},
                {"from_scratch", o_.from_scratch},
                {"pixel_space", !sd_.has_vae()},
                {"train_text_encoder", text_trained()},
                {"train_examples", train_.size()},
                {"val_examples", val_.size()},
                {"instance_prompt", instance_captions_ ? json("metadata.jsonl") : json(instance_prompt_)},
                {"class_prompt", dreambooth_ && prior() ? json(class_captions_ ? "metadata.jsonl" : class_prompt_) : json()},
                {"class_data", dreambooth_ && prior() ? json(o_.class_data) : json()},
                {"class_images", class_.size()},
                {"prior_loss_weight", dreambooth_ ? json(o_.prior_loss_weight) : json()},
                {"crop", dreambooth_ && !o_.center_crop ? "random" : "centre"}};
    }

private:
    struct Example {
        torch::Tensor image;  // uint8 [H, W, 3], the shorter side R (cropped per use)
        std::vector<int64_t> ids;
        torch::Tensor hint;   // control: uint8 [R, R, 3], or [R, R, 1] for a Canny map (the image then is R × R too)
    };

    // The hint encoder: its output has the UNet's first width at the UNet input's size.
    void setup_hint_encoder(const std::string& resume_dir) {
        const int64_t factor = sd_.vae_scale_factor();
        int64_t strided = 0;
        while ((int64_t{1} << strided) < factor) ++strided;
        if ((int64_t{1} << strided) != factor || strided > 3)
            throw Error("--task control needs a VAE factor of 1, 2, 4 or 8 (the hint encoder's strides), got " + std::to_string(factor));
        HintEncoderConfig hc;
        hc.out_channels = sd_.unet.config.block_out_channels.front();
        hc.strided = strided;
        hint_ = resume_dir.empty() ? HintEncoder(hc) : load_hint_encoder(resume_dir);
        const auto& got = hint_->config();
        if (got.out_channels != hc.out_channels || got.strided != hc.strided)
            throw Error("the checkpoint's hint encoder gives " + std::to_string(got.out_channels) + " channels at 1/" +
                            std::to_string(hint_->factor()) + " of the condition's size; this model needs " +
                            std::to_string(hc.out_channels) + " at 1/" + std::to_string(factor),
                        {(fs::path(resume_dir) / "hint_encoder.json").string()});
        // Trained weights and their optimizer state stay float32 (float64 with a float64 model), as the adapters'.
        hint_->to(c10::Device(o_.device), hint_dtype());
    }
    c10::ScalarType hint_dtype() const { return sd_.dtype == torch::kDouble ? torch::kDouble : torch::kFloat; }

    // Targets and conditions each resized (shorter side R, Pillow's bilinear) and centre-cropped to R × R.
    std::vector<Example> load_control_examples(const std::string& data, bool counting = true) {
        std::string file;
        std::vector<Example> out;
        for (const auto& r : read_control_records(data, &file)) {
            const auto prep = [&](const std::string& f) {
                try {
                    return data::center_crop(data::resize_shortest_edge(data::load_rgb(f), res_, data::Resample::Bilinear), res_, res_);
                } catch (const Error& e) {
                    throw Error(e.message() + " (" + f + ")", {file, "", r.line});
                }
            };
            Example e;
            e.image = prep(r.target);
            if (r.source.empty()) {
                e.hint = data::canny(e.image).unsqueeze(2);  // one channel kept; the batch repeats it
                canny_records_ += counting ? 1 : 0;
            } else {
                // Resized on its own: the seed's CelebA-HQ pairs 512 px landmark drawings with 1024 px photos.
                e.hint = prep(r.source);
            }
            e.ids = sd_.tokenizer->encode_padded(r.prompt).ids;
            out.push_back(std::move(e));
        }
        return out;
    }

    bool prior() const { return dreambooth_ && o_.prior_loss_weight > 0; }

    // The shorter side resized to R as Pillow's bilinear does (the torchvision
    // Resize of diffusers' training scripts); the crop comes per batch.
    Example example(const std::string& file, const std::vector<int64_t>& ids) const {
        return {data::resize_shortest_edge(data::load_rgb(file), res_, data::Resample::Bilinear), ids, {}};
    }

    void prepare_dreambooth() {
        const std::string cls = o_.class_word;
        instance_prompt_ = !o_.instance_prompt.empty() ? o_.instance_prompt : (cls.empty() ? "" : "a photo of qwe " + cls);
        class_prompt_ = !o_.class_prompt.empty() ? o_.class_prompt : (cls.empty() ? "" : "a photo of " + cls);
        // An instance folder with metadata.jsonl gives each image its own prompt (diffusers' custom instance
        // prompts, its --caption_column) unless --instance-prompt is given; otherwise every image takes the instance prompt.
        instance_captions_ = o_.instance_prompt.empty() && fs::exists(fs::path(o_.data) / "metadata.jsonl");
        if (instance_captions_) {
            log_info("hra: instance prompts from " + (fs::path(o_.data) / "metadata.jsonl").string() + " (one per image)");
            for (const auto& item : read_image_folder(o_.data)) train_.push_back(example(item.file, sd_.tokenizer->encode_padded(item.text).ids));
        } else {
            if (instance_prompt_.empty()) throw Error("--task dreambooth needs --class-word or --instance-prompt (or captions in metadata.jsonl)");
            const auto files = image_files(o_.data);
            if (files.empty()) throw Error("no PNG or JPEG images in the instance folder", {o_.data});
            const auto ids = sd_.tokenizer->encode_padded(instance_prompt_).ids;
            for (const auto& f : files) train_.push_back(example(f, ids));
        }
        if (!prior()) return;
        if (o_.class_prompt.empty() && !o_.class_data.empty() && fs::exists(fs::path(o_.class_data) / "metadata.jsonl")) {
            // Captioned class images (e.g. the class prompt of each instance image's context): used as they are.
            class_captions_ = true;
            auto items = read_image_folder(o_.class_data);
            items.resize(std::min(items.size(), static_cast<size_t>(o_.num_class_images)));
            for (const auto& item : items) class_.push_back(example(item.file, sd_.tokenizer->encode_padded(item.text).ids));
            if (class_.empty()) throw Error("--num-class-images is 0 but prior preservation is on (use --prior-loss-weight 0)");
            return;
        }
        if (class_prompt_.empty()) throw Error("prior preservation needs --class-word or --class-prompt (or --prior-loss-weight 0)");
        if (o_.class_data.empty()) throw Error("prior preservation needs --class-data (a folder; missing class images are generated into it)");
        auto have = image_files(o_.class_data);
        const auto want = static_cast<size_t>(o_.num_class_images);
        if (have.size() < want) {
            fs::create_directories(o_.class_data);
            log_info(strprintf("hra: generating %zu class images of \"%s\" into %s (PNDM 50 steps, CFG 7.5; later runs reuse them)",
                               want - have.size(), class_prompt_.c_str(), o_.class_data.c_str()));
            torch::NoGradGuard ng;
            for (size_t i = have.size(); i < want;) {
                diffusion::GenerateOptions g;
                const size_t n = std::min<size_t>(4, want - i);
                g.prompts.assign(n, class_prompt_);
                g.steps = 50;
                g.scheduler = "pndm";
                g.guidance = 7.5;
                g.width = g.height = res_;
                g.seed = o_.seed * 1000003ULL + i;  // the images do not depend on how many there were before
                const auto out = diffusion::generate(sd_, g);
                for (size_t k = 0; k < n; ++k, ++i)
                    io::write_png((fs::path(o_.class_data) / strprintf("class-%05zu.png", i)).string(), out.pixels[static_cast<int64_t>(k)],
                                  {{"prompt", class_prompt_}, {"hra", "dreambooth class image (pndm 50, guidance 7.5)"}});
            }
            have = image_files(o_.class_data);
        }
        have.resize(std::min(have.size(), want));
        if (have.empty()) throw Error("--num-class-images is 0 but prior preservation is on (use --prior-loss-weight 0)");
        const auto cids = sd_.tokenizer->encode_padded(class_prompt_).ids;
        for (const auto& f : have) class_.push_back(example(f, cids));
    }

    // Images of --validation-prompt (DPM++ 25 steps, CFG 7.5, re-seeded to 0)
    // as one grid PNG per evaluation in RUN/validation; returns its path.
    std::string validation_grid() {
        torch::NoGradGuard ng;
        diffusion::GenerateOptions g;
        g.prompt = o_.validation_prompt;
        g.num_images = o_.validation_images;
        g.steps = 25;
        g.guidance = 7.5;
        g.width = g.height = res_;
        g.seed = 0;
        const auto out = diffusion::generate(sd_, g);
        const auto dir = fs::path(o_.out) / "validation";
        fs::create_directories(dir);
        const auto file = (dir / strprintf("eval-%03lld.png", static_cast<long long>(validations_++))).string();
        io::write_png(file, io::image_grid(out.pixels, std::min<int64_t>(4, o_.validation_images)),
                      {{"prompt", o_.validation_prompt}, {"hra", "dreambooth validation (dpm++2m 25, guidance 7.5, seed 0)"}});
        return file;
    }

    std::vector<Example> load_examples(const std::string& dir) const {
        std::vector<Example> out;
        bool warned = false;
        for (const auto& item : read_image_folder(dir)) {
            auto img = data::load_rgb(item.file);
            if (!warned && (img.size(0) != res_ || img.size(1) != res_)) {
                log_warning(strprintf("hra: %s is %lldx%lld; images are resized and centre-cropped to %lld px", item.file.c_str(),
                                      static_cast<long long>(img.size(1)), static_cast<long long>(img.size(0)),
                                      static_cast<long long>(res_)));
                warned = true;
            }
            auto ids = sd_.tokenizer->encode_padded(item.text);
            out.push_back({data::resize_shortest_edge(img, res_, data::Resample::Bilinear), ids.ids, {}});
        }
        return out;
    }

    BatchLoss denoising_loss(const std::vector<Example>& data, const std::vector<int64_t>& rows, at::Generator* gen,
                             double dropout) {
        std::vector<const Example*> batch;
        for (int64_t r : rows) batch.push_back(&data.at(static_cast<size_t>(r)));
        BatchLoss out;
        out.sum = denoising_errors(batch, gen, dropout, false).sum();
        out.count = static_cast<double>(rows.size());
        out.tokens = static_cast<int64_t>(rows.size());
        out.seq_len = 1;
        return out;
    }

    // Per-example mean squared error [B] of one denoising step.
    torch::Tensor denoising_errors(const std::vector<const Example*>& batch, at::Generator* gen, double dropout, bool random_crop) {
        const c10::Device d(o_.device);
        const auto B = static_cast<int64_t>(batch.size());
        auto g = gen ? c10::optional<at::Generator>(*gen) : c10::nullopt;
        std::vector<torch::Tensor> images, hints;
        std::vector<int64_t> ids;
        auto drop = dropout > 0 ? at::rand({B}, g, torch::kDouble) : torch::Tensor();
        for (int64_t i = 0; i < B; ++i) {
            const auto& e = *batch[static_cast<size_t>(i)];
            auto img = random_crop ? data::random_crop(e.image, res_, res_, g) : data::center_crop(e.image, res_, res_);
            images.push_back(img.permute({2, 0, 1}));
            if (hint_) hints.push_back(e.hint.expand({res_, res_, 3}).permute({2, 0, 1}));
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
        if (text_trained()) {
            context = sd_.text_encoder.model->forward(id_tensor).last_hidden_state;
        } else {
            torch::NoGradGuard ng;
            context = sd_.text_encoder.model->forward(id_tensor).last_hidden_state;
        }
        const int64_t T = sd_.schedule.num_train_timesteps;
        auto t = at::randint(0, T, {B}, g, torch::TensorOptions().dtype(torch::kLong)).to(d);
        auto noise = at::randn(x0.sizes(), g, x0.options());
        auto xt = diffusion::add_noise(ac_, x0, noise, t);
        // The seed's hint: RGB / 255, encoded anew at every step (the encoder trains).
        const auto residual = hint_ ? hint_->forward(torch::stack(hints).to(d).to(hint_dtype()).div(255.0)).to(sd_.dtype) : torch::Tensor();
        auto eps = sd_.unet.model->forward(xt, t, context, residual);
        const auto wide = eps.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
        auto target = diffusion::training_target(sd_.schedule.prediction_type, ac_, x0, noise, t);
        auto err = eps.to(wide) - target.to(wide);
        return err.pow(2).mean({1, 2, 3});
    }

    TrainOptions o_;
    diffusion::StableDiffusion sd_;
    std::unique_ptr<PeftModel> peft_, text_peft_;
    bool train_text_ = false;  // every text-encoder weight (--method full)
    bool text_trained() const { return train_text_ || text_peft_ != nullptr; }
    torch::Tensor ac_;
    int64_t res_ = 0;
    std::vector<int64_t> empty_ids_;
    std::vector<Example> train_, val_, class_;
    bool dreambooth_ = false, control_ = false;
    HintEncoder hint_{nullptr};
    int64_t canny_records_ = 0;  // control records whose condition is the target's Canny
    std::string instance_prompt_, class_prompt_;
    bool instance_captions_ = false, class_captions_ = false;  // prompts from the folders' metadata.jsonl
    int64_t validations_ = 0;
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
    TaskInfo db;
    db.name = "dreambooth";
    db.help = "subject-driven fine-tuning (diffusers' train_dreambooth): instance images with prior preservation on generated class images";
    db.options = {"data", "resolution", "preset", "class-word", "instance-prompt", "class-prompt", "class-data", "num-class-images",
                  "prior-loss-weight", "center-crop", "validation-prompt", "validation-images", "train-text-encoder"};
    db.methods = {"hra", "lora", "full"};
    // The seed's run (DIFFUSION.md §3): HRA r 8 on to_q/k/v/out.0, lr 1e-4 constant, AdamW wd 1e-2, clip 1.0, batch 1.
    // --preset paper: the paper's r 7, lr 7e-6; --preset peft: PEFT's hra_dreambooth example (lr 5e-3, bias hra_only).
    db.defaults = [](TrainOptions& o, const std::set<std::string>& given) {
        if (!given.count("lr")) o.lr = o.preset == "paper" ? 7e-6 : o.preset == "peft" ? 5e-3 : 1e-4;
        if (o.preset == "peft" && o.method == "hra" && !given.count("bias")) o.adapter.bias = "hra_only";
        if (o.preset == "paper" && o.trains_adapters() && !given.count("r")) o.adapter.r = 7;
        if (!given.count("schedule")) o.schedule = Schedule::Constant;
        if (!given.count("weight-decay")) o.weight_decay = 1e-2;
        if (!given.count("max-grad-norm")) o.max_grad_norm = 1.0;
        if (!given.count("batch-size")) o.batch_size = 1;
        if (!given.count("r") && o.trains_adapters() && o.preset != "paper") o.adapter.r = 8;
    };
    db.make = [](const TrainOptions& o) { return std::make_unique<TextToImageTask>(o); };
    TaskInfo c;
    c.name = "control";
    c.help = "controllable generation (the seed's control experiment): a zero-initialised hint encoder adds a condition image "
             "after conv_in; adapters on q, k, v, out of both attentions and ff.net.0.proj";
    c.options = {"data", "val-data", "val-split", "resolution", "preset"};
    c.methods = {"hra", "lora"};
    // The seed's run (DIFFUSION.md §4): AdamW wd 0.01, lr 9e-4, batch 8, no schedule, no clipping, HRA r 8;
    // --preset paper: the paper's lr 3e-5.
    c.defaults = [](TrainOptions& o, const std::set<std::string>& given) {
        if (!given.count("lr")) o.lr = o.preset == "paper" ? 3e-5 : 9e-4;
        if (!given.count("schedule")) o.schedule = Schedule::Constant;
        if (!given.count("weight-decay")) o.weight_decay = 1e-2;
        if (!given.count("max-grad-norm")) o.max_grad_norm = 0;
        if (!given.count("batch-size")) o.batch_size = 8;
        if (!given.count("r") && o.trains_adapters()) o.adapter.r = 8;
    };
    c.make = [](const TrainOptions& o) { return std::make_unique<TextToImageTask>(o); };
    return {t, db, c};
}

}  // namespace hra
