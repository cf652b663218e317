// tokenizer.json (normalizers, pre-tokenizers, BPE/Unigram/WordPiece models, added tokens),
// then an encode/decode round of a fixed text.
#include "fuzz_util.h"
#include "text/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    hra::fuzz::expect_named_errors([&] {
        auto tok = hra::make_hf_tokenizer(std::string(reinterpret_cast<const char*>(data), size), "tokenizer.json");
        const auto ids = tok->encode("Hello wörld, 12 345 <s> ünïcode\t\n  spaces", true);
        (void)tok->decode(ids, false);
        for (int64_t id = 0; id < std::min<int64_t>(tok->vocab_size(), 64); ++id) (void)tok->token(id);
    });
    return 0;
}
