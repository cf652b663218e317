#include "text/sp_tokenizer.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>

#include "common/error.h"
#include "text/unicode.h"

namespace hra {

namespace {

struct Api {
    void* (*open)(const char*, char*, size_t);
    void (*close)(void*);
    void (*free_)(void*);
    int64_t (*encode)(void*, const char*, size_t, int32_t**, char*, size_t);
    int64_t (*decode)(void*, const int32_t*, size_t, char**, char*, size_t);
    int32_t (*size)(void*);
    int32_t (*bos)(void*);
    int32_t (*eos)(void*);
    int32_t (*unk)(void*);
    int32_t (*type)(void*, int32_t);
    float (*score)(void*, int32_t);
    int64_t (*piece)(void*, int32_t, char**);
    int32_t (*piece_id)(void*, const char*, size_t);
    int (*train)(const char*, char*, size_t);
};

std::string module_path() {
    if (const char* env = std::getenv("HRA_SPM_PLUGIN"); env && *env) return env;
    std::vector<std::string> candidates;
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        const auto dir = std::filesystem::path(exe).parent_path();
        candidates.push_back((dir / "libhra_spm.so").string());
        candidates.push_back((dir / "../lib/libhra_spm.so").string());
    }
#ifdef HRA_SPM_PLUGIN
    candidates.push_back(HRA_SPM_PLUGIN);
#endif
    for (const auto& c : candidates)
        if (std::filesystem::exists(c)) return c;
    return candidates.empty() ? "libhra_spm.so" : candidates.back();
}

const Api& api() {
    static Api a{};
    static std::string failure;
    static std::once_flag once;
    std::call_once(once, [] {
        const std::string path = module_path();
        void* h = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            failure = std::string("cannot load the SentencePiece module ") + path + ": " + dlerror();
            return;
        }
        auto get = [&](const char* name) {
            void* s = dlsym(h, name);
            if (!s && failure.empty()) failure = std::string("SentencePiece module lacks ") + name;
            return s;
        };
        a.open = reinterpret_cast<decltype(a.open)>(get("hra_spm_open"));
        a.close = reinterpret_cast<decltype(a.close)>(get("hra_spm_close"));
        a.free_ = reinterpret_cast<decltype(a.free_)>(get("hra_spm_free"));
        a.encode = reinterpret_cast<decltype(a.encode)>(get("hra_spm_encode"));
        a.decode = reinterpret_cast<decltype(a.decode)>(get("hra_spm_decode"));
        a.size = reinterpret_cast<decltype(a.size)>(get("hra_spm_size"));
        a.bos = reinterpret_cast<decltype(a.bos)>(get("hra_spm_bos"));
        a.eos = reinterpret_cast<decltype(a.eos)>(get("hra_spm_eos"));
        a.unk = reinterpret_cast<decltype(a.unk)>(get("hra_spm_unk"));
        a.type = reinterpret_cast<decltype(a.type)>(get("hra_spm_type"));
        a.score = reinterpret_cast<decltype(a.score)>(get("hra_spm_score"));
        a.piece = reinterpret_cast<decltype(a.piece)>(get("hra_spm_piece"));
        a.piece_id = reinterpret_cast<decltype(a.piece_id)>(get("hra_spm_piece_id"));
        a.train = reinterpret_cast<decltype(a.train)>(get("hra_spm_train"));
    });
    if (!failure.empty()) throw Error(failure);
    return a;
}

class SentencePieceTokenizer : public Tokenizer {
public:
    explicit SentencePieceTokenizer(const std::string& path) : path_(path), api_(api()) {
        char err[512] = {0};
        h_ = api_.open(path.c_str(), err, sizeof err);
        if (!h_) throw Error(std::string("not a SentencePiece model: ") + err, {path});
        size_ = api_.size(h_);
    }
    ~SentencePieceTokenizer() override { api_.close(h_); }

    std::vector<int64_t> encode(const std::string& text, bool add_special) const override {
        text::require_utf8(text, "text to encode");
        int32_t* raw = nullptr;
        char err[512] = {0};
        const int64_t n = api_.encode(h_, text.data(), text.size(), &raw, err, sizeof err);
        if (n < 0) throw Error(std::string("SentencePiece encode failed: ") + err, {path_});
        std::vector<int64_t> ids;
        if (add_special && api_.bos(h_) >= 0) ids.push_back(api_.bos(h_));
        ids.insert(ids.end(), raw, raw + n);
        api_.free_(raw);
        return ids;
    }

    std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
        std::vector<int32_t> keep;
        for (int64_t id : ids) {
            if (id < 0 || id >= size_) throw Error("token id " + std::to_string(id) + " outside the vocabulary", {path_});
            if (skip_special && is_special(id)) continue;
            keep.push_back(static_cast<int32_t>(id));
        }
        char* raw = nullptr;
        char err[512] = {0};
        const int64_t n = api_.decode(h_, keep.data(), keep.size(), &raw, err, sizeof err);
        if (n < 0) throw Error(std::string("SentencePiece decode failed: ") + err, {path_});
        std::string out(raw, static_cast<size_t>(n));
        api_.free_(raw);
        return out;
    }

    int64_t vocab_size() const override { return size_; }
    std::optional<int64_t> bos_id() const override { return optional(api_.bos(h_)); }
    std::optional<int64_t> eos_id() const override { return optional(api_.eos(h_)); }
    std::string token(int64_t id) const override {
        if (id < 0 || id >= size_) throw Error("token id " + std::to_string(id) + " outside the vocabulary", {path_});
        char* raw = nullptr;
        const int64_t n = api_.piece(h_, static_cast<int32_t>(id), &raw);
        std::string out(raw, static_cast<size_t>(n));
        api_.free_(raw);
        return out;
    }
    std::optional<int64_t> token_id(const std::string& t) const override {
        const int32_t id = api_.piece_id(h_, t.data(), t.size());
        if (id == api_.unk(h_) && t != token(id)) return std::nullopt;
        return id;
    }
    bool is_special(int64_t id) const override {
        const int32_t t = api_.type(h_, static_cast<int32_t>(id));
        return t == 1 || t == 2;
    }
    std::string kind() const override { return "sentencepiece"; }

    float score(int64_t id) const { return api_.score(h_, static_cast<int32_t>(id)); }
    int type(int64_t id) const { return api_.type(h_, static_cast<int32_t>(id)); }

private:
    static std::optional<int64_t> optional(int32_t id) { return id >= 0 ? std::optional<int64_t>(id) : std::nullopt; }
    std::string path_;
    const Api& api_;
    void* h_ = nullptr;
    int64_t size_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& model_path) {
    if (!std::filesystem::is_regular_file(model_path)) throw Error("no such file", {model_path});
    return std::make_unique<SentencePieceTokenizer>(model_path);
}

void train_sentencepiece(const std::string& args) {
    char err[1024] = {0};
    if (api().train(args.c_str(), err, sizeof err) != 0) throw Error(std::string("SentencePiece training failed: ") + err);
}

SentencePieceVocab read_sentencepiece_vocab(const std::string& model_path) {
    SentencePieceTokenizer t(model_path);
    SentencePieceVocab v;
    for (int64_t i = 0; i < t.vocab_size(); ++i) {
        v.pieces.push_back(t.token(i));
        v.scores.push_back(t.score(i));
        v.types.push_back(t.type(i));
    }
    return v;
}

}  // namespace hra
