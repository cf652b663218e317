// llama2.c tokenizer.bin files, then an encode/decode round of a fixed text.
#include "fuzz_util.h"
#include "text/llama2c_tokenizer.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const auto& path = hra::fuzz::input_file(data, size, ".bin");
    hra::fuzz::expect_named_errors([&] {
        auto tok = hra::make_llama2c_tokenizer(hra::read_llama2c_vocab(path));
        const auto ids = tok->encode("Once upon a time, ünïcode \xff bytes", true);
        (void)tok->decode(ids, false);
    });
    return 0;
}
