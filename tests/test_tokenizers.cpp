// Tokenizers against ids from independent implementations: tokenizers.js on
// real tokenizer.json files (tests/fixtures/tokenizers), llama2.c's encoder
// for tok512.bin (the stories260K README), and libsentencepiece itself.
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "text/hf_tokenizer.h"
#include "text/llama2c_tokenizer.h"
#include "text/sp_tokenizer.h"
#include "text/tokenizer.h"
#include "text/unicode.h"
#include "test_util.h"

using namespace hra;

namespace {

using test::fixture;

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

TEST(TokenizerJsonBpe, PriorityQueueMergesEqualTheRescan) {
    // The rescan is BPE's definition (lowest rank first, leftmost among equals). Random merge
    // tables over a small alphabet make many equal pairs, overlapping runs ("aaa") and merges
    // whose parts merged differently, which is where a queue can go wrong.
    std::mt19937 rng(7);
    const std::vector<std::string> alphabet = {"a", "b", "c", "\u00e4"};
    int compared = 0, merged_somewhere = 0;
    for (int table = 0; table < 40; ++table) {
        std::vector<std::string> vocab = {"a", "b", "c", "\u00e4"};
        nlohmann::json merges = nlohmann::json::array();
        std::set<std::string> seen;
        for (int m = 0; m < 12; ++m) {
            const std::string x = vocab[rng() % vocab.size()], y = vocab[rng() % vocab.size()];
            if (!seen.insert(x + " " + y).second || x.size() + y.size() > 24) continue;
            merges.push_back(x + " " + y);
            if (std::find(vocab.begin(), vocab.end(), x + y) == vocab.end()) vocab.push_back(x + y);
        }
        nlohmann::json j;
        j["model"]["type"] = "BPE";
        for (size_t i = 0; i < vocab.size(); ++i) j["model"]["vocab"][vocab[i]] = i;
        j["model"]["merges"] = merges;
        HfTokenizerOptions rescan;
        rescan.rescan_bpe = true;
        auto queue = make_hf_tokenizer(j.dump(), "random.json"), oracle = make_hf_tokenizer(j.dump(), "random.json", rescan);
        for (int w = 0; w < 60; ++w) {
            std::string word;
            const size_t n = 1 + rng() % 40;
            for (size_t k = 0; k < n; ++k) word += (rng() % 3 == 0) ? alphabet[0] : alphabet[rng() % alphabet.size()];
            const auto ids = queue->encode(word, false);
            ASSERT_EQ(ids, oracle->encode(word, false)) << "table " << table << " merges " << merges.dump() << " word " << word;
            merged_somewhere += ids.size() < n;
            ++compared;
        }
    }
    EXPECT_EQ(compared, 2400);
    EXPECT_GT(merged_somewhere, 1000);  // the tables do merge: the comparison is not of untouched characters
}

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

// What a hostile-input run crashed or hung on: each is now an error naming the file.
TEST(TokenizerJsonErrors, HostileFilesAreErrorsNotCrashes) {
    auto expect_error = [](const std::string& text, const std::string& fragment) {
        try {
            make_hf_tokenizer(text, "t.json");
            ADD_FAILURE() << "expected an error containing '" << fragment << "'";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
            EXPECT_EQ(e.file(), "t.json");
        }
    };
    const std::string model = R"("model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]})";
    // Negative or absurd ids (they index the id table: a heap write out of bounds before).
    expect_error(R"({"model":{"type":"BPE","vocab":{"a":-3,"b":1},"merges":[]}})", "has id -3");
    expect_error(R"({"model":{"type":"BPE","vocab":{"a":0,"b":9223372036854775807},"merges":[]}})", "outside 0..");
    expect_error("{" + model + R"(,"added_tokens":[{"id":-1,"content":"<x>"}]})", "has id -1");
    // A Metaspace with an empty replacement (it looped forever).
    expect_error("{" + model + R"(,"pre_tokenizer":{"type":"Metaspace","replacement":""}})", "non-empty replacement");
    // Normalizer sequences nested 100,000 deep (the recursion overflowed the stack).
    std::string deep = "{" + model + R"(,"normalizer":)";
    for (int i = 0; i < 100000; ++i) deep += R"({"type":"Sequence","normalizers":[)";
    deep += R"({"type":"NFC"})";
    for (int i = 0; i < 100000; ++i) deep += "]}";
    expect_error(deep + "}", "nested deeper than 128");
}

TEST(Llama2cTokenizer, TooFewPiecesForTheByteFallbackIsAnError) {
    // run.c's byte fallback reads ids b + 3: a file of 5 pieces made the encoder read past the vocabulary.
    test::TempDir dir;
    std::string bytes(4, '\0');
    bytes[0] = 8;  // max_token_length
    for (const std::string piece : {"<unk>", "<s>", "</s>", "a", "b"}) {
        const float score = 0;
        const int32_t len = static_cast<int32_t>(piece.size());
        bytes.append(reinterpret_cast<const char*>(&score), 4).append(reinterpret_cast<const char*>(&len), 4).append(piece);
    }
    io::write_file_atomically(dir / "tok5.bin", bytes);
    try {
        read_llama2c_vocab(dir / "tok5.bin", 0);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("holds 5 tokens; a llama2.c vocabulary needs at least 259"), std::string::npos) << e.what();
        EXPECT_EQ(e.file(), dir / "tok5.bin");
    }
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

TEST(Llama2cTokenizer, PriorityQueueMergesEqualRunCsLoop) {
    // run.c's loop (the rescan) is the definition; compare on real text, on runs of one letter
    // (many equal-score pairs) and on random bytes-and-letters, with and without BOS.
    const auto vocab = read_llama2c_vocab(test::data_file("stories260K/tok512.bin"), 512);
    auto queue = make_llama2c_tokenizer(vocab), oracle = make_llama2c_tokenizer(vocab, true);
    std::vector<std::string> texts = {std::string(300, 'a'), "aaaa bbbb  the the the", io::read_file(fixture("gsm8k/README.md")).substr(0, 3000)};
    std::mt19937 rng(3);
    const std::string letters = "the a\nonlyc\xC3\xA9!";
    for (int k = 0; k < 200; ++k) {
        std::string t;
        for (size_t n = rng() % 80; n > 0; --n) t += letters[rng() % letters.size()];
        texts.push_back(text::sanitize_utf8(t));
    }
    size_t merged = 0;
    for (const auto& t : texts)
        for (bool bos : {true, false}) {
            const auto ids = queue->encode(t, bos);
            ASSERT_EQ(ids, oracle->encode(t, bos)) << t;
            merged += ids.size() < t.size();
        }
    EXPECT_GT(merged, 300U);
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
