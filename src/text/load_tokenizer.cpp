#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "text/clip_tokenizer.h"
#include "text/hf_tokenizer.h"
#include "text/llama2c_tokenizer.h"
#include "text/sp_tokenizer.h"
#include "text/tokenizer.h"
#include "text/unicode.h"

namespace hra {

namespace fs = std::filesystem;

namespace {

// tokenizer_config.json's special tokens: a string or {"content": ...}.
std::string token_name(const nlohmann::json& j, const char* key) {
    if (!j.contains(key) || j[key].is_null()) return "";
    if (j[key].is_string()) return j[key].get<std::string>();
    if (j[key].is_object() && j[key].contains("content")) return j[key]["content"].get<std::string>();
    return "";
}

// CLIP's tokenizer: a folder (or a diffusers pipeline's tokenizer/) with
// vocab.json and merges.txt whose tokenizer_config.json names a CLIP class, or
// that has no tokenizer.json.
bool is_clip_folder(const fs::path& d) {
    if (!fs::is_regular_file(d / "vocab.json") || !fs::is_regular_file(d / "merges.txt")) return false;
    if (!fs::is_regular_file(d / "tokenizer.json")) return true;
    const fs::path cfg = d / "tokenizer_config.json";
    if (!fs::is_regular_file(cfg)) return false;
    const nlohmann::json j = io::read_json_file(cfg.string());
    return j.value("tokenizer_class", std::string()).find("CLIP") != std::string::npos;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir) {
    fs::path d(dir);
    if (!fs::is_regular_file(d / "tokenizer.json") && is_clip_folder(d / "tokenizer")) d /= "tokenizer";
    if (is_clip_folder(d)) return ClipTokenizer::from_folder(d.string());
    if (fs::is_regular_file(d / "tokenizer.json")) {
        HfTokenizerOptions opt;
        const fs::path cfg = d / "tokenizer_config.json";
        if (fs::is_regular_file(cfg)) {
            const nlohmann::json j = io::read_json_file(cfg.string());
            opt.bos_token = token_name(j, "bos_token");
            opt.eos_token = token_name(j, "eos_token");
            const std::string cls = j.value("tokenizer_class", std::string());
            if (cls.find("Llama") != std::string::npos) {
                if (j.contains("add_bos_token") && j["add_bos_token"].is_boolean()) opt.add_bos_token = j["add_bos_token"].get<bool>();
                if (j.contains("add_eos_token") && j["add_eos_token"].is_boolean()) opt.add_eos_token = j["add_eos_token"].get<bool>();
            }
        }
        const std::string path = (d / "tokenizer.json").string();
        return make_hf_tokenizer(io::read_file(path), path, opt);
    }
    if (fs::is_regular_file(d / "tokenizer.model")) return make_sentencepiece_tokenizer((d / "tokenizer.model").string());
    if (fs::is_regular_file(d / "tokenizer.bin")) return make_llama2c_tokenizer(read_llama2c_vocab((d / "tokenizer.bin").string()));
    throw Error("no tokenizer.json, tokenizer.model or tokenizer.bin in the folder", {dir});
}

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<int64_t> context)
    : tokenizer_(tokenizer), ids_(std::move(context)), context_size_(ids_.size()) {
    context_text_ = tokenizer_.decode(ids_);
}

std::string TextStream::decoded() const {
    std::string all = tokenizer_.decode(ids_);
    if (all.compare(0, context_text_.size(), context_text_) == 0) return all.substr(context_text_.size());
    // The context did not decode to a prefix (rare normalisations): decode the new ids alone.
    return tokenizer_.decode(std::vector<int64_t>(ids_.begin() + static_cast<long>(context_size_), ids_.end()));
}

std::string TextStream::push(int64_t id) {
    ids_.push_back(id);
    std::string now = decoded();
    // Hold back while the text ends in an unfinished character (U+FFFD from a partial byte sequence).
    const std::string replacement = "\xEF\xBF\xBD";
    if (now.size() >= replacement.size() && now.compare(now.size() - replacement.size(), replacement.size(), replacement) == 0)
        return "";
    if (text::ends_with_partial_utf8(now)) return "";
    if (now.compare(0, text_.size(), text_) != 0) return "";  // earlier text changed; wait for flush
    std::string fresh = now.substr(text_.size());
    text_ = now;
    return fresh;
}

std::string TextStream::flush() {
    std::string now = decoded();
    if (now.compare(0, text_.size(), text_) != 0) return "";
    std::string fresh = now.substr(text_.size());
    text_ = now;
    return fresh;
}

}  // namespace hra
