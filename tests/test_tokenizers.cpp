// Tokenizers against ids from independent implementations: tokenizers.js on
// real tokenizer.json files (tests/fixtures/tokenizers), llama2.c's encoder
// for tok512.bin (the stories260K README), and libsentencepiece itself.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "text/hf_tokenizer.h"
#include "text/llama2c_tokenizer.h"
#include "text/sp_tokenizer.h"
#include "text/tokenizer.h"
#include "test_util.h"

using namespace hra;

namespace {

std::string fixture(const std::string& name) { return std::string(HRA_TEST_FIXTURES) + "/" + name; }

class TokenizerJson : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(TokenizerJson, MatchesTokenizersJs) {
    const std::string base = fixture("tokenizers/" + GetParam());
    auto tok = make_hf_tokenizer(io::read_file(base + ".tokenizer.json"), base + ".tokenizer.json");
    auto expected = nlohmann::json::parse(io::read_file(base + ".expected.json"));
    int checked = 0;
    for (const auto& c : expected["cases"]) {
        const std::string text = c["text"].get<std::string>();
        EXPECT_EQ(tok->encode(text, false), c["ids"].get<std::vector<int64_t>>()) << "text: " << text;
        EXPECT_EQ(tok->encode(text, true), c["ids_with_special"].get<std::vector<int64_t>>()) << "text: " << text;
        EXPECT_EQ(tok->decode(c["ids"].get<std::vector<int64_t>>(), true), c["decoded"].get<std::string>())
            << "text: " << text;
        ++checked;
    }
    EXPECT_GE(checked, 15);
}

INSTANTIATE_TEST_SUITE_P(RealFiles, TokenizerJson, ::testing::Values("gpt2", "dolma2", "neox20b", "phi3mini"));

TEST(TokenizerJsonErrors, UnsupportedPartsAreNamed) {
    const std::string minimal =
        R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},"pre_tokenizer":{"type":"BertPreTokenizer"}})";
    try {
        make_hf_tokenizer(minimal, "t.json");
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("BertPreTokenizer"), std::string::npos) << e.what();
        EXPECT_EQ(e.file(), "t.json");
    }
    EXPECT_THROW(make_hf_tokenizer(R"({"model":{"type":"WordPiece","vocab":{}}})", "t.json"), Error);
    EXPECT_THROW(make_hf_tokenizer("{broken", "t.json"), Error);
    auto ok = make_hf_tokenizer(R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]]}})", "t.json");
    EXPECT_EQ(ok->encode("abab", false), (std::vector<int64_t>{2, 2}));  // merges as pairs (newer files)
    EXPECT_THROW(ok->encode("abc", false), Error);                        // no unk, no byte fallback
    EXPECT_THROW(ok->encode(std::string("a\xff"), false), Error);        // not UTF-8
}

TEST(Llama2cTokenizer, Stories260KGoldenIds) {
    auto tok = make_llama2c_tokenizer(read_llama2c_vocab(test::data_file("stories260K/tok512.bin"), 512));
    // Golden values from the stories260K README (llama2.c's run.c encoder).
    EXPECT_EQ(tok->encode("Once upon a time", true), (std::vector<int64_t>{1, 403, 407, 261, 378}));
    const std::vector<int64_t> continuation = {432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338, 401, 396, 267,
                                               337, 410, 408, 419, 292, 411, 322, 265, 282, 295, 433, 426, 385, 328, 432};
    EXPECT_EQ(tok->decode(continuation), ", there was a little girl named Lily. She loved to play outside in the park. One day,");
    EXPECT_EQ(tok->vocab_size(), 512);
    EXPECT_EQ(tok->decode({1, 403, 407}), "Once upon");  // the space after BOS is dropped, as run.c does
    // Characters missing from the vocabulary fall back to bytes (id = byte + 3) and decode back.
    auto ids = tok->encode("caf\xC3\xA9", false);
    EXPECT_EQ(tok->decode(ids), " caf\xC3\xA9");
    EXPECT_THROW(read_llama2c_vocab(test::data_file("stories260K/tok512.bin"), 600), Error);
}

TEST(SentencePiece, WrapsTheLibrary) {
    // A model file that does not parse is an error naming it.
    test::TempDir dir;
    io::write_file_atomically(dir / "bad.model", "not a model");
    EXPECT_THROW(make_sentencepiece_tokenizer(dir / "bad.model"), Error);
}

TEST(TextStream, EmitsCompleteCharactersInOrder) {
    auto tok = make_hf_tokenizer(io::read_file(fixture("tokenizers/gpt2.tokenizer.json")), "gpt2");
    const std::string text = "Emoji \xF0\x9F\x98\x80 and caf\xC3\xA9!";
    auto ids = tok->encode(text, false);
    auto prompt = tok->encode("Say:", false);
    TextStream stream(*tok, prompt);
    std::string out;
    for (auto id : ids) {
        std::string piece = stream.push(id);
        out += piece;
        // Never a broken character on the way.
        EXPECT_FALSE(piece.find("\xEF\xBF\xBD") != std::string::npos) << piece;
    }
    out += stream.flush();
    EXPECT_EQ(out, text);
}
