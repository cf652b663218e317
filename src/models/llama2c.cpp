#include "models/llama2c.h"

#include <cstring>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/output_folder.h"
#include "text/llama2c_tokenizer.h"
#include "text/vocab_json.h"

namespace hra {

namespace {

constexpr uint32_t kMagic = 0x616b3432;  // "ak42"

// llama2.c/Meta q,k rows hold RoPE pairs interleaved (x0,x1),(x2,x3)...; HF
// rotates halves. Row (h, 2j+p) moves to (h, p·D/2 + j).
torch::Tensor to_rotate_half(const torch::Tensor& w, int64_t heads) {
    const int64_t rows = w.size(0), cols = w.size(1);
    return w.view({heads, rows / heads / 2, 2, cols}).transpose(1, 2).reshape({rows, cols}).contiguous();
}

}  // namespace

Llama2cCheckpoint read_llama2c(const std::string& path) {
    const std::string data = io::read_file(path);
    Llama2cCheckpoint c;
    size_t offset = 0;
    int32_t cfg[7];
    uint32_t magic = 0;
    if (data.size() >= 4) std::memcpy(&magic, data.data(), 4);
    if (magic == kMagic) {
        if (data.size() < 256) throw Error("file too small for a version-1 header", {path});
        int32_t version;
        std::memcpy(&version, data.data() + 4, 4);
        if (version != 1)
            throw Error("llama2.c checkpoint version " + std::to_string(version) +
                            " is not supported (hra reads the float32 formats: legacy v0 and version 1)",
                        {path});
        std::memcpy(cfg, data.data() + 8, sizeof cfg);
        c.version = 1;
        c.shared_classifier = data[8 + sizeof cfg] != 0;
        offset = 256;
    } else {
        if (data.size() < sizeof cfg) throw Error("file too small for a llama2.c header", {path});
        std::memcpy(cfg, data.data(), sizeof cfg);
        c.version = 0;
        c.shared_classifier = cfg[5] > 0;
        offset = sizeof cfg;
    }
    c.dim = cfg[0], c.hidden_dim = cfg[1], c.n_layers = cfg[2], c.n_heads = cfg[3], c.n_kv_heads = cfg[4];
    c.vocab_size = std::abs(cfg[5]), c.seq_len = cfg[6];
    const bool sane = c.dim > 0 && c.hidden_dim > 0 && c.n_layers > 0 && c.n_heads > 0 && c.n_kv_heads > 0 &&
                      c.vocab_size > 0 && c.seq_len > 0 && c.dim % c.n_heads == 0 && c.n_heads % c.n_kv_heads == 0 &&
                      (c.dim / c.n_heads) % 2 == 0 && c.dim < (1 << 20) && c.n_layers < 4096 && c.vocab_size < (1 << 24);
    if (!sane)
        throw Error("implausible config (dim " + std::to_string(c.dim) + ", hidden " + std::to_string(c.hidden_dim) +
                        ", layers " + std::to_string(c.n_layers) + ", heads " + std::to_string(c.n_heads) + "/" +
                        std::to_string(c.n_kv_heads) + ", vocab " + std::to_string(c.vocab_size) + ")",
                    {path});
    const int64_t L = c.n_layers, D = c.dim, H = c.hidden_dim, V = c.vocab_size, head = D / c.n_heads;
    const int64_t kv = c.n_kv_heads * head;

    // Expected float count, then the exact file size.
    int64_t floats = V * D + L * D * 2 + D + L * (D * D * 2 + kv * D * 2 + H * D * 3);
    if (c.version == 0) floats += c.seq_len * head;  // freq_cis_real + freq_cis_imag (head/2 each)
    if (!c.shared_classifier) floats += V * D;
    const uint64_t expected = offset + static_cast<uint64_t>(floats) * 4;
    if (data.size() != expected)
        throw Error("file size " + std::to_string(data.size()) + " does not match its header (expected " +
                        std::to_string(expected) + " bytes for this config)",
                    {path});

    size_t pos = offset;
    auto take = [&](std::vector<int64_t> shape) {
        int64_t count = 1;
        for (auto s : shape) count *= s;
        auto t = torch::empty(shape, torch::kFloat);
        std::memcpy(t.data_ptr(), data.data() + pos, static_cast<size_t>(count) * 4);
        pos += static_cast<size_t>(count) * 4;
        return t;
    };
    torch::Tensor emb, rms_att, rms_ffn, rms_final, wq, wk, wv, wo, w1, w2, w3, wcls;
    if (c.version == 0) {
        emb = take({V, D});
        rms_att = take({L, D});
        wq = take({L, D, D}), wk = take({L, kv, D}), wv = take({L, kv, D}), wo = take({L, D, D});
        rms_ffn = take({L, D});
        w1 = take({L, H, D}), w2 = take({L, D, H}), w3 = take({L, H, D});
        rms_final = take({D});
        pos += static_cast<size_t>(c.seq_len * head) * 4;  // freq_cis tables, unused
    } else {
        rms_att = take({L, D}), rms_ffn = take({L, D}), rms_final = take({D});
        emb = take({V, D});
        wq = take({L, D, D}), wk = take({L, kv, D}), wv = take({L, kv, D}), wo = take({L, D, D});
        w1 = take({L, H, D}), w2 = take({L, D, H}), w3 = take({L, H, D});
    }
    if (!c.shared_classifier) wcls = take({V, D});

    auto& t = c.tensors;
    t.emplace_back("model.embed_tokens.weight", emb);
    for (int64_t l = 0; l < L; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        t.emplace_back(p + "self_attn.q_proj.weight", to_rotate_half(wq[l], c.n_heads));
        t.emplace_back(p + "self_attn.k_proj.weight", to_rotate_half(wk[l], c.n_kv_heads));
        t.emplace_back(p + "self_attn.v_proj.weight", wv[l].contiguous());
        t.emplace_back(p + "self_attn.o_proj.weight", wo[l].contiguous());
        t.emplace_back(p + "mlp.gate_proj.weight", w1[l].contiguous());
        t.emplace_back(p + "mlp.down_proj.weight", w2[l].contiguous());
        t.emplace_back(p + "mlp.up_proj.weight", w3[l].contiguous());
        t.emplace_back(p + "input_layernorm.weight", rms_att[l].contiguous());
        t.emplace_back(p + "post_attention_layernorm.weight", rms_ffn[l].contiguous());
    }
    t.emplace_back("model.norm.weight", rms_final);
    if (!c.shared_classifier) t.emplace_back("lm_head.weight", wcls);

    nlohmann::ordered_json j;
    j["architectures"] = {"LlamaForCausalLM"};
    j["model_type"] = "llama";
    j["hidden_size"] = D;
    j["intermediate_size"] = H;
    j["num_hidden_layers"] = L;
    j["num_attention_heads"] = c.n_heads;
    j["num_key_value_heads"] = c.n_kv_heads;
    j["vocab_size"] = V;
    j["max_position_embeddings"] = c.seq_len;
    j["rms_norm_eps"] = 1e-5;
    j["rope_theta"] = 10000.0;
    j["hidden_act"] = "silu";
    j["tie_word_embeddings"] = c.shared_classifier;
    j["attention_bias"] = false;
    j["mlp_bias"] = false;
    j["bos_token_id"] = 1;
    j["eos_token_id"] = 2;
    j["torch_dtype"] = "float32";
    c.config_json = j.dump(2) + "\n";
    return c;
}

void convert_llama2c(const std::string& model_path, const std::string& tokenizer_path, const std::string& out_dir,
                     bool overwrite) {
    Llama2cCheckpoint ckpt = read_llama2c(model_path);
    Llama2cVocab vocab = read_llama2c_vocab(tokenizer_path, ckpt.vocab_size);
    // llama2.c stores spaces as ' ' and BOS/EOS as "\n<s>\n"/"\n</s>\n"; HF uses "▁", "<s>", "</s>".
    ScoredVocab sv;
    const std::string spm = "\xE2\x96\x81";
    for (size_t i = 0; i < vocab.pieces.size(); ++i) {
        std::string p = vocab.pieces[i];
        int type = 0;
        if (i == 0) type = 2, p = "<unk>";
        else if (i == 1) type = 1, p = "<s>";
        else if (i == 2) type = 1, p = "</s>";
        else if (p.size() == 6 && p.rfind("<0x", 0) == 0 && p[5] == '>') type = 3;
        else {
            std::string q;
            for (char ch : p) q += ch == ' ' ? spm : std::string(1, ch);
            p = q;
        }
        sv.pieces.push_back(p);
        sv.scores.push_back(vocab.scores[i]);
        sv.types.push_back(type);
    }
    io::OutputFolder out(out_dir, overwrite);
    io::save_safetensors(out.file("model.safetensors"), ckpt.tensors, {{"format", "pt"}});
    io::write_file_atomically(out.file("config.json"), ckpt.config_json);
    io::write_file_atomically(out.file("generation_config.json"),
                              "{\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2\n}\n");
    io::write_file_atomically(out.file("tokenizer.json"), llama_tokenizer_json(sv));
    io::write_file_atomically(out.file("tokenizer_config.json"), llama_tokenizer_config_json(sv, ckpt.seq_len));
    out.commit();
}

}  // namespace hra
