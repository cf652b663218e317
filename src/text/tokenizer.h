// One tokenizer interface for every vocabulary format hra reads:
// Hugging Face tokenizer.json, SentencePiece tokenizer.model and llama2.c
// tokenizer.bin. No torch here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace hra {

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    // Token ids of `text` (UTF-8; invalid UTF-8 is an hra::Error). With
    // add_special, the tokenizer's own special tokens are added (BOS for Llama).
    virtual std::vector<int64_t> encode(const std::string& text, bool add_special = true) const = 0;
    // Text of `ids`; special tokens are left out when skip_special.
    virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special = true) const = 0;

    virtual int64_t vocab_size() const = 0;
    virtual std::optional<int64_t> bos_id() const = 0;
    virtual std::optional<int64_t> eos_id() const = 0;
    // The vocabulary entry of an id, and the id of an entry (exact match).
    virtual std::string token(int64_t id) const = 0;
    virtual std::optional<int64_t> token_id(const std::string& token) const = 0;
    virtual bool is_special(int64_t id) const = 0;
    // "tokenizer.json (BPE)", "sentencepiece", "llama2.c"
    virtual std::string kind() const = 0;
};

// Picks the tokenizer from what a model folder holds: CLIP's vocab.json +
// merges.txt (also in a diffusers pipeline's tokenizer/), tokenizer.json,
// else tokenizer.model (SentencePiece), else tokenizer.bin (llama2.c).
// tokenizer_config.json, when present, names BOS/EOS.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

// Streams generated text as tokens arrive. Tokens are decoded after the
// `context` ids (the prompt), so that leading spaces come out as they would in
// the whole text; each push returns the new text, holding back an incomplete
// UTF-8 tail.
class TextStream {
public:
    TextStream(const Tokenizer& tokenizer, std::vector<int64_t> context);
    std::string push(int64_t id);
    std::string flush();  // whatever is left
    const std::string& text() const { return text_; }

private:
    std::string decoded() const;
    const Tokenizer& tokenizer_;
    std::vector<int64_t> ids_;
    size_t context_size_;
    std::string context_text_;
    std::string text_;  // generated text emitted so far
};

}  // namespace hra
