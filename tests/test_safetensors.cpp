// safetensors: round trips for every dtype, one test per validation rule,
// a seeded mutation test (truncations and byte flips must load or throw
// hra::Error, never crash), atomic writes, and sharded model folders.
#include <sys/resource.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/weights.h"
#include "test_util.h"

using namespace hra;
using hra::io::SafetensorsFile;

namespace {

io::NamedTensors sample_tensors() {
    torch::manual_seed(0);
    return {
        {"f64", torch::randn({3, 2}, torch::kDouble)},
        {"f32", torch::randn({4}, torch::kFloat)},
        {"f16", torch::randn({2, 2}).to(torch::kHalf)},
        {"bf16", torch::randn({5}).to(torch::kBFloat16)},
        {"i64", torch::arange(6, torch::kLong).view({2, 3})},
        {"i32", torch::arange(3, torch::kInt)},
        {"i16", torch::arange(4, torch::kShort)},
        {"i8", torch::arange(-2, 2, torch::kChar)},
        {"u8", torch::arange(7, torch::kByte)},
        {"bool", torch::tensor({true, false, true})},
        {"scalar", torch::tensor(2.5)},
        {"empty", torch::zeros({0, 3})},
    };
}

// A file image from a hand-written header and data (for invalid files).
std::string image(const std::string& header, const std::string& data) {
    std::string out(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
    return out + header + data;
}

void expect_error(const std::string& bytes, const std::string& fragment) {
    try {
        SafetensorsFile::from_bytes(bytes, "bad.safetensors");
        FAIL() << "expected an error containing '" << fragment << "'";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("bad.safetensors"), std::string::npos) << what;
        EXPECT_NE(what.find(fragment), std::string::npos) << what;
    }
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
    test::TempDir dir;
    const auto tensors = sample_tensors();
    io::save_safetensors(dir / "t.safetensors", tensors, {{"format", "pt"}, {"note", "hello"}});
    auto f = SafetensorsFile::open(dir / "t.safetensors");
    EXPECT_EQ(f.metadata().at("format"), "pt");
    EXPECT_EQ(f.metadata().at("note"), "hello");
    EXPECT_EQ(f.names().size(), tensors.size());
    for (const auto& [name, t] : tensors) {
        auto got = f.tensor(name);
        EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
        EXPECT_EQ(got.sizes(), t.sizes()) << name;
        EXPECT_TRUE(torch::equal(got, t)) << name;
    }
    EXPECT_EQ(f.info("f16").dtype, "F16");
    EXPECT_EQ(f.info("bf16").dtype, "BF16");
}

TEST(Safetensors, HeaderIsStandardJsonWithAlignedData) {
    // Independent reading of what we wrote: parse the header by hand.
    const std::string bytes = io::serialize_safetensors({{"a", torch::ones({2, 3})}, {"b", torch::zeros({1}, torch::kLong)}});
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
    EXPECT_EQ(n % 8, 0u);
    auto header = nlohmann::json::parse(bytes.substr(8, n));
    EXPECT_EQ(header["a"]["dtype"], "F32");
    EXPECT_EQ(header["a"]["shape"], nlohmann::json({2, 3}));
    EXPECT_EQ(header["a"]["data_offsets"], nlohmann::json({0, 24}));
    EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json({24, 32}));
    EXPECT_EQ(bytes.size(), 8 + n + 32);
    float first;
    std::memcpy(&first, bytes.data() + 8 + n, 4);
    EXPECT_EQ(first, 1.0f);
}

TEST(Safetensors, ValidationErrors) {
    const std::string ok4(4, '\0');
    expect_error("abc", "too small");
    expect_error(image("{}", "").substr(0, 8), "runs past the end");  // says 2 header bytes, has none
    {
        std::string big(8, '\0');
        big[7] = 0x7f;
        expect_error(big + "{}", "100 MB");
    }
    expect_error(image("{not json", ""), "invalid JSON");
    expect_error(image("[1,2]", ""), "not a JSON object");
    expect_error(image(R"({"t":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", ok4), "unsupported safetensors dtype");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", ok4), "run past the data buffer");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", ok4), "does not match");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", ok4), "non-negative");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", ok4), "begin after");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[1]}})", ok4), "data_offsets");
    expect_error(image(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", ok4), "dtype");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"u":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", ok4 + ok4),
                 "overlaps");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", ok4 + ok4), "gap");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", ok4 + ok4), "not covered");
    expect_error(image(R"({"__metadata__":{"a":1}})", ""), "metadata values must be strings");
    expect_error(image(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", ok4), "too large");
    // A name listed twice (JSON parsers keep one of them silently) and a header nested 100,000 deep (the readers recurse).
    expect_error(image(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                       ok4 + ok4),
                 "twice");
    expect_error(image(R"({"__metadata__":)" + std::string(100000, '[') + std::string(100000, ']') + "}", ""), "nested deeper than 128");
}

TEST(Safetensors, BoolBytesOtherThanZeroOrOneAreRejected) {
    auto f = SafetensorsFile::from_bytes(
        image(R"({"t":{"dtype":"BOOL","shape":[1],"data_offsets":[0,1]}})", std::string(1, '\x07')), "b.safetensors");
    EXPECT_THROW(f.tensor("t"), Error);
}

TEST(Safetensors, ErrorsNameTheFileAndKey) {
    test::TempDir dir;
    const std::string path = dir / "x.safetensors";
    io::write_file_atomically(path, image(R"({"weight":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}})", std::string(4, '\0')));
    try {
        SafetensorsFile::open(path);
        FAIL();
    } catch (const Error& e) {
        EXPECT_EQ(e.file(), path);
        EXPECT_EQ(e.key(), "weight");
    }
    EXPECT_THROW(SafetensorsFile::open(dir / "missing.safetensors"), Error);
    EXPECT_THROW(SafetensorsFile::open(dir.path()), Error);
}

// Every truncation point and thousands of seeded byte flips of valid files:
// each must load fully or throw hra::Error.
TEST(Safetensors, MutationsLoadOrThrowNeverCrash) {
    const std::string valid = io::serialize_safetensors(sample_tensors(), {{"format", "pt"}});
    const std::string small = io::serialize_safetensors({{"w", torch::ones({2, 2})}, {"b", torch::zeros({2}, torch::kBFloat16)}});
    std::mt19937_64 rng(12345);
    int loaded = 0, rejected = 0, total = 0;
    auto attempt = [&](const std::string& bytes) {
        ++total;
        try {
            auto f = SafetensorsFile::from_bytes(bytes, "mutant.safetensors");
            for (const auto& name : f.names()) {
                auto t = f.tensor(name);
                if (t.numel() > 0) (void)t.sum().item<double>();  // touch the data
            }
            ++loaded;
        } catch (const Error&) {
            ++rejected;
        }
    };
    for (const std::string* base : {&valid, &small}) {
        for (size_t len = 0; len < base->size(); len += (len < 600 ? 1 : 13)) attempt(base->substr(0, len));
        for (int i = 0; i < 1200; ++i) {
            std::string m = *base;
            const int flips = 1 + static_cast<int>(rng() % 4);
            for (int k = 0; k < flips; ++k) {
                // Mostly the length and header, where the parser is.
                const size_t span = (rng() % 4 == 0) ? m.size() : std::min<size_t>(m.size(), 8 + 400);
                m[rng() % span] = static_cast<char>(rng() & 0xff);
            }
            attempt(m);
        }
    }
    EXPECT_GE(total, 2000);
    EXPECT_GT(rejected, 1000);
    EXPECT_GT(loaded, 10);  // flips in the data section still load
}

TEST(Safetensors, FailedWriteLeavesExistingFileUntouched) {
    test::TempDir dir;
    const std::string path = dir / "keep.safetensors";
    io::save_safetensors(path, {{"a", torch::ones({2})}});
    const std::string before = io::read_file(path);
    EXPECT_THROW(io::save_safetensors(path, {{"a", torch::ones({2})}, {"a", torch::zeros({2})}}), Error);
    EXPECT_THROW(io::save_safetensors(path, {{"c", torch::ones({2}, torch::kComplexFloat)}}), Error);
    EXPECT_THROW(io::write_atomically(path, [](std::ostream& o) {
                     o << "partial";
                     throw std::runtime_error("boom");
                 }),
                 Error);
    EXPECT_EQ(io::read_file(path), before);
    // No temporary files are left behind.
    int files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
    EXPECT_EQ(files, 1);
}

// A write that fails names the OS's reason for that write, not an errno left by whatever the
// writer did around it (a stale EACCES used to be reported as the reason a full disk failed).
namespace {
// Runs in a child process (setrlimit would limit the whole test program).
[[noreturn]] void write_past_the_file_size_limit(const std::string& path) {
    std::signal(SIGXFSZ, SIG_IGN);  // past the limit, write(2) then fails with EFBIG
    const rlimit limit{4096, 4096};
    setrlimit(RLIMIT_FSIZE, &limit);
    std::string message;
    try {
        io::write_atomically(path, [](std::ostream& o) {
            o << std::string(1 << 20, 'x');
            errno = EACCES;  // something else the writer did after the failed write
            o << "tail";
        });
    } catch (const Error& e) {
        message = e.what();
    }
    std::fprintf(stderr, "%s\n", message.c_str());
    const bool named = message.find("big.bin") != std::string::npos && message.find(std::strerror(EFBIG)) != std::string::npos &&
                       message.find(std::strerror(EACCES)) == std::string::npos;
    std::_Exit(named ? 0 : 1);
}
}  // namespace

TEST(Safetensors, AFailedWriteNamesTheReasonOfThatWrite) {
    test::TempDir dir;
    const std::string path = dir / "big.bin";
    io::write_file_atomically(path, "previous");
    EXPECT_EXIT(write_past_the_file_size_limit(path), ::testing::ExitedWithCode(0), "big.bin: write failed: File too large");
    EXPECT_EQ(io::read_file(path), "previous");
    int files = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
    EXPECT_EQ(files, 1);
}

TEST(WeightStore, SingleFileFolderAndShards) {
    test::TempDir dir;
    io::save_safetensors(dir / "model-00001-of-00002.safetensors", {{"a.weight", torch::ones({2, 2})}});
    io::save_safetensors(dir / "model-00002-of-00002.safetensors", {{"b.weight", torch::zeros({3})}});
    io::write_file_atomically(dir / "model.safetensors.index.json",
                              R"({"metadata":{},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.weight":"model-00002-of-00002.safetensors"}})");
    auto w = io::WeightStore::open(dir.path());
    EXPECT_EQ(w.keys(), (std::vector<std::string>{"a.weight", "b.weight"}));
    EXPECT_TRUE(torch::equal(w.get("a.weight"), torch::ones({2, 2})));
    EXPECT_THROW(w.get("c.weight"), Error);
    auto single = io::WeightStore::open(dir / "model-00002-of-00002.safetensors");
    EXPECT_TRUE(single.contains("b.weight"));
    io::write_file_atomically(dir / "model.safetensors.index.json",
                              R"({"weight_map":{"a.weight":"model-00002-of-00002.safetensors"}})");
    EXPECT_THROW(io::WeightStore::open(dir.path()), Error);
    io::write_file_atomically(dir / "model.safetensors.index.json", R"({"weight_map":{"a.weight":"../x"}})");
    EXPECT_THROW(io::WeightStore::open(dir.path()), Error);
}
