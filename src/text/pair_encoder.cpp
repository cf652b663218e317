#include "text/pair_encoder.h"

#include <filesystem>

#include "common/error.h"
#include "text/sp_tokenizer.h"

namespace hra {

PairEncoder PairEncoder::load(const std::string& dir) {
    const auto spm = std::filesystem::path(dir) / "spm.model";
    std::shared_ptr<Tokenizer> tok;
    if (std::filesystem::is_regular_file(spm)) tok = make_sentencepiece_tokenizer(spm.string());
    else tok = load_tokenizer(dir);
    try {
        return PairEncoder(std::move(tok));
    } catch (const Error& e) {
        throw e.in_file(dir);
    }
}

PairEncoder::PairEncoder(std::shared_ptr<Tokenizer> tokenizer) : tok_(std::move(tokenizer)) {
    auto id = [&](const char* name) { return tok_->token_id(name).value_or(-1); };
    cls_ = id("[CLS]");
    sep_ = id("[SEP]");
    if (cls_ < 0 || sep_ < 0) throw Error("the tokenizer has no [CLS] or [SEP] token");
    pad_ = std::max<int64_t>(0, id("[PAD]"));
    unk_ = id("[UNK]");
    mask_ = id("[MASK]");
    if (mask_ < 0) mask_ = tok_->vocab_size();
}

PairEncoder::Encoded PairEncoder::encode(const std::string& a, const std::string& b, int64_t max_length) const {
    auto ta = tok_->encode(a, false);
    std::vector<int64_t> tb;
    const bool pair = !b.empty();
    if (pair) tb = tok_->encode(b, false);
    const int64_t specials = pair ? 3 : 2;
    if (max_length < specials) throw Error("max_length " + std::to_string(max_length) + " leaves no room for the text");
    int64_t excess = static_cast<int64_t>(ta.size() + tb.size()) + specials - max_length;
    while (excess-- > 0) {
        if (ta.size() > tb.size()) ta.pop_back();
        else tb.pop_back();
    }
    Encoded e;
    e.ids.reserve(ta.size() + tb.size() + static_cast<size_t>(specials));
    e.ids.push_back(cls_);
    e.ids.insert(e.ids.end(), ta.begin(), ta.end());
    e.ids.push_back(sep_);
    e.token_type_ids.assign(e.ids.size(), 0);
    if (pair) {
        e.ids.insert(e.ids.end(), tb.begin(), tb.end());
        e.ids.push_back(sep_);
        e.token_type_ids.resize(e.ids.size(), 1);
    }
    return e;
}

}  // namespace hra
