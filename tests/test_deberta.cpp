// DeBERTa beyond the parity test: pytorch_model.bin files written by torch.save
// (PyTorch 1.13, see fixtures/torch-bin/README.md), refusing malicious
// pickles, config forms, missing head weights and loading errors.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <zip.h>
#include <torch/torch.h>
#include <caffe2/serialize/inline_container.h>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/torch_bin.h"
#include "io/weights.h"
#include "models/deberta_config.h"
#include "models/deberta_loader.h"
#include "models/model_weights.h"
#include "test_util.h"

using namespace hra;
using hra::test::error_of;

namespace fs = std::filesystem;

namespace {

using test::fixture;


}  // namespace

TEST(TorchBin, ViewsParametersAndDtypes) {
    auto sd = io::read_torch_state_dict(fixture("torch-bin/views.bin"));
    ASSERT_EQ(sd.size(), 6u);
    auto base = torch::arange(12, torch::kFloat).reshape({3, 4});
    EXPECT_TRUE(sd.at("a").equal(base));
    EXPECT_TRUE(sd.at("a_t").equal(base.t()));
    EXPECT_TRUE(sd.at("row").equal(base[1]));
    EXPECT_EQ(sd.at("p").scalar_type(), torch::kBFloat16);
    EXPECT_TRUE(sd.at("p").equal(torch::ones({2}, torch::kBFloat16)));
    EXPECT_TRUE(sd.at("i").equal(torch::tensor({1, -2}, torch::kLong)));
    EXPECT_EQ(sd.at("h").scalar_type(), torch::kHalf);
    EXPECT_EQ(sd.at("h").item<float>(), 0.5f);
}

TEST(TorchBin, RefusesForeignGlobalsWithoutRunningThem) {
    const std::string marker = "/tmp/hra-pwned";
    fs::remove(marker);
    const auto msg = error_of([&] { io::read_torch_state_dict(fixture("torch-bin/evil.bin")); });
    EXPECT_NE(msg.find("refused pickle global 'posix.system'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("evil.bin"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(marker));
}

namespace {

// A torch.save-shaped zip (PyTorch's own writer) around a hand-written pickle and one 4-byte storage "0".
std::string crafted_checkpoint(const test::TempDir& dir, const std::string& name, const std::string& pickle) {
    const std::string path = dir / name;
    caffe2::serialize::PyTorchStreamWriter w(path);
    w.writeRecord("data.pkl", pickle.data(), pickle.size());
    const float one = 1;
    w.writeRecord("data/0", &one, sizeof one);
    w.writeEndOfFile();
    return path;
}

// Pickle protocol 2 for {"w": _rebuild_tensor_v2(storage("0", FloatStorage, numel), 0, (size,), (stride,))}.
std::string tensor_pickle(uint64_t numel, uint8_t size, uint64_t stride) {
    auto long8 = [](uint64_t v) {
        std::string s = "\x8a\x08";
        for (int k = 0; k < 8; ++k) s += static_cast<char>((v >> (8 * k)) & 0xff);
        return s;
    };
    auto str = [](const std::string& t) { return std::string("X") + static_cast<char>(t.size()) + std::string(3, '\0') + t; };
    return std::string("\x80\x02}") + str("w") + "ctorch._utils\n_rebuild_tensor_v2\n(" + "(" + str("storage") + "ctorch\nFloatStorage\n" +
           str("0") + str("cpu") + long8(numel) + "tQ" + "K" + std::string(1, '\0') + "K" + std::string(1, static_cast<char>(size)) +
           "\x85" + long8(stride) + "\x85" + "tRs.";
}

}  // namespace

// The classic attacks on a pickle reader beyond foreign globals: each is a named error, never a crash or a wrong load.
TEST(TorchBin, CraftedPicklesAreNamedErrors) {
    test::TempDir dir;
    // The well-formed control: one float.
    auto sd = io::read_torch_state_dict(crafted_checkpoint(dir, "ok.bin", tensor_pickle(1, 1, 1)));
    ASSERT_EQ(sd.size(), 1u);
    EXPECT_EQ(sd.at("w").item<float>(), 1.0f);
    // numel × 4 bytes wraps to 0 in 64 bits: it passed the storage-size check.
    auto msg = error_of([&] { io::read_torch_state_dict(crafted_checkpoint(dir, "numel.bin", tensor_pickle(uint64_t{1} << 62, 1, 1))); });
    EXPECT_NE(msg.find("holds 4 bytes, fewer than its 4611686018427387904 elements need"), std::string::npos) << msg;
    // (size − 1) · stride overflows: the wrapped sum passed the bounds check and read outside the storage.
    msg = error_of([&] { io::read_torch_state_dict(crafted_checkpoint(dir, "stride.bin", tensor_pickle(1, 3, uint64_t{1} << 62))); });
    EXPECT_NE(msg.find("overflow"), std::string::npos) << msg;
    // 200,000 nested tuples: releasing them recursed until the stack overflowed.
    const std::string deep = std::string("\x80\x02)") + std::string(200000, '\x85') + ".";
    msg = error_of([&] { io::read_torch_state_dict(crafted_checkpoint(dir, "deep.bin", deep)); });
    EXPECT_NE(msg.find("not a dict of tensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("deep.bin"), std::string::npos) << msg;
}

// torch.save stores entries uncompressed; PyTorch's reader allocates an entry's declared size and
// inflates into it before anything is checked (a 1.2 MB bomb once took 1.2 GB). Both are refused first.
TEST(TorchBin, ZipBombsAndOversizedEntriesAreRefusedBeforeAllocation) {
    test::TempDir dir;
    const std::string bomb = dir / "bomb.bin";
    {
        // libzip writes 64 MiB of zeros deflated, as data.pkl.
        static const std::vector<char> zeros(size_t{64} << 20, 0);
        int code = 0;
        zip_t* z = zip_open(bomb.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
        ASSERT_NE(z, nullptr) << code;
        zip_source_t* src = zip_source_buffer(z, zeros.data(), zeros.size(), 0);
        const zip_int64_t index = zip_file_add(z, "bomb/data.pkl", src, ZIP_FL_OVERWRITE);
        ASSERT_GE(index, 0);
        ASSERT_EQ(zip_set_file_compression(z, static_cast<zip_uint64_t>(index), ZIP_CM_DEFLATE, 9), 0);
        ASSERT_EQ(zip_close(z), 0);
    }
    EXPECT_LT(fs::file_size(bomb), 200000u);
    auto msg = error_of([&] { io::read_torch_state_dict(bomb); });
    EXPECT_NE(msg.find("zip entry 'bomb/data.pkl' is compressed (method 8)"), std::string::npos) << msg;
    EXPECT_NE(msg.find(bomb), std::string::npos) << msg;
    // A stored entry whose central directory claims 0xF0000000 bytes (sizes at offsets 20 and 24 of its header).
    std::string bytes = io::read_file(crafted_checkpoint(dir, "big.bin", tensor_pickle(1, 1, 1)));
    const std::string name = "big/data/0";
    size_t header = std::string::npos;
    for (size_t at = bytes.find("PK\x01\x02"); at != std::string::npos; at = bytes.find("PK\x01\x02", at + 1))
        if (bytes.compare(at + 46, name.size(), name) == 0) header = at;
    ASSERT_NE(header, std::string::npos);
    for (size_t field : {size_t{20}, size_t{24}}) {
        const uint32_t claim = 0xF0000000u;
        for (int k = 0; k < 4; ++k) bytes[header + field + k] = static_cast<char>((claim >> (8 * k)) & 0xff);
    }
    io::write_file_atomically(dir / "big.bin", bytes);
    msg = error_of([&] { io::read_torch_state_dict(dir / "big.bin"); });
    EXPECT_NE(msg.find("zip entry 'big/data/0' claims 4026531840 bytes, more than the"), std::string::npos) << msg;
    EXPECT_NE(msg.find("big.bin"), std::string::npos) << msg;
}

TEST(TorchBin, LegacyAndCorruptFilesAreNamedErrors) {
    const auto legacy = error_of([&] { io::read_torch_state_dict(fixture("torch-bin/legacy.bin")); });
    EXPECT_NE(legacy.find("legacy torch.save"), std::string::npos) << legacy;
    // Every truncation and a sweep of byte flips either loads or raises hra::Error.
    const std::string bytes = io::read_file(fixture("torch-bin/views.bin"));
    test::TempDir tmp;
    const std::string path = tmp / "m.bin";
    int errors = 0, loaded = 0;
    auto attempt = [&](const std::string& data) {
        {
            std::ofstream(path, std::ios::binary) << data;
        }
        try {
            io::read_torch_state_dict(path);
            ++loaded;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
            ++errors;
        }
    };
    for (size_t n = 0; n < bytes.size(); n += 7) attempt(bytes.substr(0, n));
    for (size_t i = 0; i < bytes.size(); i += 3) {
        std::string flipped = bytes;
        flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
        attempt(flipped);
    }
    EXPECT_GT(errors, 100);
    EXPECT_GT(loaded, 0);  // flips in unused bytes (zip comments, padding) are harmless
}

TEST(DebertaLoading, PytorchModelBinEqualsSafetensors) {
    DebertaLoadOptions opt;
    opt.dtype = torch::kDouble;
    auto ref = load_deberta(fixture("deberta-v3-tiny"), opt);
    auto bin = load_deberta(fixture("torch-bin/deberta-bin"), opt);  // extra position_ids and lm_predictions.* ignored
    auto sharded = load_deberta(fixture("torch-bin/deberta-sharded"), opt);  // float32 shards with an index
    auto a = base_parameters(*ref.model), b = base_parameters(*bin.model), c = base_parameters(*sharded.model);
    ASSERT_EQ(a.size(), b.size());
    for (auto& [name, p] : a) {
        EXPECT_TRUE(p.equal(b.at(name))) << name;
        EXPECT_TRUE(p.to(torch::kFloat).to(torch::kDouble).equal(c.at(name))) << name;
    }
    EXPECT_TRUE(bin.initialized.empty());
}

TEST(DebertaLoading, MissingHeadIsSeededAndOtherKeysAreErrors) {
    test::TempDir dir;
    fs::copy_file(fixture("deberta-v3-tiny/config.json"), dir / "config.json");
    auto all = io::SafetensorsFile::open(fixture("deberta-v3-tiny/model.safetensors"));
    io::NamedTensors backbone;
    for (const auto& name : all.names())
        if (name.rfind("deberta.", 0) == 0) backbone.emplace_back(name, all.tensor(name));
    io::save_safetensors(dir / "model.safetensors", backbone);
    DebertaLoadOptions opt;
    opt.num_labels = 1;
    opt.init_seed = 7;
    auto m1 = load_deberta(dir.path(), opt);
    auto m2 = load_deberta(dir.path(), opt);
    EXPECT_EQ(m1.initialized.size(), 4u);
    EXPECT_EQ(m1.model->classifier->weight.sizes(), (std::vector<int64_t>{1, 32}));
    EXPECT_TRUE(m1.model->classifier->bias.eq(0).all().item<bool>());
    EXPECT_TRUE(m1.model->pooler_dense->weight.equal(m2.model->pooler_dense->weight));
    const double sd = m1.model->pooler_dense->weight.std().item<double>();
    EXPECT_NEAR(sd, 0.02, 0.004);  // initializer_range, 1024 draws

    // A checkpoint of the bare encoder (keys without "deberta.") loads the same backbone.
    io::NamedTensors bare;
    for (const auto& [name, t] : backbone) bare.emplace_back(name.substr(8), t);
    io::save_safetensors(dir / "model.safetensors", bare);
    auto m3 = load_deberta(dir.path(), opt);
    auto pa = base_parameters(*m1.model), pb = base_parameters(*m3.model);
    for (const auto& [name, t] : backbone) EXPECT_TRUE(pa.at(name).equal(pb.at(name))) << name;

    // An unexpected key and a wrong shape are errors naming the keys.
    backbone.emplace_back("deberta.encoder.layer.9.extra", torch::zeros({2}));
    io::save_safetensors(dir / "model.safetensors", backbone);
    auto msg = error_of([&] { load_deberta(dir.path(), opt); });
    EXPECT_NE(msg.find("unexpected keys: deberta.encoder.layer.9.extra"), std::string::npos) << msg;
    backbone.pop_back();
    backbone[0].second = torch::zeros({3});
    io::save_safetensors(dir / "model.safetensors", backbone);
    msg = error_of([&] { load_deberta(dir.path(), opt); });
    EXPECT_NE(msg.find("wrong shapes"), std::string::npos) << msg;
}

TEST(DebertaConfig, DebertaV3BaseForms) {
    // microsoft/deberta-v3-base's own config.json keys and forms.
    const std::string text = R"({"model_type": "deberta-v2", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "max_position_embeddings": 512, "relative_attention": true, "position_buckets": 256, "norm_rel_ebd": "layer_norm",
        "share_att_key": true, "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7, "max_relative_positions": -1,
        "position_biased_input": false, "num_attention_heads": 12, "num_hidden_layers": 12, "type_vocab_size": 0,
        "vocab_size": 128100})";
    auto c = parse_deberta_config(text, "config.json");
    EXPECT_TRUE(c.c2p && c.p2c && c.share_att_key && c.norm_rel_ebd_layer_norm && c.relative_attention);
    EXPECT_EQ(c.max_relative_positions, 512);
    EXPECT_EQ(c.att_span(), 256);
    EXPECT_EQ(c.pooler_hidden_size, 768);
    EXPECT_EQ(c.pooler_dropout, 0.0);
    EXPECT_EQ(c.embedding_size, 768);
    EXPECT_EQ(c.attention_head_size, 64);
    EXPECT_NE(error_of([] { parse_deberta_config(R"({"model_type": "bert"})", "x.json"); }).find("model_type"),
              std::string::npos);
    EXPECT_NE(error_of([] { parse_deberta_config(R"({"model_type": "deberta-v2", "pos_att_type": "c2q"})", "x.json"); })
                  .find("c2q"),
              std::string::npos);
    // Sizes no model has, fractions and numbers beyond int64 are errors naming the key, before any allocation.
    for (const auto& [body, fragment] : std::vector<std::pair<std::string, std::string>>{
             {R"("hidden_size": 1000000000000, "num_attention_heads": 1)", "'hidden_size': 1000000000000 is outside 1..131072"},
             {R"("num_hidden_layers": 1000000000)", "'num_hidden_layers': 1000000000 is outside 1..4096"},
             {R"("vocab_size": 0)", "'vocab_size'"},
             {R"("hidden_size": 768, "num_attention_heads": 7)", "hidden_size is not a multiple of num_attention_heads"},
             {R"("hidden_size": 768.5)", "'hidden_size': expected an integer, got 768.5"},
             {R"("intermediate_size": 3e60)", "'intermediate_size': expected an integer"},
             {R"("id2label": {"one": "x"})", "'id2label': id2label keys must be 0..n-1, got 'one'"},
             {R"("id2label": {"0": 5})", "id2label values must be strings"},
             {R"("id2label": {"0": "a", "00": "b"})", "got '00'"},  // both read as 0 once: one label left empty
             // Each size within its bound; their product is 2^41 embedding weights.
             {R"("vocab_size": 16777216, "hidden_size": 131072, "num_attention_heads": 1024)", "these sizes make at least 3.89e+12 parameters, beyond any model"},
         }) {
        const auto msg = error_of([&] { parse_deberta_config(R"({"model_type": "deberta-v2", )" + body + "}", "x.json"); });
        EXPECT_NE(msg.find(fragment), std::string::npos) << body << ": " << msg;
        EXPECT_NE(msg.find("x.json"), std::string::npos) << msg;
    }
}

TEST(DebertaModel, LogBucketsFollowTheFormula) {
    // The README of the fixture: with 16 buckets and 64 positions, distances up
    // to 8 are kept, 9 -> 9, 10 -> 9, 11 -> 10. Beyond that, HF's formula
    // ceil(log(d/8) / log(63/8) * 7) + 8, evaluated here in double.
    auto rel = deberta_relative_positions(40, 40, 16, 64);
    for (int d = 0; d < 40; ++d) {
        int64_t expect = d;
        if (d > 8) expect = static_cast<int64_t>(std::ceil(std::log(d / 8.0) / std::log(63.0 / 8.0) * 7)) + 8;
        EXPECT_EQ(rel[d][0].item<int64_t>(), expect) << d;
        EXPECT_EQ(rel[0][d].item<int64_t>(), -expect) << d;
    }
    EXPECT_EQ(rel[9][0].item<int64_t>(), 9);
    EXPECT_EQ(rel[10][0].item<int64_t>(), 9);
    EXPECT_EQ(rel[11][0].item<int64_t>(), 10);
}
