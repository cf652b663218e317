// SentencePiece tokenizer.model through Debian's libsentencepiece (loaded as
// the libhra_spm.so module in its own link-map namespace, see spm_plugin.cpp).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace hra {

// hra::Error naming the file when it is not a valid SentencePiece model, or
// when the module cannot be loaded.
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(const std::string& model_path);

// Trains a model with the library (SentencePieceTrainer arguments, e.g.
// "--input=x.txt --model_prefix=m --vocab_size=300 --model_type=bpe").
void train_sentencepiece(const std::string& args);

// A SentencePiece model's vocabulary: pieces, scores and types (0 normal,
// 1 control, 2 unknown, 3 byte, 4 unused).
struct SentencePieceVocab {
    std::vector<std::string> pieces;
    std::vector<float> scores;
    std::vector<int> types;
};
SentencePieceVocab read_sentencepiece_vocab(const std::string& model_path);

}  // namespace hra
