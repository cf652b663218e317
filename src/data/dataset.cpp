#include "data/dataset.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "text/unicode.h"

namespace hra {

using json = nlohmann::json;

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
    return s;
}

std::string field(const json& rec, const std::string& name, bool required) {
    if (!rec.contains(name) || rec[name].is_null()) {
        if (required) throw Error("missing field '" + name + "'");
        return "";
    }
    if (!rec[name].is_string()) throw Error("field '" + name + "' is not a string");
    return rec[name].get<std::string>();
}

std::string detect(const json& rec) {
    if (rec.contains("messages")) return "chat";
    if (rec.contains("query") && rec.contains("response")) return "metamath";
    if (rec.contains("question") && rec.contains("answer")) return "gsm8k";
    if (rec.contains("instruction") && rec.contains("output")) return "alpaca";
    if (rec.contains("text")) return "text";
    throw Error("cannot tell the format from the fields (expected query/response, question/answer, "
                "instruction/output, text or messages; or set format and the field names)");
}

void chat_segments(const json& messages, const std::string& tmpl, Rendered& out) {
    if (!messages.is_array() || messages.empty()) throw Error("'messages' must be a non-empty list");
    auto add = [&](std::string text, bool target, bool special = false) {
        out.segments.push_back({std::move(text), target, special});
    };
    std::string system;
    for (size_t i = 0; i < messages.size(); ++i) {
        const auto& m = messages[i];
        if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
            !m["content"].is_string())
            throw Error("message " + std::to_string(i) + " needs string 'role' and 'content'");
        const std::string role = m["role"].get<std::string>(), content = m["content"].get<std::string>();
        if (role != "system" && role != "user" && role != "assistant")
            throw Error("message " + std::to_string(i) + " has unknown role '" + role + "'");
        const bool assistant = role == "assistant";
        if (tmpl == "chatml") {
            add("<|im_start|>", false, true);
            add(role + "\n", false);
            add(content, assistant);
            add("<|im_end|>", assistant, true);
            add("\n", false);
        } else if (tmpl == "llama3") {
            if (i == 0) add("<|begin_of_text|>", false, true);
            add("<|start_header_id|>", false, true);
            add(role, false);
            add("<|end_header_id|>", false, true);
            add("\n\n", false);
            add(content, assistant);
            add("<|eot_id|>", assistant, true);
        } else if (tmpl == "llama2") {
            if (role == "system") {
                system = content;
            } else if (role == "user") {
                add("<s>", false, true);
                add("[INST] " + (system.empty() ? "" : "<<SYS>>\n" + system + "\n<</SYS>>\n\n") + content + " [/INST]", false);
                system.clear();
            } else {
                add(" " + content + " ", true);
                add("</s>", true, true);
            }
        } else {
            throw Error("unknown chat_template '" + tmpl + "' (expected llama2, llama3 or chatml)");
        }
    }
}

}  // namespace

std::string gsm8k_answer_as_metamath(const std::string& answer) {
    std::string out;
    for (size_t i = 0; i < answer.size();) {
        if (answer.compare(i, 2, "<<") == 0) {
            const size_t end = answer.find(">>", i + 2);
            if (end != std::string::npos) {
                i = end + 2;
                continue;
            }
        }
        out.push_back(answer[i++]);
    }
    const size_t m = out.rfind("#### ");
    if (m != std::string::npos) out = out.substr(0, m) + "The answer is: " + out.substr(m + 5);
    return out;
}

std::vector<Rendered> read_records(const std::string& path, const DataOptions& o) {
    if (!std::filesystem::is_regular_file(path)) throw Error("no such data file", {path});
    const std::string data = io::read_file(path);
    std::vector<std::pair<json, int64_t>> raw;  // (record, line)
    io::BadRecords bad(path, o.on_bad_record);
    size_t first = data.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) throw Error("the data file is empty", {path});
    if (data[first] == '[') {
        const json all = io::parse_json(data, path);
        for (size_t i = 0; i < all.size(); ++i) raw.emplace_back(all[i], static_cast<int64_t>(i + 1));
    } else {
        int64_t line_no = 0;
        size_t pos = 0;
        while (pos <= data.size()) {
            size_t nl = data.find('\n', pos);
            if (nl == std::string::npos) nl = data.size();
            std::string line = data.substr(pos, nl - pos);
            ++line_no;
            pos = nl + 1;
            if (line.find_first_not_of(" \t\r") == std::string::npos) {
                if (nl == data.size()) break;
                continue;
            }
            try {
                text::require_utf8(line, "the line");
                raw.emplace_back(io::parse_json(line, path, static_cast<long>(line_no)), line_no);
            } catch (const Error& e) {
                bad.add(e, static_cast<long>(line_no));
            } catch (const json::exception& e) {
                bad.add(std::string("invalid JSON (") + e.what() + ")", static_cast<long>(line_no));
            }
            if (nl == data.size()) break;
        }
    }
    std::vector<Rendered> out;
    for (auto& [rec, line] : raw) {
        if (o.limit && static_cast<int64_t>(out.size()) >= *o.limit) break;
        try {
            if (!rec.is_object()) throw Error("record is not a JSON object");
            const std::string format = o.format == "auto" ? detect(rec) : o.format;
            Rendered r;
            r.line = line;
            auto with = [&](const std::string& chosen, const char* fallback) { return chosen.empty() ? std::string(fallback) : chosen; };
            if (format == "metamath" || format == "gsm8k" || format == "alpaca") {
                const bool gsm = format == "gsm8k", alp = format == "alpaca";
                const std::string q = field(rec, with(o.prompt_field, gsm ? "question" : alp ? "instruction" : "query"), true);
                std::string resp = field(rec, with(o.response_field, gsm ? "answer" : alp ? "output" : "response"), true);
                if (gsm) resp = gsm8k_answer_as_metamath(resp);
                std::string input = alp ? field(rec, with(o.input_field, "input"), false) : "";
                std::string prompt = input.empty() ? replace_all(o.prompt_template, "{query}", q)
                                                   : replace_all(replace_all(kAlpacaInputTemplate, "{query}", q), "{input}", input);
                text::require_utf8(prompt, "the prompt");
                r.segments.push_back({prompt, o.train_on_prompt, false});
                r.segments.push_back({resp, true, false});
            } else if (format == "text") {
                r.segments.push_back({field(rec, with(o.text_field, "text"), true), true, false});
            } else if (format == "chat") {
                const std::string name = with(o.messages_field, "messages");
                if (!rec.contains(name)) throw Error("missing field '" + name + "'");
                chat_segments(rec[name], o.chat_template, r);
            } else {
                throw Error("unknown data format '" + format + "' (expected auto, metamath, gsm8k, alpaca, text or chat)");
            }
            out.push_back(std::move(r));
        } catch (const Error& e) {
            bad.add(e, static_cast<long>(line));
        }
    }
    if (out.empty()) bad.fail_empty("no usable record");
    bad.report();
    return out;
}

std::vector<Example> tokenize_records(const std::vector<Rendered>& records, const Tokenizer& tok, const DataOptions& o,
                                      const std::string& source) {
    std::vector<Example> out;
    int64_t dropped = 0;
    const auto eos = tok.eos_id();
    for (const auto& r : records) {
        Example ex;
        // The seed's way for prompt/response records: tokenize prompt+response as
        // one text and mask as many tokens as the prompt alone gives.
        const bool two_part = r.segments.size() == 2 && !r.segments[0].special && !r.segments[1].special;
        if (two_part) {
            const auto prompt_ids = tok.encode(r.segments[0].text, true);
            ex.input_ids = tok.encode(r.segments[0].text + r.segments[1].text, true);
            const size_t masked = r.segments[0].target ? 0 : std::min(prompt_ids.size(), ex.input_ids.size());
            ex.labels = ex.input_ids;
            for (size_t i = 0; i < masked; ++i) ex.labels[i] = -100;
        } else {
            bool first = true;
            for (const auto& s : r.segments) {
                std::vector<int64_t> ids;
                if (s.special) {
                    auto id = tok.token_id(s.text);
                    if (!id) throw Error("the tokenizer has no special token '" + s.text + "' for this chat template", {source});
                    ids = {*id};
                } else {
                    ids = tok.encode(s.text, first && r.segments.size() == 1);
                }
                first = false;
                for (auto id : ids) {
                    ex.input_ids.push_back(id);
                    ex.labels.push_back(s.target || o.train_on_prompt ? id : -100);
                }
            }
        }
        const bool chat_with_eos = !r.segments.empty() && r.segments.back().special;
        if (o.add_eos && eos && !chat_with_eos) {
            ex.input_ids.push_back(*eos);
            ex.labels.push_back(*eos);
        }
        if (static_cast<int64_t>(ex.input_ids.size()) > o.max_length) {
            ex.input_ids.resize(static_cast<size_t>(o.max_length));
            ex.labels.resize(static_cast<size_t>(o.max_length));
        }
        // Labels are predicted from the previous position: one is needed after the first token.
        const bool any = std::any_of(ex.labels.begin() + (ex.labels.empty() ? 0 : 1), ex.labels.end(),
                                     [](int64_t l) { return l != -100; });
        if (!any) {
            ++dropped;
            continue;
        }
        out.push_back(std::move(ex));
    }
    if (dropped)
        log_warning(strprintf("%s: %lld examples had no target token left after truncation to %lld tokens and were dropped",
                              source.c_str(), static_cast<long long>(dropped), static_cast<long long>(o.max_length)));
    if (out.empty()) throw Error("no usable example after tokenization", {source});
    return out;
}

std::vector<Example> pack_examples(const std::vector<Example>& examples, int64_t max_length) {
    std::vector<Example> out;
    Example cur;
    for (const auto& e : examples) {
        for (size_t i = 0; i < e.input_ids.size(); ++i) {
            cur.input_ids.push_back(e.input_ids[i]);
            cur.labels.push_back(e.labels[i]);
            if (static_cast<int64_t>(cur.input_ids.size()) == max_length) {
                out.push_back(std::move(cur));
                cur = Example();
            }
        }
    }
    if (cur.input_ids.size() > 1) out.push_back(std::move(cur));
    return out;
}

std::pair<std::vector<Example>, std::vector<Example>> split_validation(std::vector<Example> examples, double fraction,
                                                                       uint64_t seed) {
    if (fraction <= 0) return {std::move(examples), {}};
    const auto order = epoch_order(static_cast<int64_t>(examples.size()), seed, -1, true);
    const size_t n_val = fraction >= 1 ? static_cast<size_t>(fraction)
                                       : static_cast<size_t>(std::llround(fraction * static_cast<double>(examples.size())));
    if (n_val >= examples.size()) throw Error("the validation split takes every example; nothing is left to train on");
    std::vector<Example> train, val;
    for (size_t i = 0; i < order.size(); ++i) (i < n_val ? val : train).push_back(std::move(examples[order[i]]));
    return {std::move(train), std::move(val)};
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int64_t epoch, bool shuffle) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    if (!shuffle) return order;
    // Fisher-Yates with a splitmix64 stream: the same order on every platform.
    uint64_t state = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch + 2) * 0xBF58476D1CE4E5B9ull;
    auto next = [&] {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    };
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[next() % static_cast<uint64_t>(i + 1)]);
    return order;
}

}  // namespace hra
