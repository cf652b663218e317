// CLIP's byte-level BPE tokenizer (the text side of Stable Diffusion 1.x/2.x),
// as openai/CLIP's simple_tokenizer.py and transformers' CLIPTokenizer:
//
//  - vocabulary: 256 byte symbols, the same with "</w>", one entry per merge
//    (48,894 in bpe_simple_vocab_16e6), then <|startoftext|> and <|endoftext|>:
//    49,408 ids; or a Hugging Face folder's vocab.json + merges.txt;
//  - cleaning: a subset of ftfy.fix_text (below), HTML entities unescaped
//    twice, whitespace runs collapsed to one space, stripped, lowercased;
//  - pre-tokenizer (case-insensitive): specials | 's 't 're 've 'm 'll 'd |
//    \p{L}+ | one \p{N} | [^\s\p{L}\p{N}]+;
//  - BPE on each piece's UTF-8 bytes through the byte->unicode map, "</w>" on
//    the last symbol, lowest-rank merge first.
//
// ftfy has no C++ counterpart; hra hand-writes the parts of fix_text that
// change ordinary prompts: NFC, curly quotes made straight, Latin ligatures
// split, full-width ASCII made half-width, control characters removed. It
// does not repair mojibake (text decoded with the wrong codec).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/tokenizer.h"

namespace hra {

// Stable Diffusion's prompt ids: start, at most max_length-2 tokens, end,
// then padding to max_length.
struct ClipIds {
    std::vector<int64_t> ids;
    bool truncated = false;  // the text had more than max_length-2 tokens
    int64_t tokens = 0;      // text tokens before truncation
};

class ClipTokenizer : public Tokenizer {
public:
    // From CLIP's merges file (bpe_simple_vocab_16e6.txt, gzip-compressed or not).
    static std::unique_ptr<ClipTokenizer> from_merges_file(const std::string& path);
    // From a Hugging Face CLIPTokenizer folder (vocab.json, merges.txt and,
    // when present, tokenizer_config.json for pad_token and model_max_length),
    // or a diffusers pipeline folder holding one in tokenizer/.
    static std::unique_ptr<ClipTokenizer> from_folder(const std::string& dir);
    // The bundled data/clip/bpe_simple_vocab_16e6.txt.gz (or $HRA_CLIP_MERGES).
    static std::unique_ptr<ClipTokenizer> bundled();

    // Text ids; with add_special, <|startoftext|> before and <|endoftext|> after.
    std::vector<int64_t> encode(const std::string& text, bool add_special = true) const override;
    std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const override;
    // The prompt as the SD pipelines encode it (padding="max_length", truncation).
    ClipIds encode_padded(const std::string& text) const;
    // Writes a Hugging Face CLIPTokenizer folder (vocab.json, merges.txt,
    // tokenizer_config.json, special_tokens_map.json) that from_folder reads back.
    void save_folder(const std::string& dir) const;

    // The cleaned text the pre-tokenizer sees.
    static std::string clean(const std::string& text);

    int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
    std::optional<int64_t> bos_id() const override { return start_id_; }
    std::optional<int64_t> eos_id() const override { return end_id_; }
    int64_t pad_id() const { return pad_id_; }
    int64_t max_length() const { return max_length_; }
    std::string token(int64_t id) const override;
    std::optional<int64_t> token_id(const std::string& token) const override;
    bool is_special(int64_t id) const override { return id == start_id_ || id == end_id_; }
    std::string kind() const override { return "CLIP BPE"; }

private:
    ClipTokenizer(std::vector<std::string> tokens, const std::vector<std::pair<std::string, std::string>>& merges,
                  const std::string& source);
    // The BPE symbols of one pre-tokenized piece (already byte-mapped).
    std::vector<std::string> bpe(const std::string& piece) const;

    std::string source_;
    std::vector<std::string> tokens_;
    std::unordered_map<std::string, int64_t> ids_;
    std::map<std::pair<std::string, std::string>, int64_t> ranks_;
    int64_t start_id_ = 0, end_id_ = 0, pad_id_ = 0, max_length_ = 77;
    mutable std::mutex cache_mutex_;
    mutable std::unordered_map<std::string, std::vector<std::string>> cache_;
};

}  // namespace hra
