#include "text/hf_tokenizer.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>
#include <functional>
#include <map>
#include <mutex>
#include <queue>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/strings.h"
#include "io/json_file.h"
#include "io/json_value.h"
#include "text/regex.h"
#include "text/unicode.h"

namespace hra {

using json = nlohmann::json;
using text::utf8_chars;

namespace {

const std::string kSpm = "\xE2\x96\x81";  // "▁"
// Token ids any reader accepts (the largest real vocabularies hold about 256k): ids index a table.
constexpr int64_t kMaxVocab = int64_t{1} << 24;

// A piece of input during pre-tokenisation; at_start: begins at offset 0 of the input.
struct Piece {
    std::string text;
    bool at_start;
};

using NormFn = std::function<std::string(const std::string&)>;
using PreFn = std::function<std::vector<Piece>(const std::vector<Piece>&)>;
using DecFn = std::function<std::vector<std::string>(std::vector<std::string>)>;

struct AddedToken {
    int64_t id;
    std::string content;
    bool special, lstrip, rstrip, single_word;
};

// Splits by match ranges with one of tokenizers' SplitDelimiterBehavior values.
std::vector<Piece> split_pieces(const Piece& p, const std::vector<std::pair<size_t, size_t>>& matches,
                                const std::string& behavior, bool invert) {
    // Alternating segments: (text, is_delimiter).
    std::vector<std::pair<std::string, bool>> seg;
    size_t pos = 0;
    for (const auto& [b, e] : matches) {
        if (b > pos) seg.emplace_back(p.text.substr(pos, b - pos), invert);
        seg.emplace_back(p.text.substr(b, e - b), !invert);
        pos = e;
    }
    if (pos < p.text.size()) seg.emplace_back(p.text.substr(pos), invert);
    std::vector<std::string> parts;
    if (behavior == "Isolated") {
        for (auto& s : seg) parts.push_back(s.first);
    } else if (behavior == "Removed") {
        for (auto& s : seg)
            if (!s.second) parts.push_back(s.first);
    } else if (behavior == "MergedWithPrevious") {
        for (auto& s : seg) {
            if (s.second && !parts.empty()) parts.back() += s.first;
            else parts.push_back(s.first);
        }
    } else if (behavior == "MergedWithNext") {
        bool carry = false;
        for (auto& s : seg) {
            if (carry) parts.back() += s.first;
            else parts.push_back(s.first);
            carry = s.second;
        }
    } else if (behavior == "Contiguous") {
        bool prev_delim = false;
        for (auto& s : seg) {
            if (s.second && prev_delim && !parts.empty()) parts.back() += s.first;
            else parts.push_back(s.first);
            prev_delim = s.second;
        }
    } else {
        throw Error("unsupported split behavior '" + behavior + "'");
    }
    std::vector<Piece> out;
    bool first = true;
    for (auto& t : parts) {
        if (t.empty()) continue;
        out.push_back({t, p.at_start && first});
        first = false;
    }
    return out;
}

class HfTokenizer : public Tokenizer {
public:
    HfTokenizer(const std::string& text, const std::string& source, const HfTokenizerOptions& options)
        : source_(source) {
        const json j = io::parse_json(text, source);
        try {
            parse(j, options);
        } catch (const Error& e) {
            throw e.in_file(source);
        } catch (const json::exception& e) {
            throw Error(std::string("unexpected structure: ") + e.what(), {source});
        }
    }

    std::vector<int64_t> encode(const std::string& input, bool add_special) const override {
        text::require_utf8(input, "text to encode");
        std::vector<int64_t> ids;
        for (const auto& [segment, added] : split_added(input)) {
            if (added >= 0) {
                ids.push_back(added);
                continue;
            }
            std::string normalized = segment.text;
            for (const auto& n : normalizers_) normalized = n(normalized);
            std::vector<Piece> pieces = {{normalized, segment.at_start}};
            for (const auto& p : pre_tokenizers_) pieces = p(pieces);
            for (const auto& piece : pieces) bpe(piece.text, ids);
        }
        if (!add_special) return ids;
        std::vector<int64_t> out = prefix_;
        out.insert(out.end(), ids.begin(), ids.end());
        out.insert(out.end(), suffix_.begin(), suffix_.end());
        return out;
    }

    std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
        std::vector<std::string> tokens;
        for (int64_t id : ids) {
            if (id < 0 || id >= vocab_size())
                throw Error("token id " + std::to_string(id) + " outside the vocabulary (" + std::to_string(vocab_size()) + ")",
                            {source_});
            if (skip_special && is_special(id)) continue;
            tokens.push_back(id_to_token_[id]);
        }
        if (decoders_.empty()) {
            std::string out;
            for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
            return out;
        }
        for (const auto& d : decoders_) tokens = d(std::move(tokens));
        std::string out;
        for (const auto& t : tokens) out += t;
        return out;
    }

    int64_t vocab_size() const override { return static_cast<int64_t>(id_to_token_.size()); }
    std::optional<int64_t> bos_id() const override { return bos_; }
    std::optional<int64_t> eos_id() const override { return eos_; }
    std::string token(int64_t id) const override {
        if (id < 0 || id >= vocab_size()) throw Error("token id " + std::to_string(id) + " outside the vocabulary", {source_});
        return id_to_token_[id];
    }
    std::optional<int64_t> token_id(const std::string& t) const override {
        auto it = token_to_id_.find(t);
        if (it == token_to_id_.end()) return std::nullopt;
        return it->second;
    }
    bool is_special(int64_t id) const override { return special_ids_.count(id) != 0; }
    std::string kind() const override { return "tokenizer.json (BPE)"; }

private:
    void parse(const json& j, const HfTokenizerOptions& options) {
        const json& model = j.at("model");
        const std::string mtype = model.value("type", std::string("BPE"));
        if (mtype != "BPE") throw Error("only BPE tokenizer models are supported, found '" + mtype + "'", {"", "model.type"});
        if (model.contains("continuing_subword_prefix") && !model["continuing_subword_prefix"].is_null() &&
            !model["continuing_subword_prefix"].get<std::string>().empty())
            throw Error("continuing_subword_prefix is not supported", {"", "model.continuing_subword_prefix"});
        if (model.contains("end_of_word_suffix") && !model["end_of_word_suffix"].is_null() &&
            !model["end_of_word_suffix"].get<std::string>().empty())
            throw Error("end_of_word_suffix is not supported", {"", "model.end_of_word_suffix"});
        rescan_bpe_ = options.rescan_bpe;
        byte_fallback_ = model.value("byte_fallback", false);
        ignore_merges_ = model.value("ignore_merges", false);
        fuse_unk_ = model.value("fuse_unk", false);
        int64_t max_id = -1;
        // Ids index a table: negative or absurd ones are errors before it is allocated.
        auto checked_id = [](int64_t id, const std::string& token, const char* where) {
            if (id < 0 || id >= kMaxVocab)
                throw Error("token '" + token + "' has id " + std::to_string(id) + ", outside 0.." + std::to_string(kMaxVocab - 1), {"", where});
            return id;
        };
        for (auto it = model.at("vocab").begin(); it != model.at("vocab").end(); ++it) {
            const int64_t id = checked_id(io::json_get<int64_t>(it.value(), "model.vocab", source_), it.key(), "model.vocab");
            vocab_[it.key()] = id;
            max_id = std::max(max_id, id);
        }
        int rank = 0;
        for (const auto& m : model.at("merges")) {
            std::string a, b;
            if (m.is_string()) {
                const std::string s = m.get<std::string>();
                const size_t sp = s.find(' ', 1);
                if (sp == std::string::npos) throw Error("merge without a space: '" + s + "'", {"", "model.merges"});
                a = s.substr(0, sp), b = s.substr(sp + 1);
            } else {
                a = m.at(0).get<std::string>(), b = m.at(1).get<std::string>();
            }
            merges_.emplace(a + '\x01' + b, rank++);
        }
        if (model.contains("unk_token") && !model["unk_token"].is_null()) {
            auto it = vocab_.find(model["unk_token"].get<std::string>());
            if (it != vocab_.end()) unk_ = it->second;
        }
        if (j.contains("added_tokens")) {
            for (const auto& t : j["added_tokens"]) {
                AddedToken a{checked_id(io::json_get<int64_t>(t.at("id"), "added_tokens", source_), t.at("content").get<std::string>(), "added_tokens"),
                             t.at("content").get<std::string>(), t.value("special", false),
                             t.value("lstrip", false), t.value("rstrip", false), t.value("single_word", false)};
                max_id = std::max(max_id, a.id);
                if (a.special) special_ids_.insert(a.id);
                added_.push_back(a);
            }
            // Longest first, so that matching takes the longest token at a position.
            std::stable_sort(added_.begin(), added_.end(),
                             [](const AddedToken& x, const AddedToken& y) { return x.content.size() > y.content.size(); });
        }
        id_to_token_.assign(static_cast<size_t>(max_id + 1), "");
        for (const auto& [tok, id] : vocab_) id_to_token_[id] = tok;
        for (const auto& a : added_) id_to_token_[a.id] = a.content;
        for (size_t i = 0; i < id_to_token_.size(); ++i) token_to_id_[id_to_token_[i]] = static_cast<int64_t>(i);

        if (j.contains("normalizer") && !j["normalizer"].is_null()) add_normalizer(j["normalizer"]);
        if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) add_pre_tokenizer(j["pre_tokenizer"]);
        if (j.contains("decoder") && !j["decoder"].is_null()) add_decoder(j["decoder"]);
        if (j.contains("post_processor") && !j["post_processor"].is_null()) add_post_processor(j["post_processor"]);

        auto lookup = [&](const std::string& name) -> std::optional<int64_t> {
            if (name.empty()) return std::nullopt;
            auto id = token_id(name);
            if (!id) throw Error("special token '" + name + "' is not in the vocabulary");
            return id;
        };
        bos_ = options.bos_token.empty() ? template_bos_ : lookup(options.bos_token);
        eos_ = options.eos_token.empty() ? template_eos_ : lookup(options.eos_token);
        // LlamaTokenizerFast rebuilds its template from add_bos_token / add_eos_token.
        if (options.add_bos_token || options.add_eos_token) {
            prefix_.clear();
            suffix_.clear();
            if (options.add_bos_token.value_or(bos_.has_value()) && bos_) prefix_.push_back(*bos_);
            if (options.add_eos_token.value_or(false) && eos_) suffix_.push_back(*eos_);
        }
    }

    void add_normalizer(const json& n) {
        const std::string type = n.at("type").get<std::string>();
        if (type == "Sequence") {
            for (const auto& s : n.at("normalizers")) add_normalizer(s);
        } else if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
            normalizers_.push_back([type](const std::string& s) { return text::normalize_unicode(s, type); });
        } else if (type == "Prepend") {
            const std::string pre = n.at("prepend").get<std::string>();
            normalizers_.push_back([pre](const std::string& s) { return s.empty() ? s : pre + s; });
        } else if (type == "Replace") {
            normalizers_.push_back(make_replace(n));
        } else if (type == "Lowercase") {
            normalizers_.push_back([](const std::string& s) {
                std::string out = s;
                for (auto& c : out)
                    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
                return out;
            });
        } else {
            throw Error("unsupported normalizer '" + type + "'", {"", "normalizer"});
        }
    }

    static std::function<std::string(const std::string&)> make_replace(const json& n) {
        const std::string content = n.at("content").get<std::string>();
        const json& pat = n.at("pattern");
        if (pat.contains("String")) {
            const std::string from = pat["String"].get<std::string>();
            return [from, content](const std::string& s) { return replace_all(s, from, content); };
        }
        auto re = std::make_shared<text::Regex>(pat.at("Regex").get<std::string>());
        return [re, content](const std::string& s) {
            std::string out;
            size_t pos = 0;
            for (const auto& [b, e] : re->find_all(s)) {
                out += s.substr(pos, b - pos) + content;
                pos = e;
            }
            return out + s.substr(pos);
        };
    }

    void add_pre_tokenizer(const json& p) {
        const std::string type = p.at("type").get<std::string>();
        if (type == "Sequence") {
            for (const auto& s : p.at("pretokenizers")) add_pre_tokenizer(s);
        } else if (type == "ByteLevel") {
            const bool prefix = p.value("add_prefix_space", false);
            const bool use_regex = p.value("use_regex", true);
            std::shared_ptr<text::Regex> re;
            if (use_regex)
                re = std::make_shared<text::Regex>(
                    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
            pre_tokenizers_.push_back([prefix, re](const std::vector<Piece>& in) {
                std::vector<Piece> out;
                for (const auto& p0 : in) {
                    Piece p = p0;
                    if (prefix && (p.text.empty() || p.text[0] != ' ')) p.text = " " + p.text;
                    std::vector<Piece> parts = re ? split_pieces(p, re->find_all(p.text), "Isolated", false)
                                                  : std::vector<Piece>{p};
                    for (auto& part : parts) {
                        std::string mapped;
                        for (unsigned char c : part.text) mapped += text::byte_to_unicode()[c];
                        out.push_back({mapped, part.at_start});
                    }
                }
                return out;
            });
        } else if (type == "Split") {
            const std::string behavior = p.at("behavior").get<std::string>();
            const bool invert = p.value("invert", false);
            const json& pat = p.at("pattern");
            std::shared_ptr<text::Regex> re;
            std::string literal;
            if (pat.contains("Regex")) re = std::make_shared<text::Regex>(pat["Regex"].get<std::string>());
            else literal = pat.at("String").get<std::string>();
            pre_tokenizers_.push_back([=](const std::vector<Piece>& in) {
                std::vector<Piece> out;
                for (const auto& piece : in) {
                    std::vector<std::pair<size_t, size_t>> m;
                    if (re) {
                        m = re->find_all(piece.text);
                    } else if (!literal.empty()) {
                        for (size_t pos = 0; (pos = piece.text.find(literal, pos)) != std::string::npos; pos += literal.size())
                            m.emplace_back(pos, pos + literal.size());
                    }
                    auto parts = split_pieces(piece, m, behavior, invert);
                    out.insert(out.end(), parts.begin(), parts.end());
                }
                return out;
            });
        } else if (type == "Metaspace") {
            const std::string rep = p.value("replacement", kSpm);
            if (rep.empty()) throw Error("Metaspace needs a non-empty replacement", {"", "pre_tokenizer.replacement"});
            std::string scheme = "always";
            if (p.contains("prepend_scheme")) scheme = p["prepend_scheme"].get<std::string>();
            else if (p.contains("add_prefix_space") && !p["add_prefix_space"].get<bool>()) scheme = "never";
            const bool split = p.value("split", true);
            metaspace_scheme_ = scheme;
            pre_tokenizers_.push_back([rep, scheme, split](const std::vector<Piece>& in) {
                std::vector<Piece> out;
                for (const auto& piece : in) {
                    Piece q{replace_all(piece.text, " ", rep), piece.at_start};
                    const bool prepend = scheme == "always" || (scheme == "first" && piece.at_start);
                    if (prepend && q.text.rfind(rep, 0) != 0) q.text = rep + q.text;
                    if (!split) {
                        out.push_back(q);
                        continue;
                    }
                    std::vector<std::pair<size_t, size_t>> m;
                    for (size_t pos = 0; (pos = q.text.find(rep, pos)) != std::string::npos; pos += rep.size())
                        m.emplace_back(pos, pos + rep.size());
                    auto parts = split_pieces(q, m, "MergedWithNext", false);
                    out.insert(out.end(), parts.begin(), parts.end());
                }
                return out;
            });
        } else if (type == "Digits") {
            const bool individual = p.value("individual_digits", false);
            auto re = std::make_shared<text::Regex>(individual ? R"(\p{N})" : R"(\p{N}+)");
            pre_tokenizers_.push_back([re](const std::vector<Piece>& in) {
                std::vector<Piece> out;
                for (const auto& piece : in) {
                    auto parts = split_pieces(piece, re->find_all(piece.text), "Isolated", false);
                    out.insert(out.end(), parts.begin(), parts.end());
                }
                return out;
            });
        } else {
            throw Error("unsupported pre_tokenizer '" + type + "'", {"", "pre_tokenizer"});
        }
    }

    void add_decoder(const json& d) {
        const std::string type = d.at("type").get<std::string>();
        if (type == "Sequence") {
            for (const auto& s : d.at("decoders")) add_decoder(s);
        } else if (type == "ByteLevel") {
            decoders_.push_back([](std::vector<std::string> tokens) {
                std::string bytes;
                for (const auto& t : tokens)
                    for (const auto& ch : utf8_chars(t)) {
                        const int b = text::byte_from_unicode(ch);
                        if (b >= 0) bytes.push_back(static_cast<char>(b));
                        else bytes += ch;
                    }
                return std::vector<std::string>{text::sanitize_utf8(bytes)};
            });
        } else if (type == "Replace") {
            auto fn = make_replace(d);
            decoders_.push_back([fn](std::vector<std::string> tokens) {
                for (auto& t : tokens) t = fn(t);
                return tokens;
            });
        } else if (type == "ByteFallback") {
            decoders_.push_back([](std::vector<std::string> tokens) {
                std::vector<std::string> out;
                std::string bytes;
                size_t count = 0;
                auto flush = [&] {
                    if (count == 0) return;
                    bool valid = true;
                    for (size_t i = 0; i < bytes.size();) {
                        const size_t n = text::utf8_sequence_length(bytes, i);
                        if (!n) {
                            valid = false;
                            break;
                        }
                        i += n;
                    }
                    if (valid) {
                        out.push_back(bytes);
                    } else {
                        for (size_t i = 0; i < count; ++i) out.push_back("\xEF\xBF\xBD");
                    }
                    bytes.clear();
                    count = 0;
                };
                for (auto& t : tokens) {
                    if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
                        std::isxdigit(static_cast<unsigned char>(t[4]))) {
                        bytes.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
                        ++count;
                    } else {
                        flush();
                        out.push_back(t);
                    }
                }
                flush();
                return out;
            });
        } else if (type == "Fuse") {
            decoders_.push_back([](std::vector<std::string> tokens) {
                std::string all;
                for (const auto& t : tokens) all += t;
                return std::vector<std::string>{all};
            });
        } else if (type == "Strip") {
            const std::string content = d.at("content").get<std::string>();
            const int start = d.value("start", 0), stop = d.value("stop", 0);
            decoders_.push_back([content, start, stop](std::vector<std::string> tokens) {
                for (auto& t : tokens) {
                    for (int i = 0; i < start && t.rfind(content, 0) == 0; ++i) t.erase(0, content.size());
                    for (int i = 0; i < stop && t.size() >= content.size() &&
                                    t.compare(t.size() - content.size(), content.size(), content) == 0;
                         ++i)
                        t.erase(t.size() - content.size());
                }
                return tokens;
            });
        } else if (type == "Metaspace") {
            const std::string rep = d.value("replacement", kSpm);
            std::string scheme = "always";
            if (d.contains("prepend_scheme")) scheme = d["prepend_scheme"].get<std::string>();
            else if (d.contains("add_prefix_space") && !d["add_prefix_space"].get<bool>()) scheme = "never";
            decoders_.push_back([rep, scheme](std::vector<std::string> tokens) {
                for (size_t i = 0; i < tokens.size(); ++i) {
                    tokens[i] = replace_all(tokens[i], rep, " ");
                    if (i == 0 && scheme != "never" && !tokens[i].empty() && tokens[i][0] == ' ') tokens[i].erase(0, 1);
                }
                return tokens;
            });
        } else {
            throw Error("unsupported decoder '" + type + "'", {"", "decoder"});
        }
    }

    void add_post_processor(const json& p) {
        const std::string type = p.at("type").get<std::string>();
        if (type == "Sequence") {
            for (const auto& s : p.at("processors")) add_post_processor(s);
        } else if (type == "ByteLevel") {
            // offsets only
        } else if (type == "TemplateProcessing") {
            std::map<std::string, std::vector<int64_t>> specials;
            for (auto it = p.at("special_tokens").begin(); it != p.at("special_tokens").end(); ++it)
                specials[it.key()] = it.value().at("ids").get<std::vector<int64_t>>();
            bool after = false;
            prefix_.clear();
            suffix_.clear();
            for (const auto& item : p.at("single")) {
                if (item.contains("Sequence")) {
                    after = true;
                    continue;
                }
                const std::string name = item.at("SpecialToken").at("id").get<std::string>();
                auto it = specials.find(name);
                if (it == specials.end()) throw Error("template names unknown special token '" + name + "'", {"", "post_processor"});
                auto& dst = after ? suffix_ : prefix_;
                dst.insert(dst.end(), it->second.begin(), it->second.end());
            }
            if (!prefix_.empty()) template_bos_ = prefix_.front();
            if (!suffix_.empty()) template_eos_ = suffix_.back();
        } else if (type == "RobertaProcessing" || type == "BertProcessing") {
            prefix_ = {io::json_get<int64_t>(p.at("cls").at(1), "post_processor.cls", source_)};
            suffix_ = {io::json_get<int64_t>(p.at("sep").at(1), "post_processor.sep", source_)};
            template_bos_ = prefix_.front();
            template_eos_ = suffix_.back();
        } else {
            throw Error("unsupported post_processor '" + type + "'", {"", "post_processor"});
        }
    }

    // Splits the input on added tokens (leftmost, longest first); the id is -1 for plain text.
    std::vector<std::pair<Piece, int64_t>> split_added(const std::string& s) const {
        std::vector<std::pair<Piece, int64_t>> out;
        size_t start = 0, i = 0;
        auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
        auto is_word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
        while (i < s.size()) {
            const AddedToken* hit = nullptr;
            for (const auto& a : added_) {
                if (a.content.empty() || s.compare(i, a.content.size(), a.content) != 0) continue;
                if (a.single_word && ((i > 0 && is_word(s[i - 1])) ||
                                      (i + a.content.size() < s.size() && is_word(s[i + a.content.size()]))))
                    continue;
                hit = &a;
                break;
            }
            if (!hit) {
                ++i;
                continue;
            }
            size_t left = i, right = i + hit->content.size();
            if (hit->lstrip)
                while (left > start && is_space(s[left - 1])) --left;
            if (hit->rstrip)
                while (right < s.size() && is_space(s[right])) ++right;
            if (left > start) out.push_back({{s.substr(start, left - start), start == 0}, -1});
            out.push_back({{hit->content, left == 0}, hit->id});
            start = i = right;
        }
        if (start < s.size()) out.push_back({{s.substr(start), start == 0}, -1});
        return out;
    }

    void bpe(const std::string& word, std::vector<int64_t>& ids) const {
        if (word.empty()) return;
        {
            std::lock_guard<std::mutex> lock(cache_mu_);
            auto it = cache_.find(word);
            if (it != cache_.end()) {
                ids.insert(ids.end(), it->second.begin(), it->second.end());
                return;
            }
        }
        std::vector<int64_t> out;
        auto direct = vocab_.find(word);
        std::vector<std::string> symbols;
        if (ignore_merges_ && direct != vocab_.end())
            symbols = {word};
        else
            symbols = rescan_bpe_ ? merge_by_rescan(word) : merge_by_queue(word);
        bool last_unk = false;
        for (const auto& sym : symbols) {
            auto it = vocab_.find(sym);
            if (it != vocab_.end()) {
                out.push_back(it->second);
                last_unk = false;
                continue;
            }
            if (byte_fallback_) {
                std::vector<int64_t> bytes;
                for (unsigned char c : sym) {
                    char name[8];
                    std::snprintf(name, sizeof name, "<0x%02X>", c);
                    auto b = vocab_.find(name);
                    if (b == vocab_.end()) {
                        bytes.clear();
                        break;
                    }
                    bytes.push_back(b->second);
                }
                if (!bytes.empty()) {
                    out.insert(out.end(), bytes.begin(), bytes.end());
                    last_unk = false;
                    continue;
                }
            }
            if (!unk_) throw Error("'" + sym + "' is not in the vocabulary and the model has no unk_token", {source_});
            if (!(fuse_unk_ && last_unk)) out.push_back(*unk_);
            last_unk = true;
        }
        {
            std::lock_guard<std::mutex> lock(cache_mu_);
            if (cache_.size() < 100000 && word.size() <= 1024) cache_[word] = out;  // bounded memory
        }
        ids.insert(ids.end(), out.begin(), out.end());
    }

    // Rank of the merge (a, b), or -1; `key` is scratch space.
    int merge_rank(const char* a, size_t na, const char* b, size_t nb, std::string& key) const {
        key.assign(a, na).append(1, '\x01').append(b, nb);
        auto it = merges_.find(key);
        return it == merges_.end() ? -1 : it->second;
    }
    int merge_rank(const std::string& a, const std::string& b, std::string& key) const {
        return merge_rank(a.data(), a.size(), b.data(), b.size(), key);
    }

    // The definition: merge the lowest-ranked adjacent pair (the leftmost among equals) until none
    // is a merge. Rescans the word after each merge: O(n^2) lookups for an n-character word.
    std::vector<std::string> merge_by_rescan(const std::string& word) const {
        std::vector<std::string> symbols = utf8_chars(word);
        std::string key;
        while (symbols.size() > 1) {
            int best = -1;
            size_t at = 0;
            for (size_t k = 0; k + 1 < symbols.size(); ++k) {
                const int r = merge_rank(symbols[k], symbols[k + 1], key);
                if (r >= 0 && (best < 0 || r < best)) best = r, at = k;
            }
            if (best < 0) break;
            symbols[at] += symbols[at + 1];
            symbols.erase(symbols.begin() + static_cast<long>(at) + 1);
        }
        return symbols;
    }

    // The same merges in O(n log n): symbols are a doubly linked list over the word's bytes and
    // candidate pairs sit in a min-heap keyed by (rank, byte offset), so the pair popped is the one
    // the rescan would pick. A popped pair is stale when either side has since merged; its
    // recorded combined length then no longer matches. (The algorithm of HF tokenizers' word.rs,
    // hand-written: no Debian package offers BPE over tokenizer.json.)
    std::vector<std::string> merge_by_queue(const std::string& word) const {
        struct Sym {
            size_t start, len;
            long prev, next;
        };
        struct Cand {
            int rank;
            size_t start, len;  // the left symbol's offset; the pair's combined length
            long left, right;
            bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : start > o.start; }
        };
        std::vector<Sym> syms;
        syms.reserve(word.size());
        for (size_t start = 0; start < word.size();) {  // characters as utf8_chars cuts them
            const size_t n = std::max<size_t>(1, text::utf8_sequence_length(word, start));
            syms.push_back({start, n, static_cast<long>(syms.size()) - 1, static_cast<long>(syms.size()) + 1});
            start += n;
        }
        if (!syms.empty()) syms.back().next = -1;
        std::vector<Cand> storage;
        storage.reserve(2 * syms.size());
        std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap(std::greater<Cand>(), std::move(storage));
        std::string key;
        auto text = [&](long i) { return word.substr(syms[i].start, syms[i].len); };
        auto consider = [&](long l, long r) {
            if (l < 0 || r < 0) return;
            const int rank = merge_rank(word.data() + syms[l].start, syms[l].len, word.data() + syms[r].start, syms[r].len, key);
            if (rank >= 0) heap.push({rank, syms[l].start, syms[l].len + syms[r].len, l, r});
        };
        for (long i = 0; i + 1 < static_cast<long>(syms.size()); ++i) consider(i, i + 1);
        while (!heap.empty()) {
            const Cand c = heap.top();
            heap.pop();
            Sym& l = syms[c.left];
            if (l.len == 0 || l.next != c.right || l.len + syms[c.right].len != c.len) continue;
            Sym& r = syms[c.right];
            l.len += r.len;
            r.len = 0;
            l.next = r.next;
            if (r.next >= 0) syms[r.next].prev = c.left;
            consider(l.prev, c.left);
            consider(c.left, l.next);
        }
        std::vector<std::string> out;
        for (long i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) out.push_back(text(i));
        return out;
    }

    std::string source_;
    std::unordered_map<std::string, int64_t> vocab_;
    std::unordered_map<std::string, int> merges_;
    std::vector<std::string> id_to_token_;
    std::unordered_map<std::string, int64_t> token_to_id_;
    std::vector<AddedToken> added_;
    std::set<int64_t> special_ids_;
    std::vector<NormFn> normalizers_;
    std::vector<PreFn> pre_tokenizers_;
    std::vector<DecFn> decoders_;
    std::vector<int64_t> prefix_, suffix_;
    std::optional<int64_t> template_bos_, template_eos_, bos_, eos_, unk_;
    std::string metaspace_scheme_;
    bool byte_fallback_ = false, ignore_merges_ = false, fuse_unk_ = false, rescan_bpe_ = false;
    mutable std::mutex cache_mu_;
    mutable std::unordered_map<std::string, std::vector<int64_t>> cache_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& json_text, const std::string& source,
                                             const HfTokenizerOptions& options) {
    return std::make_unique<HfTokenizer>(json_text, source, options);
}

}  // namespace hra
