#include "models/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include <torch/torch.h>

#include "common/error.h"

namespace hra {

Sampler::Sampler(const SamplingOptions& options) : options_(options), state_(options.seed ^ 0x9E3779B97F4A7C15ull) {
    if (!(std::isfinite(options.temperature) && options.temperature >= 0)) throw Error("temperature must be a number >= 0");
    if (!(options.top_p > 0 && options.top_p <= 1)) throw Error("top_p must be in (0, 1]");  // NaN too
    if (options.top_k < 0) throw Error("top_k must be >= 0");
}

// splitmix64: reproducible across platforms and libtorch versions.
double Sampler::uniform() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return static_cast<double>(z >> 11) * (1.0 / 9007199254740992.0);
}

int64_t Sampler::next(const torch::Tensor& logits) {
    auto l = logits.detach().to(torch::kCPU, torch::kDouble).contiguous();
    if (options_.temperature == 0) return l.argmax().item<int64_t>();
    const int64_t n = l.numel();
    const double* v = l.data_ptr<double>();
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
    size_t keep = order.size();
    if (options_.top_k > 0) keep = std::min(keep, static_cast<size_t>(options_.top_k));
    std::vector<double> p(keep);
    // (logit − max) / T: a tiny temperature drives the others to 0, never overflows to inf − inf.
    const double top = v[order[0]];
    double sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += p[i] = std::exp((v[order[i]] - top) / options_.temperature);
    if (options_.top_p < 1) {
        // Smallest prefix whose probability reaches top_p (at least one token).
        double acc = 0;
        size_t k = 0;
        while (k < keep) {
            acc += p[k] / sum;
            ++k;
            if (acc >= options_.top_p) break;
        }
        keep = k;
        sum = std::accumulate(p.begin(), p.begin() + static_cast<long>(keep), 0.0);
    }
    double r = uniform() * sum;
    for (size_t i = 0; i < keep; ++i) {
        r -= p[i];
        if (r <= 0) return order[i];
    }
    return order[keep - 1];
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Length of the longest suffix of `text` that begins some stop string.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
    size_t hold = 0;
    for (const auto& s : stops)
        for (size_t len = std::min(s.size() - 1, text.size()); len > hold; --len)
            if (text.compare(text.size() - len, len, s, 0, len) == 0) {
                hold = len;
                break;
            }
    return hold;
}

}  // namespace

GenerationResult generate(LlamaForCausalLMImpl& model, const Tokenizer& tokenizer,
                          const std::vector<int64_t>& prompt_ids, const SamplingOptions& options,
                          const std::function<void(const std::string&)>& on_text) {
    if (prompt_ids.empty()) throw Error("the prompt has no tokens (add BOS or some text)");
    for (const auto& s : options.stop)
        if (s.empty()) throw Error("stop strings must not be empty");
    torch::NoGradGuard no_grad;
    const auto device = model.model->embed_tokens->weight.device();
    GenerationResult res;
    res.prompt_tokens = static_cast<int64_t>(prompt_ids.size());
    Sampler sampler(options);
    KVCache cache;
    TextStream stream(tokenizer, prompt_ids);
    size_t emitted = 0;  // bytes of stream.text() passed to on_text

    auto t0 = std::chrono::steady_clock::now();
    LlamaInputs in;
    in.input_ids = torch::tensor(prompt_ids, torch::kLong).unsqueeze(0).to(device);
    in.cache = &cache;
    in.last_position_only = true;
    auto logits = model.forward(in).logits.view({-1});
    res.prompt_seconds = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    res.finish_reason = "length";
    for (int64_t step = 0; step < options.max_new_tokens; ++step) {
        const int64_t id = sampler.next(logits);
        res.tokens.push_back(id);
        if (std::find(options.eos_ids.begin(), options.eos_ids.end(), id) != options.eos_ids.end()) {
            res.finish_reason = "eos";
            break;
        }
        stream.push(id);
        const std::string& text = stream.text();
        // Stop strings: cut the text before the first one found.
        size_t cut = std::string::npos;
        for (const auto& s : options.stop) cut = std::min(cut, text.find(s, emitted > s.size() ? emitted - s.size() : 0));
        if (cut != std::string::npos) {
            if (on_text && cut > emitted) on_text(text.substr(emitted, cut - emitted));
            res.text = text.substr(0, cut);
            res.finish_reason = "stop";
            res.decode_seconds = seconds_since(t0);
            return res;
        }
        const size_t ready = text.size() - held_back(text, options.stop);
        if (on_text && ready > emitted) on_text(text.substr(emitted, ready - emitted));
        emitted = std::max(emitted, ready);
        if (step + 1 == options.max_new_tokens) break;
        in.input_ids = torch::tensor(std::vector<int64_t>{id}, torch::kLong).unsqueeze(0).to(device);
        logits = model.forward(in).logits.view({-1});
    }
    stream.flush();
    res.text = stream.text();
    if (on_text && res.text.size() > emitted) on_text(res.text.substr(emitted));
    res.decode_seconds = seconds_since(t0);
    return res;
}

std::vector<GenerationResult> generate_batch(LlamaForCausalLMImpl& model, const Tokenizer& tokenizer,
                                             const std::vector<std::vector<int64_t>>& prompts,
                                             const SamplingOptions& options) {
    for (const auto& p : prompts)
        if (p.empty()) throw Error("a prompt has no tokens (add BOS or some text)");
    for (const auto& s : options.stop)
        if (s.empty()) throw Error("stop strings must not be empty");
    if (prompts.empty()) return {};
    torch::NoGradGuard no_grad;
    const auto device = model.model->embed_tokens->weight.device();
    const auto b = static_cast<int64_t>(prompts.size());
    struct Row {
        Sampler sampler;
        TextStream stream;
        GenerationResult res;
        bool done = false;
    };
    std::vector<Row> rows;
    size_t len = 0;
    for (const auto& p : prompts) {
        rows.push_back({Sampler(options), TextStream(tokenizer, p), {}, false});
        rows.back().res.prompt_tokens = static_cast<int64_t>(p.size());
        len = std::max(len, p.size());
    }
    // Left padding (id 0, masked out), so that every row's next token is the last column.
    auto ids = torch::zeros({b, static_cast<int64_t>(len)}, torch::kLong);
    auto mask = torch::zeros({b, static_cast<int64_t>(len)}, torch::kLong);
    for (int64_t i = 0; i < b; ++i) {
        const auto& p = prompts[static_cast<size_t>(i)];
        const auto n = static_cast<int64_t>(p.size()), off = static_cast<int64_t>(len) - n;
        ids[i].narrow(0, off, n).copy_(torch::tensor(p, torch::kLong));
        mask[i].narrow(0, off, n).fill_(1);
    }
    mask = mask.to(device);
    KVCache cache;
    LlamaInputs in;
    in.input_ids = ids.to(device);
    in.attention_mask = mask;
    in.position_ids = (mask.cumsum(1) - 1).clamp_min(0);
    in.cache = &cache;
    in.last_position_only = true;
    auto t0 = std::chrono::steady_clock::now();
    auto logits = model.forward(in).logits.select(1, 0).to(torch::kCPU);
    const double prompt_seconds = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    std::vector<int64_t> next(static_cast<size_t>(b), 0), position(static_cast<size_t>(b));
    for (size_t i = 0; i < rows.size(); ++i) position[i] = static_cast<int64_t>(prompts[i].size());
    for (int64_t step = 0; step < options.max_new_tokens; ++step) {
        bool all_done = true;
        for (size_t i = 0; i < rows.size(); ++i) {
            auto& r = rows[i];
            if (r.done) continue;
            const int64_t id = r.sampler.next(logits[static_cast<int64_t>(i)]);
            next[i] = id;
            r.res.tokens.push_back(id);
            if (std::find(options.eos_ids.begin(), options.eos_ids.end(), id) != options.eos_ids.end()) {
                r.res.finish_reason = "eos";
                r.done = true;
                continue;
            }
            r.stream.push(id);
            const std::string& text = r.stream.text();
            size_t cut = std::string::npos;
            for (const auto& s : options.stop) cut = std::min(cut, text.find(s));
            if (cut != std::string::npos) {
                r.res.text = text.substr(0, cut);
                r.res.finish_reason = "stop";
                r.done = true;
                continue;
            }
            all_done = false;
        }
        if (all_done || step + 1 == options.max_new_tokens) break;
        mask = torch::cat({mask, torch::ones({b, 1}, mask.options())}, 1);
        in.input_ids = torch::tensor(next, torch::kLong).view({b, 1}).to(device);
        in.position_ids = torch::tensor(position, torch::kLong).view({b, 1}).to(device);
        in.attention_mask = mask;
        for (auto& p : position) ++p;
        logits = model.forward(in).logits.select(1, 0).to(torch::kCPU);
    }
    std::vector<GenerationResult> out;
    const double decode_seconds = seconds_since(t0);
    for (auto& r : rows) {
        if (r.res.finish_reason.empty() || r.res.finish_reason == "eos") {
            r.stream.flush();
            r.res.text = r.stream.text();
            if (r.res.finish_reason.empty()) r.res.finish_reason = "length";
        }
        r.res.prompt_seconds = prompt_seconds;
        r.res.decode_seconds = decode_seconds;
        out.push_back(std::move(r.res));
    }
    return out;
}

}  // namespace hra
