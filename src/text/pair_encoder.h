// Sentence / sentence-pair inputs for encoder classifiers (DeBERTa-v3):
// [CLS] A [SEP] and [CLS] A [SEP] B [SEP], truncated longest-first as
// transformers does (one token at a time from the longer side, the second
// on ties).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace hra {

class PairEncoder {
public:
    // The folder's spm.model (DeBERTa-v2/v3), else whatever load_tokenizer
    // finds; [CLS], [SEP], [PAD], [MASK] and [UNK] are looked up by name
    // ([MASK] defaults to the first id past the SentencePiece vocabulary, as
    // deberta-v3's added_tokens.json has it). hra::Error naming the folder
    // when [CLS] or [SEP] is missing.
    static PairEncoder load(const std::string& dir);
    explicit PairEncoder(std::shared_ptr<Tokenizer> tokenizer);

    struct Encoded {
        std::vector<int64_t> ids;
        std::vector<int64_t> token_type_ids;  // 0 for [CLS] A [SEP], 1 for B [SEP]
    };
    // `max_length` counts the special tokens (at least 3 for pairs, 2 otherwise).
    Encoded encode(const std::string& a, const std::string& b, int64_t max_length) const;

    int64_t cls_id() const { return cls_; }
    int64_t sep_id() const { return sep_; }
    int64_t pad_id() const { return pad_; }
    int64_t mask_id() const { return mask_; }
    int64_t unk_id() const { return unk_; }
    const Tokenizer& tokenizer() const { return *tok_; }

private:
    std::shared_ptr<Tokenizer> tok_;
    int64_t cls_ = -1, sep_ = -1, pad_ = 0, mask_ = -1, unk_ = -1;
};

}  // namespace hra
