// Writes a SentencePiece-style scored vocabulary (llama2.c tokenizer.bin, a
// SentencePiece BPE model) as a Llama-2 style Hugging Face tokenizer.json:
// BPE with byte fallback, a "▁" prefix and space replacement (as Llama 2's
// own tokenizer.json), merges ordered by the
// merged piece's score (as transformers' SentencePieceExtractor does), and
// the matching tokenizer_config.json.
#pragma once

#include <string>
#include <vector>

namespace hra {

struct ScoredVocab {
    std::vector<std::string> pieces;  // with "▁" for spaces
    std::vector<float> scores;
    std::vector<int> types;  // 0 normal, 1 control, 2 unknown, 3 byte
    int64_t unk_id = 0, bos_id = 1, eos_id = 2;
};

std::string llama_tokenizer_json(const ScoredVocab& vocab);
std::string llama_tokenizer_config_json(const ScoredVocab& vocab, int64_t model_max_length);

}  // namespace hra
