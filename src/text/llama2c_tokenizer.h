// llama2.c tokenizer.bin: scored pieces, encoded as run.c does (BOS, a dummy
// " " prefix, code points or byte fallback, then greedy highest-score merges).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace hra {

struct Llama2cVocab {
    std::vector<std::string> pieces;  // UTF-8, spaces as ' ' (BOS/EOS as "\n<s>\n", "\n</s>\n")
    std::vector<float> scores;
    int max_token_length = 0;
};

// Reads `vocab_size` entries (0: until the end of the file). hra::Error names the file.
Llama2cVocab read_llama2c_vocab(const std::string& path, int64_t vocab_size = 0);

// `rescan`: run.c's own merge loop (quadratic in the text's length) instead of the priority
// queue; both give the same ids. The rescan is kept as the tests' oracle and the benchmark's baseline.
std::unique_ptr<Tokenizer> make_llama2c_tokenizer(Llama2cVocab vocab, bool rescan = false);

}  // namespace hra
