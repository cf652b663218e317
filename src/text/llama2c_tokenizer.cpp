#include "text/llama2c_tokenizer.h"

#include <cstdio>
#include <cstring>
#include <queue>
#include <unordered_map>

#include "common/error.h"
#include "io/atomic_file.h"
#include "text/unicode.h"

namespace hra {

Llama2cVocab read_llama2c_vocab(const std::string& path, int64_t vocab_size) {
    const std::string data = io::read_file(path);
    if (data.size() < 4) throw Error("file too small for a llama2.c tokenizer", {path});
    size_t pos = 4;
    Llama2cVocab v;
    int32_t max_len = 0;
    std::memcpy(&max_len, data.data(), 4);
    if (max_len <= 0 || max_len > 1024) throw Error("implausible max_token_length " + std::to_string(max_len), {path});
    v.max_token_length = max_len;
    while (pos < data.size() && (vocab_size == 0 || static_cast<int64_t>(v.pieces.size()) < vocab_size)) {
        const size_t index = v.pieces.size();
        if (pos + 8 > data.size()) throw Error("file ends inside entry " + std::to_string(index), {path});
        float score;
        int32_t len;
        std::memcpy(&score, data.data() + pos, 4);
        std::memcpy(&len, data.data() + pos + 4, 4);
        pos += 8;
        if (len < 0 || static_cast<size_t>(len) > data.size() - pos)
            throw Error("entry " + std::to_string(index) + " has an impossible length " + std::to_string(len), {path});
        v.pieces.push_back(data.substr(pos, static_cast<size_t>(len)));
        v.scores.push_back(score);
        pos += static_cast<size_t>(len);
    }
    if (vocab_size > 0 && static_cast<int64_t>(v.pieces.size()) < vocab_size)
        throw Error("holds " + std::to_string(v.pieces.size()) + " tokens, the model needs " + std::to_string(vocab_size),
                    {path});
    // run.c's layout: <unk>, <s>, </s>, then the 256 byte tokens (byte b is id b + 3, the encoder's fallback).
    if (v.pieces.size() < 259)
        throw Error("holds " + std::to_string(v.pieces.size()) + " tokens; a llama2.c vocabulary needs at least 259 (3 special, 256 bytes)",
                    {path});
    return v;
}

namespace {

class Llama2cTokenizer : public Tokenizer {
public:
    Llama2cTokenizer(Llama2cVocab v, bool rescan) : v_(std::move(v)), rescan_(rescan) {
        if (v_.pieces.size() < 259 || v_.scores.size() != v_.pieces.size())
            throw Error("a llama2.c vocabulary needs at least 259 pieces (3 special, 256 bytes), each with a score");
        for (size_t i = 0; i < v_.pieces.size(); ++i) lookup_.emplace(v_.pieces[i], static_cast<int64_t>(i));
    }

    std::vector<int64_t> encode(const std::string& text, bool add_special) const override {
        text::require_utf8(text, "text to encode");
        std::vector<int64_t> ids;
        if (add_special) ids.push_back(1);
        if (text.empty()) return ids;
        if (auto sp = find(" ")) ids.push_back(*sp);  // run.c's dummy prefix
        for (const auto& ch : text::utf8_chars(text)) {
            if (auto id = find(ch)) {
                ids.push_back(*id);
            } else {
                for (unsigned char b : ch) ids.push_back(static_cast<int64_t>(b) + 3);  // byte fallback
            }
        }
        const size_t first = add_special ? 1 : 0;
        return rescan_ ? merge_by_rescan(std::move(ids), first) : merge_by_queue(std::move(ids), first);
    }

    // run.c's loop: merge the adjacent pair whose merged piece scores highest (the leftmost among
    // equals) until none is a piece. Rescans after each merge: quadratic in the text's length.
    std::vector<int64_t> merge_by_rescan(std::vector<int64_t> ids, size_t first) const {
        while (true) {
            float best = -1e10f;
            int64_t best_id = -1;
            size_t at = 0;
            for (size_t i = first; i + 1 < ids.size(); ++i) {
                auto id = find(v_.pieces[ids[i]] + v_.pieces[ids[i + 1]]);
                if (id && v_.scores[*id] > best) best = v_.scores[*id], best_id = *id, at = i;
            }
            if (best_id < 0) break;
            ids[at] = best_id;
            ids.erase(ids.begin() + static_cast<long>(at) + 1);
        }
        return ids;
    }

    // The same merges in O(n log n): a linked list over the ids and a heap of candidate pairs
    // ordered by (score, -position). A popped pair is stale once either side has merged since
    // (its id changed: merged pieces only grow, so an id never comes back).
    std::vector<int64_t> merge_by_queue(std::vector<int64_t> ids, size_t first) const {
        struct Cand {
            float score;
            long left, right;
            int64_t left_id, right_id, merged;
            bool operator<(const Cand& o) const { return score != o.score ? score < o.score : left > o.left; }
        };
        const long n = static_cast<long>(ids.size());
        std::vector<long> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
        std::vector<bool> alive(static_cast<size_t>(n), true);
        for (long i = 0; i < n; ++i) prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;
        std::priority_queue<Cand> heap;
        auto consider = [&](long l, long r) {
            if (l < static_cast<long>(first) || r < 0) return;
            auto id = find(v_.pieces[ids[l]] + v_.pieces[ids[r]]);
            if (id && v_.scores[*id] > -1e10f) heap.push({v_.scores[*id], l, r, ids[l], ids[r], *id});
        };
        for (long i = 0; i + 1 < n; ++i) consider(i, i + 1);
        while (!heap.empty()) {
            const Cand c = heap.top();
            heap.pop();
            if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right || ids[c.left] != c.left_id || ids[c.right] != c.right_id)
                continue;
            ids[c.left] = c.merged;
            alive[c.right] = false;
            next[c.left] = next[c.right];
            if (next[c.right] >= 0) prev[next[c.right]] = c.left;
            consider(prev[c.left], c.left);
            consider(c.left, next[c.left]);
        }
        std::vector<int64_t> out;
        for (long i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(ids[i]);
        return out;
    }

    std::string decode(const std::vector<int64_t>& ids, bool skip_special) const override {
        std::string out;
        int64_t prev = -1;
        for (int64_t id : ids) {
            if (id < 0 || id >= vocab_size()) throw Error("token id " + std::to_string(id) + " outside the vocabulary");
            if (skip_special && is_special(id)) {
                prev = id;
                continue;
            }
            std::string piece = v_.pieces[id];
            if (prev == 1 && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);  // as run.c
            unsigned int byte;
            char tail;
            if (piece.size() == 6 && std::sscanf(piece.c_str(), "<0x%02X%c", &byte, &tail) == 2 && tail == '>')
                piece = std::string(1, static_cast<char>(byte));
            out += piece;
            prev = id;
        }
        return text::sanitize_utf8(out);
    }

    int64_t vocab_size() const override { return static_cast<int64_t>(v_.pieces.size()); }
    std::optional<int64_t> bos_id() const override { return 1; }
    std::optional<int64_t> eos_id() const override { return 2; }
    std::string token(int64_t id) const override {
        if (id < 0 || id >= vocab_size()) throw Error("token id " + std::to_string(id) + " outside the vocabulary");
        return v_.pieces[id];
    }
    std::optional<int64_t> token_id(const std::string& t) const override { return find(t); }
    bool is_special(int64_t id) const override { return id >= 0 && id <= 2; }
    std::string kind() const override { return "llama2.c"; }

private:
    std::optional<int64_t> find(const std::string& s) const {
        auto it = lookup_.find(s);
        if (it == lookup_.end()) return std::nullopt;
        return it->second;
    }
    Llama2cVocab v_;
    bool rescan_;
    std::unordered_map<std::string, int64_t> lookup_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_llama2c_tokenizer(Llama2cVocab vocab, bool rescan) {
    return std::make_unique<Llama2cTokenizer>(std::move(vocab), rescan);
}

}  // namespace hra
