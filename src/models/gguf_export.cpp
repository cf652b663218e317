#include "models/gguf_export.h"

#include <cctype>
#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <unordered_map>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "adapters/config.h"
#include "adapters/lora_export.h"
#include "adapters/peft_model.h"
#include "common/error.h"
#include "common/strings.h"
#include "io/atomic_file.h"
#include "io/peft_folder.h"
#include "models/llama_config.h"
#include "models/pipeline.h"
#include "text/sp_tokenizer.h"
#include "text/unicode.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace hra {

namespace {

// llama.cpp's token types.
enum : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

uint32_t file_type_of(io::GgmlType t) {
    switch (t) {
        case io::GgmlType::F32: return 0;
        case io::GgmlType::F16: return 1;
        case io::GgmlType::Q8_0: return 7;
        case io::GgmlType::BF16: return 32;
    }
    return 0;
}

bool is_byte_piece(const std::string& p) {
    return p.size() == 6 && p.compare(0, 3, "<0x") == 0 && p[5] == '>' && std::isxdigit(static_cast<unsigned char>(p[3])) &&
           std::isxdigit(static_cast<unsigned char>(p[4]));
}

struct GgufVocab {
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    bool add_space_prefix = true;
};

// A Llama-style tokenizer.json (BPE with byte fallback, "▁" for spaces) as
// SentencePiece pieces: llama.cpp merges the adjacent pair whose joined piece
// scores highest, so a piece's score is minus the rank of the first merge
// that makes it (the inverse of transformers' SentencePieceExtractor, which
// orders merges by score). Pieces no merge makes score below every merge.
GgufVocab vocab_from_tokenizer_json(const std::string& path) {
    const json j = json::parse(io::read_file(path), nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error("not valid JSON", {path});
    const json& model = j.value("model", json::object());
    const bool bpe = model.value("type", std::string()) == "BPE" && model.value("byte_fallback", false);
    auto has_spm_spaces = [](const json& node, auto&& self) -> bool {
        if (!node.is_object()) return false;
        const std::string type = node.value("type", std::string());
        if (type == "Metaspace") return true;
        if (type == "Replace" && node.contains("pattern") && node["pattern"].value("String", std::string()) == " " &&
            node.value("content", std::string()) == "\xE2\x96\x81")
            return true;
        for (const char* list : {"normalizers", "pretokenizers"})
            if (node.contains(list) && node[list].is_array())
                for (const auto& n : node[list])
                    if (self(n, self)) return true;
        return false;
    };
    // Whether a "▁" goes before the text: a Prepend normaliser, or a Metaspace that prepends.
    auto prepends = [](const json& node, auto&& self) -> bool {
        if (!node.is_object()) return false;
        const std::string type = node.value("type", std::string());
        if (type == "Prepend") return true;
        if (type == "Metaspace")
            return node.value("prepend_scheme", std::string("always")) != "never" && node.value("add_prefix_space", true);
        for (const char* list : {"normalizers", "pretokenizers"})
            if (node.contains(list) && node[list].is_array())
                for (const auto& n : node[list])
                    if (self(n, self)) return true;
        return false;
    };
    if (!bpe || !(has_spm_spaces(j.value("normalizer", json()), has_spm_spaces) ||
                  has_spm_spaces(j.value("pre_tokenizer", json()), has_spm_spaces)))
        throw Error("GGUF export supports SentencePiece-style vocabularies (Llama 1/2, Mistral, TinyLlama: BPE with "
                    "byte_fallback and \"\xE2\x96\x81\" for spaces); this tokenizer.json is not one (GPT-2-style BPE needs "
                    "llama.cpp's pre-tokenizer tables, which hra does not write)",
                    {path});
    const json& vocab = model.value("vocab", json::object());
    std::map<int64_t, std::string> by_id;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) by_id[it.value().get<int64_t>()] = it.key();
    std::map<int64_t, json> added;
    for (const auto& a : j.value("added_tokens", json::array())) {
        by_id[a.at("id").get<int64_t>()] = a.at("content").get<std::string>();
        added[a.at("id").get<int64_t>()] = a;
    }
    if (by_id.empty() || by_id.begin()->first != 0 || by_id.rbegin()->first != static_cast<int64_t>(by_id.size()) - 1)
        throw Error("token ids are not 0..n-1 without gaps", {path});
    GgufVocab v;
    v.add_space_prefix = prepends(j.value("normalizer", json()), prepends) || prepends(j.value("pre_tokenizer", json()), prepends);
    const size_t n = by_id.size();
    std::unordered_map<std::string, size_t> index;
    for (const auto& [id, piece] : by_id) {
        index.emplace(piece, static_cast<size_t>(id));
        v.tokens.push_back(piece);
    }
    constexpr float kUnset = 1.0f;
    v.scores.assign(n, kUnset);
    const auto& merges = model.value("merges", json::array());
    float rank = 0.0f;
    for (const auto& m : merges) {
        std::string joined;
        if (m.is_string()) {
            const std::string s = m.get<std::string>();
            const auto sp = s.find(' ');
            if (sp == std::string::npos) throw Error("a merge without a space: '" + s + "'", {path, "model.merges"});
            joined = s.substr(0, sp) + s.substr(sp + 1);
        } else if (m.is_array() && m.size() == 2) {
            joined = m[0].get<std::string>() + m[1].get<std::string>();
        } else {
            throw Error("a merge is neither \"a b\" nor [a, b]", {path, "model.merges"});
        }
        rank += 1.0f;
        auto it = index.find(joined);
        if (it != index.end() && v.scores[it->second] == kUnset) v.scores[it->second] = -rank;
    }
    const std::string unk = model.value("unk_token", json()).is_string() ? model["unk_token"].get<std::string>() : "<unk>";
    v.types.assign(n, kNormal);
    for (size_t i = 0; i < n; ++i) {
        const std::string& p = v.tokens[i];
        const auto a = added.find(static_cast<int64_t>(i));
        if (p == unk) v.types[i] = kUnknown;
        else if (a != added.end()) v.types[i] = a->second.value("special", false) ? kControl : kUserDefined;
        else if (is_byte_piece(p)) v.types[i] = kByte;
        if (v.scores[i] == kUnset) {
            // Unmerged: single characters (never compared) 0, longer pieces after every merge.
            const bool single = v.types[i] != kNormal || text::utf8_chars(p).size() <= 1;
            v.scores[i] = single ? 0.0f : -(rank + 1.0f + static_cast<float>(i));
        }
    }
    return v;
}

GgufVocab vocab_from_sentencepiece(const std::string& path) {
    auto sp = read_sentencepiece_vocab(path);
    GgufVocab v;
    v.tokens = sp.pieces;
    v.scores = sp.scores;
    static const int32_t kMap[] = {kNormal, kControl, kUnknown, kByte, kUnused};
    for (int t : sp.types) v.types.push_back(t >= 0 && t <= 4 ? kMap[t] : kNormal);
    return v;
}

GgufVocab read_vocab(const std::string& model_dir) {
    const fs::path d(model_dir);
    // The file hra's own tokenizer reads (load_tokenizer): tokenizer.json first.
    if (fs::is_regular_file(d / "tokenizer.json")) return vocab_from_tokenizer_json((d / "tokenizer.json").string());
    if (fs::is_regular_file(d / "tokenizer.model")) return vocab_from_sentencepiece((d / "tokenizer.model").string());
    throw Error("GGUF export needs tokenizer.model or tokenizer.json in the model folder", {model_dir});
}

void check_llama_arch(const LlamaConfig& c, const std::string& model_dir) {
    if (c.model_type != "llama" && c.model_type != "mistral")
        throw Error("GGUF export supports model_type llama and mistral (llama.cpp's \"llama\" architecture), not " +
                        c.model_type,
                    {model_dir});
    if (c.qkv_bias || c.o_bias || c.mlp_bias)
        throw Error("GGUF export of models with attention or MLP biases is not supported", {model_dir});
    if (c.rope_scaling.type != "default")
        throw Error("GGUF export supports the default RoPE only, not rope_scaling " + c.rope_scaling.type, {model_dir});
}

void set_model_metadata(io::GgufWriter& w, const LlamaConfig& c, const std::string& model_dir) {
    std::string name = fs::path(model_dir).lexically_normal().filename().string();
    if (name.empty()) name = fs::path(model_dir).lexically_normal().parent_path().filename().string();
    w.set("general.architecture", std::string("llama"));
    w.set("general.name", name);
    w.set("llama.context_length", static_cast<uint32_t>(c.max_position_embeddings));
    w.set("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
    w.set("llama.block_count", static_cast<uint32_t>(c.num_hidden_layers));
    w.set("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
    w.set("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim));
    w.set("llama.attention.head_count", static_cast<uint32_t>(c.num_attention_heads));
    w.set("llama.attention.head_count_kv", static_cast<uint32_t>(c.num_key_value_heads));
    if (c.head_dim * c.num_attention_heads != c.hidden_size) {
        w.set("llama.attention.key_length", static_cast<uint32_t>(c.head_dim));
        w.set("llama.attention.value_length", static_cast<uint32_t>(c.head_dim));
    }
    w.set("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
    w.set("llama.rope.freq_base", static_cast<float>(c.rope_theta));
    w.set("llama.vocab_size", static_cast<uint32_t>(c.vocab_size));
}

void set_vocab_metadata(io::GgufWriter& w, const LlamaConfig& c, const std::string& model_dir, GgufExportReport& report) {
    GgufVocab v = read_vocab(model_dir);
    if (static_cast<int64_t>(v.tokens.size()) > c.vocab_size)
        throw Error("the tokenizer has " + std::to_string(v.tokens.size()) + " tokens, more than the model's vocab_size " +
                        std::to_string(c.vocab_size),
                    {model_dir});
    for (auto i = static_cast<int64_t>(v.tokens.size()); i < c.vocab_size; ++i) {
        v.tokens.push_back("[PAD" + std::to_string(i) + "]");
        v.scores.push_back(0.0f);
        v.types.push_back(kUnused);
    }
    report.vocab = static_cast<int64_t>(v.tokens.size());
    auto tok = load_tokenizer(model_dir);
    w.set("tokenizer.ggml.model", std::string("llama"));
    w.set("tokenizer.ggml.tokens", io::GgufArray(v.tokens));
    w.set("tokenizer.ggml.scores", io::GgufArray(v.scores));
    std::optional<int64_t> bos = c.bos_token_id ? c.bos_token_id : tok->bos_id();
    std::optional<int64_t> eos = !c.eos_token_ids.empty() ? std::optional<int64_t>(c.eos_token_ids.front()) : tok->eos_id();
    // BOS, EOS and padding are control tokens (as llama.cpp's converter marks them).
    for (const auto& id : {bos, eos, c.pad_token_id})
        if (id && *id >= 0 && *id < static_cast<int64_t>(v.types.size()) && v.types[static_cast<size_t>(*id)] == kNormal)
            v.types[static_cast<size_t>(*id)] = kControl;
    w.set("tokenizer.ggml.token_type", io::GgufArray(v.types));
    if (bos) w.set("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(*bos));
    if (eos) w.set("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(*eos));
    for (size_t i = 0; i < v.types.size(); ++i)
        if (v.types[i] == kUnknown) {
            w.set("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(i));
            break;
        }
    if (c.pad_token_id) w.set("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(*c.pad_token_id));
    // Whether hra's own tokenizer adds BOS / EOS, so llama.cpp does the same.
    const auto ids = tok->encode("a", true);
    w.set("tokenizer.ggml.add_bos_token", bos && !ids.empty() && ids.front() == *bos);
    w.set("tokenizer.ggml.add_eos_token", eos && !ids.empty() && ids.back() == *eos);
    w.set("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
}

io::GgmlType type_for(const at::Tensor& t, io::GgmlType wanted, GgufExportReport& report) {
    if (t.dim() == 1) return io::GgmlType::F32;
    if (io::ggml_type_fits(wanted, t.size(-1))) return wanted;
    ++report.fallback_tensors;
    return io::GgmlType::F16;
}

const std::regex& layer_name_re() {
    static const std::regex re(R"(^model\.layers\.(\d+)\.(.+)$)");
    return re;
}

}  // namespace

std::string gguf_tensor_name(const std::string& hf) {
    static const std::map<std::string, std::string> top = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
    };
    static const std::map<std::string, std::string> layer = {
        {"input_layernorm.weight", "attn_norm.weight"},   {"self_attn.q_proj.weight", "attn_q.weight"},
        {"self_attn.k_proj.weight", "attn_k.weight"},     {"self_attn.v_proj.weight", "attn_v.weight"},
        {"self_attn.o_proj.weight", "attn_output.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
        {"mlp.gate_proj.weight", "ffn_gate.weight"},      {"mlp.up_proj.weight", "ffn_up.weight"},
        {"mlp.down_proj.weight", "ffn_down.weight"},
    };
    if (auto it = top.find(hf); it != top.end()) return it->second;
    std::smatch m;
    if (!std::regex_match(hf, m, layer_name_re())) return "";
    auto it = layer.find(m[2].str());
    return it == layer.end() ? "" : "blk." + m[1].str() + "." + it->second;
}

at::Tensor gguf_permute_rows(const at::Tensor& w, int64_t heads) {
    const int64_t rows = w.size(0);
    if (heads <= 0 || rows % (2 * heads) != 0)
        throw Error("cannot reorder " + std::to_string(rows) + " rows into " + std::to_string(heads) + " RoPE heads");
    auto sizes = w.sizes().vec();
    std::vector<int64_t> split = {heads, 2, rows / heads / 2};
    split.insert(split.end(), sizes.begin() + 1, sizes.end());
    return w.reshape(split).transpose(1, 2).reshape(sizes).contiguous();
}

namespace {

// q_proj / k_proj rows reordered for llama.cpp; other tensors unchanged.
at::Tensor for_llama_cpp(const std::string& hf_name, const at::Tensor& t, const LlamaConfig& c) {
    if (ends_with(hf_name, "self_attn.q_proj.weight")) return gguf_permute_rows(t, c.num_attention_heads);
    if (ends_with(hf_name, "self_attn.k_proj.weight")) return gguf_permute_rows(t, c.num_key_value_heads);
    return t;
}

}  // namespace

GgufExportReport export_gguf_model(const std::string& model_dir, const std::vector<std::string>& adapter_dirs,
                                   const std::string& out_path, io::GgmlType type) {
    const LlamaConfig config = read_llama_config(model_dir);
    check_llama_arch(config, model_dir);
    GgufExportReport report;
    io::GgufWriter w;
    set_model_metadata(w, config, model_dir);
    w.set("general.file_type", file_type_of(type));
    w.set("general.quantization_version", uint32_t{2});  // ggml's quantisation format version
    set_vocab_metadata(w, config, model_dir, report);

    LoadOptions opt;
    opt.dtype = torch::kFloat;
    auto m = load_with_adapters(model_dir, adapter_dirs, opt);
    if (m.peft) m.peft->merge_and_unload(/*safe=*/true);
    torch::NoGradGuard no_grad;
    for (const auto& [name, t] : llama_state_dict(*m.base.model, torch::kFloat)) {
        const std::string g = gguf_tensor_name(name);
        if (g.empty()) throw Error("llama.cpp's llama architecture has no tensor for '" + name + "'", {model_dir});
        const auto values = for_llama_cpp(name, t, config);
        w.add_tensor(g, values, type_for(values, type, report));
        ++report.tensors;
    }
    report.bytes = w.write(out_path);
    return report;
}

GgufExportReport export_gguf_lora(const std::string& model_dir, const std::string& adapter_dir, const std::string& out_path,
                                  io::GgmlType type) {
    const LlamaConfig config = read_llama_config(model_dir);
    check_llama_arch(config, model_dir);
    io::PeftFolder folder = io::read_peft_folder(adapter_dir);
    AdapterConfig ac = parse_adapter_config(folder.config_text, folder.config_path);
    io::NamedTensors tensors;
    if (ac.peft_type == "HRA") {
        LoraExport e = hra_adapter_as_lora(adapter_dir, model_dir);
        ac = e.config;
        tensors = std::move(e.tensors);
    } else if (ac.peft_type == "LORA") {
        for (const auto& key : folder.weights->names()) tensors.emplace_back(key, folder.weights->tensor(key));
    } else {
        throw Error("GGUF LoRA export takes a LoRA or HRA adapter, not peft_type " + ac.peft_type, {folder.config_path});
    }
    if (ac.bias != "none" || (ac.modules_to_save && !ac.modules_to_save->empty()))
        throw Error("a llama.cpp LoRA holds only low-rank factors: this adapter also trains biases or modules_to_save; export "
                    "the merged model instead (hra export gguf without --lora-only)",
                    {folder.config_path});
    double alpha = ac.peft_type == "LORA" ? ac.get<double>("lora_alpha") : static_cast<double>(ac.r);
    // llama.cpp scales by alpha / r; rsLoRA's alpha / sqrt(r) is the same with alpha * sqrt(r).
    if (ac.peft_type == "LORA" && ac.get<bool>("use_rslora")) alpha *= std::sqrt(static_cast<double>(ac.r));

    GgufExportReport report;
    io::GgufWriter w;
    // What llama.cpp's convert_lora_to_gguf.py writes: no hyperparameters, no vocabulary.
    w.set("general.architecture", std::string("llama"));
    w.set("general.type", std::string("adapter"));
    w.set("general.name", fs::path(adapter_dir).lexically_normal().filename().string());
    w.set("general.quantization_version", uint32_t{2});
    w.set("adapter.type", std::string("lora"));
    w.set("adapter.lora.alpha", static_cast<float>(alpha));
    const std::string prefix = kPeftKeyPrefix;
    std::map<std::string, at::Tensor> by_key(tensors.begin(), tensors.end());
    torch::NoGradGuard no_grad;
    for (const auto& [key, a] : by_key) {
        if (!ends_with(key, ".lora_A.weight")) {
            if (ends_with(key, ".lora_B.weight")) continue;
            throw Error("a llama.cpp LoRA cannot hold '" + key + "'", {folder.weights_path});
        }
        if (key.rfind(prefix, 0) != 0) throw Error("key does not start with '" + prefix + "'", {folder.weights_path, key});
        const std::string module = key.substr(prefix.size(), key.size() - prefix.size() - std::string(".lora_A.weight").size());
        const std::string hf = module + ".weight";
        const std::string g = gguf_tensor_name(hf);
        if (g.empty() || g.rfind("blk.", 0) != 0)
            throw Error("llama.cpp applies LoRA to the layers' linear weights; this adapter adapts '" + module + "'",
                        {folder.weights_path, key});
        auto b = by_key.find(prefix + module + ".lora_B.weight");
        if (b == by_key.end()) throw Error("no lora_B for '" + module + "'", {folder.weights_path, key});
        if (a.dim() != 2 || b->second.dim() != 2 || a.size(0) != b->second.size(1))
            throw Error("lora_A " + c10::str(a.sizes()) + " and lora_B " + c10::str(b->second.sizes()) + " do not fit",
                        {folder.weights_path, key});
        const auto A = a.to(torch::kFloat).contiguous();
        const auto B = for_llama_cpp(hf, b->second.to(torch::kFloat), config);
        w.add_tensor(g + ".lora_a", A, type_for(A, type, report));
        w.add_tensor(g + ".lora_b", B, type_for(B, type, report));
        report.tensors += 2;
    }
    if (report.tensors == 0) throw Error("no lora_A tensors in the adapter", {folder.weights_path});
    report.bytes = w.write(out_path);
    return report;
}

}  // namespace hra
