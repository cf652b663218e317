// CLIP's tokenizer (Stable Diffusion's text side): the golden ids of
// ../shared/docs/DIFFUSION.md §1 (verified there against openai/CLIP's
// simple_tokenizer.py and merges), SD's 77-id padding and truncation,
// cleaning, Hugging Face folders, bad files and the `hra tokenize` command.
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "text/clip_tokenizer.h"
#include "test_util.h"

using namespace hra;

namespace {

const ClipTokenizer& clip() {
    static const auto tok = ClipTokenizer::bundled();
    return *tok;
}

using Ids = std::vector<int64_t>;

}  // namespace

TEST(ClipTokenizer, GoldenIdsFromTheReference) {
    EXPECT_EQ(clip().vocab_size(), 49408);
    EXPECT_EQ(clip().encode("a photo of qwe dog"), (Ids{49406, 320, 1125, 539, 80, 649, 1929, 49407}));
    EXPECT_EQ(clip().encode("a house, "), (Ids{49406, 320, 1212, 267, 49407}));
    EXPECT_EQ(clip().encode("A  Cube-shaped QWE toy!!"), (Ids{49406, 320, 11353, 268, 10127, 80, 649, 5988, 748, 49407}));
    EXPECT_EQ(clip().encode(""), (Ids{49406, 49407}));
    // "qwe" is q + we</w>: the rare token DreamBooth binds the subject to.
    EXPECT_EQ(clip().token(80), "q");
    EXPECT_EQ(clip().token(649), "we</w>");
    // "sks" (diffusers' DreamBooth examples, the subject demo's identifier) is one token: merge 47,624 of the
    // bundled merges ("s ks</w>", line 47,626 after the header), so id 256 + 256 + 47,624.
    EXPECT_EQ(clip().encode("sks"), (Ids{49406, 48136, 49407}));
    EXPECT_EQ(clip().token(48136), "sks</w>");
    // The subject demo relies on it: its subject prompt has the length of the full captions it pretrains on.
    EXPECT_EQ(clip().encode("a large green sks shape at the middle center").size(),
              clip().encode("a large green circle shape at the middle center").size());
    EXPECT_EQ(clip().token(49406), "<|startoftext|>");
    EXPECT_EQ(clip().token(49407), "<|endoftext|>");
}

TEST(ClipTokenizer, PaddedToSeventySevenAndTruncated) {
    auto p = clip().encode_padded("a photo of qwe dog");
    ASSERT_EQ(p.ids.size(), 77u);
    EXPECT_FALSE(p.truncated);
    EXPECT_EQ(p.tokens, 6);
    EXPECT_EQ(Ids(p.ids.begin(), p.ids.begin() + 8), (Ids{49406, 320, 1125, 539, 80, 649, 1929, 49407}));
    for (size_t i = 8; i < 77; ++i) EXPECT_EQ(p.ids[i], 49407) << i;  // SD 1.5 pads with <|endoftext|>

    std::string long_text;
    for (int i = 0; i < 100; ++i) long_text += "dog ";
    p = clip().encode_padded(long_text);
    EXPECT_TRUE(p.truncated);
    EXPECT_EQ(p.tokens, 100);
    ASSERT_EQ(p.ids.size(), 77u);
    EXPECT_EQ(p.ids.front(), 49406);
    for (size_t i = 1; i <= 75; ++i) EXPECT_EQ(p.ids[i], 1929) << i;
    EXPECT_EQ(p.ids[76], 49407);
    // Exactly 75 tokens fit without truncation.
    std::string fits;
    for (int i = 0; i < 75; ++i) fits += "dog ";
    EXPECT_FALSE(clip().encode_padded(fits).truncated);
}

TEST(ClipTokenizer, CleaningAsSimpleTokenizer) {
    const Ids golden = clip().encode("a photo of qwe dog");
    // Whitespace runs, case, leading and trailing space.
    EXPECT_EQ(clip().encode("  A PHOTO\n\tof   QWE dog "), golden);
    // ftfy: curly quotes made straight, full-width ASCII made half-width, ligatures split.
    EXPECT_EQ(clip().encode("\u201ca photo\u201d of qwe dog"), clip().encode("\"a photo\" of qwe dog"));
    EXPECT_EQ(clip().encode("\u2018dog\u2019"), clip().encode("'dog'"));
    EXPECT_EQ(clip().encode("\uff41 \uff50\uff48\uff4f\uff54\uff4f of qwe dog"), golden);
    EXPECT_EQ(clip().encode("\ufb01sh"), clip().encode("fish"));
    // html.unescape, twice.
    EXPECT_EQ(clip().encode("salt &amp; pepper"), clip().encode("salt & pepper"));
    EXPECT_EQ(clip().encode("salt &amp;amp; pepper"), clip().encode("salt & pepper"));
    EXPECT_EQ(clip().encode("dog&#39;s"), clip().encode("dog's"));
    // NFC: a decomposed é is the composed one.
    EXPECT_EQ(clip().encode("cafe\u0301"), clip().encode("caf\u00e9"));
    EXPECT_EQ(ClipTokenizer::clean("  Caf\u00c9 \u201cOK\u201d\n"), "caf\u00e9 \"ok\"");
}

TEST(ClipTokenizer, PiecesApostrophesDigitsAndUnicode) {
    auto tokens = [](const std::string& text) {
        std::vector<std::string> out;
        for (auto id : clip().encode(text, false)) out.push_back(clip().token(id));
        return out;
    };
    // The contractions are pieces of their own; digits one at a time; punctuation runs together.
    EXPECT_EQ(tokens("dog's"), (std::vector<std::string>{"dog</w>", "'s</w>"}));
    EXPECT_EQ(tokens("42"), (std::vector<std::string>{"4</w>", "2</w>"}));
    EXPECT_EQ(tokens("dog!!"), (std::vector<std::string>{"dog</w>", "!!</w>"}));
    // Round trips: CLIP's decode ends every word with a space.
    EXPECT_EQ(clip().decode(clip().encode("a photo of qwe dog")), "a photo of qwe dog ");
    EXPECT_EQ(clip().decode(clip().encode("caf\u00e9 \u65e5\u672c \U0001F436")), "caf\u00e9 \u65e5\u672c \U0001F436 ");
    EXPECT_EQ(clip().decode(clip().encode("x"), false), "<|startoftext|>x <|endoftext|>");
    // Special tokens typed in the text are the special ids.
    EXPECT_EQ(clip().encode("a <|endoftext|>", false), (Ids{320, 49407}));
    EXPECT_THROW(clip().encode("bad \xff utf-8"), Error);
}

TEST(ClipTokenizer, HuggingFaceFoldersAndBadFiles) {
    test::TempDir dir;
    // A CLIPTokenizer folder as transformers writes it, with SD 2's pad token "!".
    nlohmann::json vocab = nlohmann::json::object();
    for (int64_t i = 0; i < clip().vocab_size(); ++i) vocab[clip().token(i)] = i;
    std::filesystem::create_directories(dir / "pipe/tokenizer");
    io::write_file_atomically(dir / "pipe/tokenizer/vocab.json", vocab.dump());
    std::string merges = "#version: 0.2\n";
    io::write_file_atomically(dir / "pipe/tokenizer/tokenizer_config.json",
                              R"({"tokenizer_class": "CLIPTokenizer", "pad_token": "!", "model_max_length": 77})");
    // merges.txt: the bundled file's 48,894 merges (zcat: gzip is an essential Debian package).
    {
        const std::string text = [] {
            std::string cmd = "zcat " + test::data_file("clip/bpe_simple_vocab_16e6.txt.gz");
            std::string out;
            FILE* p = popen(cmd.c_str(), "r");
            char buf[65536];
            size_t n;
            while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
            pclose(p);
            return out;
        }();
        size_t pos = text.find('\n') + 1;
        for (int i = 0; i < 48894; ++i) {
            const size_t nl = text.find('\n', pos);
            merges += text.substr(pos, nl - pos) + "\n";
            pos = nl + 1;
        }
    }
    io::write_file_atomically(dir / "pipe/tokenizer/merges.txt", merges);
    auto folder = load_tokenizer(dir / "pipe");  // a diffusers pipeline: tokenizer/ is found
    auto* hf = dynamic_cast<ClipTokenizer*>(folder.get());
    ASSERT_NE(hf, nullptr) << folder->kind();
    for (const char* text : {"a photo of qwe dog", "A  Cube-shaped QWE toy!!", "caf\u00e9 \u65e5\u672c"})
        EXPECT_EQ(hf->encode(text), clip().encode(text)) << text;
    EXPECT_EQ(hf->pad_id(), 0);  // "!"
    EXPECT_EQ(hf->encode_padded("dog").ids.back(), 0);

    // Bad files: each an error naming the file.
    io::write_file_atomically(dir / "short.txt", "#version: 0.2\ni n\n");
    try {
        ClipTokenizer::from_merges_file(dir / "short.txt");
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), dir / "short.txt");
    }
    io::write_file_atomically(dir / "corrupt.txt.gz", "this is not gzip data at all, but it ends in .gz");
    EXPECT_THROW(ClipTokenizer::from_merges_file(dir / "corrupt.txt.gz"), Error);
    EXPECT_THROW(ClipTokenizer::from_merges_file(dir / "missing.txt.gz"), Error);
    io::write_file_atomically(dir / "pipe/tokenizer/tokenizer_config.json", R"({"tokenizer_class": "CLIPTokenizer", "pad_token": "nope"})");
    try {
        load_tokenizer(dir / "pipe");
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.key(), "pad_token");
    }
}

TEST(ClipTokenizer, TokenizeCommand) {
    test::TempDir dir;
    auto r = test::run_hra("-q tokenize --clip --text 'a photo of qwe dog'", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["ids"], nlohmann::json({49406, 320, 1125, 539, 80, 649, 1929, 49407}));
    EXPECT_EQ(j["tokens"][5], "we</w>");
    // A 10,000-character prompt: 77 ids and a warning.
    std::string text;
    for (int i = 0; i < 2500; ++i) text += "dog ";
    r = test::run_hra("-q tokenize --clip --padded --text '" + text + "'", dir);
    ASSERT_EQ(r.code, 0) << r.err;
    j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["ids"].size(), 77u);
    EXPECT_EQ(j["truncated"], true);
    EXPECT_NE(r.err.find("the text has 2500 tokens; CLIP keeps the first 75"), std::string::npos) << r.err;
    // Other tokenizers through the same command.
    r = test::run_hra("-q tokenize --text hi", dir);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find("give one of --model DIR, --clip or --merges FILE"), std::string::npos) << r.err;
}
