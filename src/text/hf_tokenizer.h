// Hugging Face tokenizer.json with a BPE model: byte-level (GPT-2, Llama 3,
// Qwen2, SmolLM) and SentencePiece-style (Llama 2: Metaspace / "▁", byte
// fallback). Normalizers, pre-tokenizers, decoders and post-processors are
// read from the file; a component hra does not implement is an error naming it.
#pragma once

#include <memory>
#include <string>

#include "text/tokenizer.h"

namespace hra {

struct HfTokenizerOptions {
    // From tokenizer_config.json: names of BOS/EOS (empty: unknown), and
    // add_bos_token / add_eos_token overrides for Llama tokenizers.
    std::string bos_token, eos_token;
    std::optional<bool> add_bos_token, add_eos_token;
    // The textbook BPE that rescans the whole word after every merge (quadratic in the word's
    // length) instead of the priority-queue merge. Both give the same ids; the rescan is kept as
    // the benchmark's "before" and the tests' oracle.
    bool rescan_bpe = false;
};

// Parses tokenizer.json text; `source` names it in errors.
std::unique_ptr<Tokenizer> make_hf_tokenizer(const std::string& json_text, const std::string& source,
                                             const HfTokenizerOptions& options = {});

}  // namespace hra
