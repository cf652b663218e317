#include "text/vocab_json.h"

#include <algorithm>
#include <tuple>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "text/unicode.h"

namespace hra {

using json = nlohmann::ordered_json;

std::string llama_tokenizer_json(const ScoredVocab& v) {
    const size_t n = v.pieces.size();
    if (v.scores.size() != n || v.types.size() != n) throw Error("vocabulary pieces, scores and types differ in length");
    std::unordered_map<std::string, int64_t> index;
    for (size_t i = 0; i < n; ++i) index.emplace(v.pieces[i], static_cast<int64_t>(i));

    // Merges: every split of every piece into two vocabulary pieces, ordered by
    // the piece's score (stable), and within a piece by the parts' ids.
    struct Merge {
        int64_t left, right;
        float score;
    };
    std::vector<Merge> merges;
    for (size_t i = 0; i < n; ++i) {
        const auto chars = text::utf8_chars(v.pieces[i]);
        std::vector<Merge> local;
        std::string left;
        for (size_t k = 1; k < chars.size(); ++k) {
            left += chars[k - 1];
            std::string right;
            for (size_t m = k; m < chars.size(); ++m) right += chars[m];
            auto l = index.find(left), r = index.find(right);
            if (l != index.end() && r != index.end()) local.push_back({l->second, r->second, v.scores[i]});
        }
        std::sort(local.begin(), local.end(),
                  [](const Merge& a, const Merge& b) { return std::tie(a.left, a.right) < std::tie(b.left, b.right); });
        merges.insert(merges.end(), local.begin(), local.end());
    }
    std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) { return a.score > b.score; });

    json vocab = json::object();
    for (size_t i = 0; i < n; ++i) vocab[v.pieces[i]] = i;
    json merge_list = json::array();
    for (const auto& m : merges) merge_list.push_back(v.pieces[m.left] + " " + v.pieces[m.right]);

    json added = json::array();
    for (size_t i = 0; i < n; ++i)
        if (v.types[i] == 1 || v.types[i] == 2)
            added.push_back({{"id", i}, {"content", v.pieces[i]}, {"single_word", false}, {"lstrip", false},
                             {"rstrip", false}, {"normalized", false}, {"special", true}});
    const std::string bos = v.pieces.at(v.bos_id);
    const std::string spm = "\xE2\x96\x81";
    json j;
    j["version"] = "1.0";
    j["truncation"] = nullptr;
    j["padding"] = nullptr;
    j["added_tokens"] = added;
    // The normaliser form of Llama 2's own tokenizer.json: "▁" prepended, spaces
    // replaced. (A Metaspace pre-tokenizer would skip the prefix when the text
    // already starts with a space, which SentencePiece and llama2.c do not.)
    j["normalizer"] = {{"type", "Sequence"},
                       {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", spm}},
                                                    {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", spm}}})}};
    j["pre_tokenizer"] = nullptr;
    j["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {v.bos_id}}, {"tokens", {bos}}}}}}};
    j["decoder"] = {{"type", "Sequence"},
                    {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", spm}}}, {"content", " "}},
                                              {{"type", "ByteFallback"}},
                                              {{"type", "Fuse"}},
                                              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}};
    j["model"] = {{"type", "BPE"},         {"dropout", nullptr},      {"unk_token", v.pieces.at(v.unk_id)},
                  {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                  {"fuse_unk", true},      {"byte_fallback", true},   {"ignore_merges", false},
                  {"vocab", vocab},        {"merges", merge_list}};
    return j.dump(2) + "\n";
}

std::string llama_tokenizer_config_json(const ScoredVocab& v, int64_t model_max_length) {
    json j;
    j["add_bos_token"] = true;
    j["add_eos_token"] = false;
    j["bos_token"] = v.pieces.at(v.bos_id);
    j["eos_token"] = v.pieces.at(v.eos_id);
    j["unk_token"] = v.pieces.at(v.unk_id);
    j["pad_token"] = nullptr;
    j["clean_up_tokenization_spaces"] = false;
    j["legacy"] = false;
    j["model_max_length"] = model_max_length;
    j["tokenizer_class"] = "LlamaTokenizer";
    return j.dump(2) + "\n";
}

}  // namespace hra
