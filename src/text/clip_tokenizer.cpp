#include "text/clip_tokenizer.h"

#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/strings.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "text/regex.h"
#include "text/unicode.h"

namespace hra {

namespace fs = std::filesystem;

namespace {

constexpr const char* kStart = "<|startoftext|>";
constexpr const char* kEnd = "<|endoftext|>";
// merges[1 : 49152 - 256 - 2 + 1] in simple_tokenizer.py.
constexpr size_t kClipMerges = 49152 - 256 - 2;

std::string read_maybe_gzip(const std::string& path) {
    if (!fs::is_regular_file(path)) throw Error("no such file", {path});
    if (!ends_with(path, ".gz")) return io::read_file(path);
    gzFile f = gzopen(path.c_str(), "rb");
    if (!f) throw Error("cannot open", {path});
    std::string out;
    char buf[1 << 16];
    for (;;) {
        const int n = gzread(f, buf, sizeof buf);
        if (n < 0) {
            int code = 0;
            const std::string msg = gzerror(f, &code);
            gzclose(f);
            throw Error("corrupt gzip data: " + msg, {path});
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    gzclose(f);
    return out;
}

std::vector<std::string> split_lines(const std::string& text) {
    std::vector<std::string> lines;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string line = text.substr(pos, nl - pos);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(std::move(line));
        pos = nl + 1;
    }
    return lines;
}

std::pair<std::string, std::string> merge_pair(const std::string& line, const std::string& source, long number) {
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() || line.find(' ', sp + 1) != std::string::npos)
        throw Error("a merge line holds two symbols separated by one space, got '" + line + "'", {source, "", number});
    return {line.substr(0, sp), line.substr(sp + 1)};
}

uint32_t code_point(const std::string& ch) {
    const auto c = reinterpret_cast<const unsigned char*>(ch.data());
    if (ch.size() == 1) return c[0];
    if (ch.size() == 2) return ((c[0] & 0x1Fu) << 6) | (c[1] & 0x3Fu);
    if (ch.size() == 3) return ((c[0] & 0x0Fu) << 12) | ((c[1] & 0x3Fu) << 6) | (c[2] & 0x3Fu);
    return ((c[0] & 0x07u) << 18) | ((c[1] & 0x3Fu) << 12) | ((c[2] & 0x3Fu) << 6) | (c[3] & 0x3Fu);
}

// ftfy's remove_control_chars set.
bool ftfy_control(uint32_t cp) {
    return cp <= 0x08 || cp == 0x0B || (cp >= 0x0E && cp <= 0x1F) || cp == 0x7F || (cp >= 0x206A && cp <= 0x206F) ||
           cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFC) || (cp >= 0x1D173 && cp <= 0x1D17A) ||
           (cp >= 0xE0000 && cp <= 0xE007F);
}

// ftfy's fix_latin_ligatures and fix_character_width: these characters become their NFKC form.
bool ftfy_compat(uint32_t cp) {
    return cp == 0x0132 || cp == 0x0133 || cp == 0x0149 || (cp >= 0x01C4 && cp <= 0x01CC) ||
           (cp >= 0x01F1 && cp <= 0x01F3) || (cp >= 0xFB00 && cp <= 0xFB06) || cp == 0x3000 ||
           (cp >= 0xFF01 && cp <= 0xFFEF);
}

// Python's html.unescape for the entities prompts use: &amp; &lt; &gt; &quot;
// &apos; &nbsp; and numeric references (&#39; &#x27;).
std::string html_unescape(const std::string& s) {
    static const std::pair<const char*, const char*> named[] = {
        {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"apos", "'"}, {"nbsp", "\xC2\xA0"}};
    std::string out;
    for (size_t i = 0; i < s.size();) {
        if (s[i] != '&') {
            out.push_back(s[i++]);
            continue;
        }
        const size_t semi = s.find(';', i);
        if (semi != std::string::npos && semi - i <= 10) {
            const std::string name = s.substr(i + 1, semi - i - 1);
            std::string rep;
            bool ok = false;
            if (name.size() > 1 && name[0] == '#') {
                const bool hex = name[1] == 'x' || name[1] == 'X';
                const std::string digits = name.substr(hex ? 2 : 1);
                char* end = nullptr;
                const unsigned long v = digits.empty() ? 0 : std::strtoul(digits.c_str(), &end, hex ? 16 : 10);
                if (!digits.empty() && end == digits.c_str() + digits.size() && v > 0 && v <= 0x10FFFF &&
                    !(v >= 0xD800 && v <= 0xDFFF)) {
                    rep = text::utf8_encode(static_cast<uint32_t>(v));
                    ok = true;
                }
            } else {
                for (const auto& [n, r] : named)
                    if (name == n) rep = r, ok = true;
            }
            if (ok) {
                out += rep;
                i = semi + 1;
                continue;
            }
        }
        out.push_back(s[i++]);
    }
    return out;
}

const text::Regex& whitespace_re() {
    static const text::Regex re("\\s+");
    return re;
}

const text::Regex& pretokenizer_re() {
    static const text::Regex re(
        "(?i)<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+");
    return re;
}

std::string collapse_whitespace(const std::string& s) {
    std::string out;
    size_t last = 0;
    for (const auto& [b, e] : whitespace_re().find_all(s)) {
        out.append(s, last, b - last);
        out.push_back(' ');
        last = e;
    }
    out.append(s, last, std::string::npos);
    const size_t first = out.find_first_not_of(' ');
    if (first == std::string::npos) return "";
    return out.substr(first, out.find_last_not_of(' ') - first + 1);
}

}  // namespace

std::string ClipTokenizer::clean(const std::string& input) {
    text::require_utf8(input, "text to tokenize");
    // ftfy.fix_text's parts that apply to ordinary text.
    std::string fixed;
    for (const auto& ch : text::utf8_chars(input)) {
        const uint32_t cp = code_point(ch);
        if (ftfy_control(cp)) continue;
        if (cp == 0x02BC || (cp >= 0x2018 && cp <= 0x201B)) {
            fixed.push_back('\'');
        } else if (cp >= 0x201C && cp <= 0x201F) {
            fixed.push_back('"');
        } else if (ftfy_compat(cp)) {
            fixed += cp == 0x3000 ? std::string(" ") : text::normalize_unicode(ch, "NFKC");
        } else {
            fixed += ch;
        }
    }
    fixed = text::normalize_unicode(fixed, "NFC");
    // simple_tokenizer.py: html.unescape twice, strip; whitespace runs to one space; lower().
    fixed = html_unescape(html_unescape(fixed));
    return text::lowercase_unicode(collapse_whitespace(fixed));
}

ClipTokenizer::ClipTokenizer(std::vector<std::string> tokens, const std::vector<std::pair<std::string, std::string>>& merges,
                             const std::string& source)
    : source_(source), tokens_(std::move(tokens)) {
    for (size_t i = 0; i < tokens_.size(); ++i)
        if (!tokens_[i].empty()) ids_.emplace(tokens_[i], static_cast<int64_t>(i));
    for (size_t i = 0; i < merges.size(); ++i) ranks_.emplace(merges[i], static_cast<int64_t>(i));
    auto special = [&](const char* name) {
        auto it = ids_.find(name);
        if (it == ids_.end()) throw Error(std::string("the vocabulary has no ") + name, {source});
        return it->second;
    };
    start_id_ = special(kStart);
    end_id_ = special(kEnd);
    pad_id_ = end_id_;
}

std::unique_ptr<ClipTokenizer> ClipTokenizer::from_merges_file(const std::string& path) {
    const auto lines = split_lines(read_maybe_gzip(path));
    if (lines.size() < kClipMerges + 1)
        throw Error("expected at least " + std::to_string(kClipMerges) + " merge lines after the header, found " +
                        std::to_string(lines.empty() ? 0 : lines.size() - 1),
                    {path});
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(kClipMerges);
    for (size_t i = 1; i <= kClipMerges; ++i) merges.push_back(merge_pair(lines[i], path, static_cast<long>(i + 1)));
    std::vector<std::string> tokens;
    tokens.reserve(2 * 256 + merges.size() + 2);
    // simple_tokenizer.py: bytes_to_unicode().values() in byte-table order.
    std::vector<std::pair<int, std::string>> order;
    for (int b = 0; b < 256; ++b) order.emplace_back(b, text::byte_to_unicode()[static_cast<size_t>(b)]);
    // The table lists the printable bytes first (!..~, ¡..¬, ®..ÿ), then the others.
    auto printable = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); };
    std::stable_partition(order.begin(), order.end(), [&](const auto& p) { return printable(p.first); });
    for (const auto& [b, s] : order) tokens.push_back(s);
    for (const auto& [b, s] : order) tokens.push_back(s + "</w>");
    for (const auto& [a, b] : merges) tokens.push_back(a + b);
    tokens.push_back(kStart);
    tokens.push_back(kEnd);
    return std::unique_ptr<ClipTokenizer>(new ClipTokenizer(std::move(tokens), merges, path));
}

std::unique_ptr<ClipTokenizer> ClipTokenizer::from_folder(const std::string& dir) {
    fs::path d(dir);
    if (!fs::is_regular_file(d / "vocab.json") && fs::is_regular_file(d / "tokenizer" / "vocab.json")) d /= "tokenizer";
    const std::string vocab_path = (d / "vocab.json").string(), merges_path = (d / "merges.txt").string();
    const nlohmann::json vocab = io::read_json_file(vocab_path);
    if (!vocab.is_object() || vocab.empty()) throw Error("expected an object of token ids", {vocab_path});
    std::vector<std::string> tokens;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 || it.value().get<int64_t>() > 10'000'000)
            throw Error("expected a non-negative token id", {vocab_path, it.key()});
        const auto id = static_cast<size_t>(it.value().get<int64_t>());
        if (id >= tokens.size()) tokens.resize(id + 1);
        if (!tokens[id].empty()) throw Error("id " + std::to_string(id) + " given twice", {vocab_path, it.key()});
        tokens[id] = it.key();
    }
    std::vector<std::pair<std::string, std::string>> merges;
    const auto lines = split_lines(io::read_file(merges_path));
    for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i].empty() || (i == 0 && starts_with(lines[i], "#version"))) continue;
        merges.push_back(merge_pair(lines[i], merges_path, static_cast<long>(i + 1)));
    }
    auto tok = std::unique_ptr<ClipTokenizer>(new ClipTokenizer(std::move(tokens), merges, d.string()));
    const fs::path cfg = d / "tokenizer_config.json";
    if (fs::is_regular_file(cfg)) {
        const nlohmann::json j = io::read_json_file(cfg.string());
        if (j.contains("pad_token") && !j["pad_token"].is_null()) {
            const auto& p = j["pad_token"];
            const std::string name = p.is_object() ? p.value("content", std::string()) : p.is_string() ? p.get<std::string>() : "";
            auto id = tok->token_id(name);
            if (!id) throw Error("pad_token '" + name + "' is not in vocab.json", {cfg.string(), "pad_token"});
            tok->pad_id_ = *id;
        }
        if (j.contains("model_max_length") && j["model_max_length"].is_number_integer()) {
            const int64_t n = j["model_max_length"].get<int64_t>();
            if (n < 2) throw Error("model_max_length must be at least 2", {cfg.string(), "model_max_length"});
            tok->max_length_ = std::min<int64_t>(n, 77);  // CLIP's position table
        }
    }
    return tok;
}

std::unique_ptr<ClipTokenizer> ClipTokenizer::bundled() {
    const char* env = std::getenv("HRA_CLIP_MERGES");
    if (env && *env) return from_merges_file(env);
    return from_merges_file(std::string(HRA_DATA_DIR) + "/clip/bpe_simple_vocab_16e6.txt.gz");
}

std::vector<std::string> ClipTokenizer::bpe(const std::string& piece) const {
    {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        auto it = cache_.find(piece);
        if (it != cache_.end()) return it->second;
    }
    std::vector<std::string> word = text::utf8_chars(piece);
    word.back() += "</w>";
    while (word.size() > 1) {
        int64_t best = std::numeric_limits<int64_t>::max();
        std::pair<std::string, std::string> pair;
        for (size_t i = 0; i + 1 < word.size(); ++i) {
            auto it = ranks_.find({word[i], word[i + 1]});
            if (it != ranks_.end() && it->second < best) best = it->second, pair = it->first;
        }
        if (best == std::numeric_limits<int64_t>::max()) break;
        std::vector<std::string> merged;
        merged.reserve(word.size());
        for (size_t i = 0; i < word.size();) {
            if (i + 1 < word.size() && word[i] == pair.first && word[i + 1] == pair.second) {
                merged.push_back(pair.first + pair.second);
                i += 2;
            } else {
                merged.push_back(word[i++]);
            }
        }
        word = std::move(merged);
    }
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < 100000) cache_.emplace(piece, word);
    return word;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& input, bool add_special) const {
    const std::string text = clean(input);
    std::vector<int64_t> ids;
    if (add_special) ids.push_back(start_id_);
    for (const auto& [b, e] : pretokenizer_re().find_all(text)) {
        const std::string piece = text.substr(b, e - b);
        if (piece == kStart || piece == kEnd) {
            ids.push_back(piece == kStart ? start_id_ : end_id_);
            continue;
        }
        std::string mapped;
        for (unsigned char c : piece) mapped += text::byte_to_unicode()[c];
        for (const auto& sym : bpe(mapped)) {
            auto it = ids_.find(sym);
            if (it == ids_.end()) throw Error("BPE symbol '" + sym + "' is not in the vocabulary", {source_});
            ids.push_back(it->second);
        }
    }
    if (add_special) ids.push_back(end_id_);
    return ids;
}

ClipIds ClipTokenizer::encode_padded(const std::string& text) const {
    ClipIds out;
    const auto body = encode(text, false);
    const size_t room = static_cast<size_t>(max_length_ - 2);
    out.tokens = static_cast<int64_t>(body.size());
    out.truncated = body.size() > room;
    out.ids.push_back(start_id_);
    out.ids.insert(out.ids.end(), body.begin(), body.begin() + static_cast<long>(std::min(room, body.size())));
    out.ids.push_back(end_id_);
    out.ids.resize(static_cast<size_t>(max_length_), pad_id_);
    return out;
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
    std::string joined;
    for (auto id : ids) {
        if (skip_special && is_special(id)) continue;
        joined += token(id);
    }
    std::string bytes;
    size_t i = 0;
    while (i < joined.size()) {
        if (joined.compare(i, 4, "</w>") == 0) {
            bytes.push_back(' ');
            i += 4;
            continue;
        }
        const size_t n = std::max<size_t>(1, text::utf8_sequence_length(joined, i));
        const std::string ch = joined.substr(i, n);
        const int b = text::byte_from_unicode(ch);
        if (b >= 0) bytes.push_back(static_cast<char>(b));
        else bytes += ch;  // special tokens are plain ASCII
        i += n;
    }
    return text::sanitize_utf8(bytes);
}

std::string ClipTokenizer::token(int64_t id) const {
    if (id < 0 || id >= vocab_size()) throw Error("token id " + std::to_string(id) + " is out of range", {source_});
    return tokens_[static_cast<size_t>(id)];
}

std::optional<int64_t> ClipTokenizer::token_id(const std::string& t) const {
    auto it = ids_.find(t);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
}

void ClipTokenizer::save_folder(const std::string& dir) const {
    io::make_dirs(dir);
    nlohmann::ordered_json vocab = nlohmann::ordered_json::object();
    for (size_t i = 0; i < tokens_.size(); ++i) vocab[tokens_[i]] = static_cast<int64_t>(i);
    std::vector<std::pair<int64_t, std::pair<std::string, std::string>>> by_rank;
    for (const auto& [pair, rank] : ranks_) by_rank.emplace_back(rank, pair);
    std::sort(by_rank.begin(), by_rank.end());
    std::string merges = "#version: 0.2\n";
    for (const auto& [rank, pair] : by_rank) merges += pair.first + " " + pair.second + "\n";
    const std::string end = tokens_[static_cast<size_t>(end_id_)];
    nlohmann::ordered_json special = {{"bos_token", tokens_[static_cast<size_t>(start_id_)]},
                                      {"eos_token", end},
                                      {"pad_token", tokens_[static_cast<size_t>(pad_id_)]},
                                      {"unk_token", end}};
    nlohmann::ordered_json config = special;
    config["do_lower_case"] = true;
    config["model_max_length"] = max_length_;
    config["tokenizer_class"] = "CLIPTokenizer";
    const std::filesystem::path d(dir);
    io::write_file_atomically((d / "vocab.json").string(), vocab.dump());
    io::write_file_atomically((d / "merges.txt").string(), merges);
    io::write_file_atomically((d / "tokenizer_config.json").string(), config.dump(2) + "\n");
    io::write_file_atomically((d / "special_tokens_map.json").string(), special.dump(2) + "\n");
}

}  // namespace hra
