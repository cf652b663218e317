// hra tokenize: the ids any of hra's tokenizers gives a text, as one JSON line.
#include <cstdio>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "common/error.h"
#include "common/log.h"
#include "text/clip_tokenizer.h"
#include "text/tokenizer.h"

namespace hra::cli {

Command add_tokenize(CLI::App& app) {
    auto* cmd = app.add_subcommand("tokenize", "print the token ids of a text (tokenizer.json, SentencePiece, llama2.c, CLIP)");
    struct Opts {
        std::string model, merges, text;
        bool clip = false, no_special = false, padded = false;
    };
    auto o = std::make_shared<Opts>();
    cmd->add_option("--model", o->model, "model or tokenizer folder (a diffusers pipeline's tokenizer/ too)");
    cmd->add_flag("--clip", o->clip, "CLIP's tokenizer from the bundled merges (data/clip), no folder needed");
    cmd->add_option("--merges", o->merges, "CLIP's tokenizer from this merges file (bpe_simple_vocab_16e6.txt[.gz])");
    cmd->add_option("--text", o->text, "the text (UTF-8)")->required();
    cmd->add_flag("--no-special", o->no_special, "leave out the tokenizer's special tokens (BOS, CLIP's start/end)");
    cmd->add_flag("--padded", o->padded, "CLIP: Stable Diffusion's 77 ids (start, at most 75 tokens, end, padding)");
    return {cmd, [o]() {
                if (static_cast<int>(!o->model.empty()) + static_cast<int>(o->clip) + static_cast<int>(!o->merges.empty()) != 1)
                    throw Error("give one of --model DIR, --clip or --merges FILE");
                std::unique_ptr<Tokenizer> tok;
                if (o->clip) tok = ClipTokenizer::bundled();
                else if (!o->merges.empty()) tok = ClipTokenizer::from_merges_file(o->merges);
                else tok = load_tokenizer(o->model);
                nlohmann::json j;
                j["tokenizer"] = tok->kind();
                std::vector<int64_t> ids;
                if (o->padded) {
                    const auto* clip = dynamic_cast<const ClipTokenizer*>(tok.get());
                    if (!clip) throw Error("--padded applies to CLIP tokenizers only");
                    const auto p = clip->encode_padded(o->text);
                    if (p.truncated)
                        log_warning("the text has " + std::to_string(p.tokens) + " tokens; CLIP keeps the first " +
                                    std::to_string(clip->max_length() - 2));
                    ids = p.ids;
                    j["truncated"] = p.truncated;
                } else {
                    ids = tok->encode(o->text, !o->no_special);
                }
                std::vector<std::string> tokens;
                for (auto id : ids) tokens.push_back(tok->token(id));
                j["ids"] = ids;
                j["tokens"] = tokens;
                std::printf("%s\n", j.dump().c_str());
                return 0;
            }};
}

}  // namespace hra::cli
