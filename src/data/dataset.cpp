#include "data/dataset.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/log.h"
#include "common/strings.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "text/unicode.h"

namespace hra {

using json = nlohmann::json;

namespace {

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
    if (rec.contains("prompt") && rec.contains("completion")) return "completion";
    if (rec.contains("text")) return "text";
    throw Error("cannot tell the format from the fields (expected query/response, question/answer, "
                "instruction/output, prompt/completion, text or messages; or set format and the field names)");
}

// What opens a turn of `role` in the chatml and llama3 templates (llama2 has no header).
void turn_header(const std::string& tmpl, const std::string& role, bool first, Rendered& out) {
    if (tmpl == "chatml") {
        out.segments.push_back({"<|im_start|>", false, true});
        out.segments.push_back({role + "\n", false, false});
    } else if (tmpl == "llama3") {
        if (first) out.segments.push_back({"<|begin_of_text|>", false, true});
        out.segments.push_back({"<|start_header_id|>", false, true});
        out.segments.push_back({role, false, false});
        out.segments.push_back({"<|end_header_id|>", false, true});
        out.segments.push_back({"\n\n", false, false});
    }
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
            turn_header(tmpl, role, i == 0, out);
            add(content, assistant);
            add("<|im_end|>", assistant, true);
            add("\n", false);
        } else if (tmpl == "llama3") {
            turn_header(tmpl, role, i == 0, out);
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
            } else if (format == "completion") {
                // TRL's prompt-completion records: the prompt as it is (no template), then the completion.
                const std::string prompt = field(rec, with(o.prompt_field, "prompt"), true);
                text::require_utf8(prompt, "the prompt");
                r.segments.push_back({prompt, o.train_on_prompt, false});
                r.segments.push_back({field(rec, with(o.response_field, "completion"), true), true, false});
            } else if (format == "text") {
                r.segments.push_back({field(rec, with(o.text_field, "text"), true), true, false});
            } else if (format == "chat") {
                const std::string name = with(o.messages_field, "messages");
                if (!rec.contains(name)) throw Error("missing field '" + name + "'");
                chat_segments(rec[name], o.chat_template, r);
            } else {
                throw Error("unknown data format '" + format + "' (expected auto, metamath, gsm8k, alpaca, completion, text or chat)");
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

std::vector<int64_t> segment_ids(const Tokenizer& tok, const Rendered::Segment& s, bool add_special, const std::string& source,
                                 const char* flag) {
    if (!s.special) return tok.encode(s.text, add_special);
    auto id = tok.token_id(s.text);
    if (!id) {
        const auto fit = chat_templates_that_fit(tok);
        throw Error("the tokenizer has no special token '" + s.text + "' for this chat template; " +
                        (fit.empty() ? std::string("none of llama2, llama3, chatml fits it")
                                     : "use " + std::string(flag) + " " + join_names(fit, 3) + " (the ones whose tokens it has)"),
                    {source});
    }
    return {*id};
}

std::vector<std::string> chat_templates_that_fit(const Tokenizer& tok) {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> needs = {
        {"llama2", {"<s>", "</s>"}},
        {"llama3", {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"}},
        {"chatml", {"<|im_start|>", "<|im_end|>"}},
    };
    std::vector<std::string> fit;
    for (const auto& [name, tokens] : needs) {
        bool all = true;
        for (const auto& t : tokens) all = all && tok.token_id(t).has_value();
        if (all) fit.push_back(name);
    }
    return fit;
}

std::string chat_template_matching(const std::string& jinja) {
    if (jinja.find("<|start_header_id|>") != std::string::npos) return "llama3";
    if (jinja.find("<|im_start|>") != std::string::npos) return "chatml";
    if (jinja.find("[INST]") != std::string::npos) return "llama2";
    return "";
}

const std::vector<std::string>& prompt_template_names() {
    static const std::vector<std::string> names = {"alpaca", "metamath", "chatml", "llama2", "llama3"};
    return names;
}

std::vector<int64_t> encode_generation_prompt(const Tokenizer& tok, const GenerationPrompt& p) {
    const std::string& t = p.template_name;
    std::string query = p.query;
    if (t.empty() || t == "none") return tok.encode(query, true);
    if (t == "alpaca" || t == "metamath" || t == "file") {
        std::string text = t == "file" ? p.template_text : p.input.empty() ? kDefaultPromptTemplate : kAlpacaInputTemplate;
        if (t == "file" && text.find("{query}") == std::string::npos)
            throw Error("a prompt template needs {query} where the prompt goes");
        if (t == "file" && !p.input.empty() && text.find("{input}") == std::string::npos)
            throw Error("--input needs a template with {input}");
        if (t == "metamath" && !p.input.empty()) throw Error("--input needs --template alpaca");
        text = replace_all(replace_all(text, "{query}", query), "{input}", p.input);
        if (p.step_by_step) text += " Let's think step by step.";
        return tok.encode(text, true);
    }
    if (t != "chatml" && t != "llama2" && t != "llama3")
        throw Error("unknown prompt template '" + t + "' (expected " + join_names(prompt_template_names()) + ", or a file)");
    // One user turn as training renders it, then what precedes the assistant's reply.
    Rendered r;
    json messages = json::array({json{{"role", "user"}, {"content", query}}});
    chat_segments(messages, t, r);
    turn_header(t, "assistant", false, r);
    if (p.step_by_step) r.segments.push_back({t == "llama2" ? " Let's think step by step." : "Let's think step by step.", false, false});
    std::vector<int64_t> ids;
    for (const auto& s : r.segments) {
        const auto part = segment_ids(tok, s, false, "the prompt template", "--template");
        ids.insert(ids.end(), part.begin(), part.end());
    }
    return ids;
}

std::vector<Example> tokenize_records(const std::vector<Rendered>& records, const Tokenizer& tok, const DataOptions& o,
                                      const std::string& source) {
    std::vector<Example> out;
    int64_t dropped = 0;
    const auto eos = tok.eos_id();
    const auto t0 = std::chrono::steady_clock::now();
    auto last_shown = t0;
    for (const auto& r : records) {
        if (progress_enabled() && std::chrono::steady_clock::now() - last_shown > std::chrono::milliseconds(250)) {
            last_shown = std::chrono::steady_clock::now();
            show_progress(strprintf("hra: tokenizing %s: %zu/%zu records", source.c_str(),
                                    static_cast<size_t>(&r - records.data()), records.size()));
        }
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
                const auto ids = segment_ids(tok, s, first && r.segments.size() == 1, source);
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
    clear_progress();
    if (dropped)
        log_warning(strprintf("%s: %lld examples had no target token left after truncation to %lld tokens and were dropped",
                              source.c_str(), static_cast<long long>(dropped), static_cast<long long>(o.max_length)));
    if (out.empty()) throw Error("no usable example after tokenization", {source});
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (secs > 1.0)
        log_info(strprintf("hra: tokenized %zu records of %s in %.1f s", records.size(), source.c_str(), secs));
    return out;
}

namespace {

// FNV-1a, 64 bits: a cache key, not a security boundary.
struct Fnv {
    uint64_t h = 1469598103934665603ull;
    void add(const void* p, size_t n) {
        for (size_t i = 0; i < n; ++i) h = (h ^ static_cast<const uint8_t*>(p)[i]) * 1099511628211ull;
    }
    void add(const std::string& s) {
        const uint64_t n = s.size();
        add(&n, sizeof n);
        add(s.data(), s.size());
    }
};

}  // namespace

std::vector<Example> tokenize_records_cached(const std::vector<Rendered>& records, const Tokenizer& tok, const DataOptions& o,
                                             const std::string& source, const std::string& tokenizer_dir,
                                             const std::string& cache_dir) {
    namespace fs = std::filesystem;
    Fnv key;
    key.add(std::string("hra-token-cache-1"));
    // The program that tokenized: a rebuilt hra (maybe a fixed tokenizer) never reads an older cache.
    {
        std::error_code ec;
        const auto exe = fs::read_symlink("/proc/self/exe", ec);
        const auto size = ec ? 0 : fs::file_size(exe, ec);
        const auto mtime = ec ? 0 : fs::last_write_time(exe, ec).time_since_epoch().count();
        key.add(exe.string() + "/" + std::to_string(size) + "/" + std::to_string(mtime));
    }
    for (const auto& r : records) {
        const uint64_t n = r.segments.size();
        key.add(&n, sizeof n);
        for (const auto& seg : r.segments) {
            key.add(seg.text);
            const uint8_t flags = static_cast<uint8_t>((seg.target ? 1 : 0) | (seg.special ? 2 : 0));
            key.add(&flags, 1);
        }
    }
    for (const char* f : {"tokenizer.json", "tokenizer.model", "tokenizer.bin", "tokenizer_config.json"}) {
        const auto p = fs::path(tokenizer_dir) / f;
        key.add(std::string(f));
        key.add(fs::is_regular_file(p) ? io::read_file(p.string()) : std::string());
    }
    key.add(std::to_string(o.max_length) + "/" + std::to_string(o.train_on_prompt) + "/" + std::to_string(o.add_eos));
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(key.h));
    const std::string path = (fs::path(cache_dir) / ("tokens-" + std::string(hex) + ".safetensors")).string();

    if (fs::is_regular_file(path)) {
        try {
            auto f = io::SafetensorsFile::open(path);
            const auto ids = f.tensor("input_ids").contiguous(), labels = f.tensor("labels").contiguous(),
                       offsets = f.tensor("offsets").contiguous();
            const int64_t n = offsets.numel() - 1;
            const auto* off = offsets.data_ptr<int64_t>();
            if (n < 1 || ids.numel() != labels.numel() || off[0] != 0 || off[n] != ids.numel())
                throw Error("inconsistent sizes");
            std::vector<Example> out(static_cast<size_t>(n));
            const auto* pi = ids.data_ptr<int64_t>();
            const auto* pl = labels.data_ptr<int64_t>();
            for (int64_t i = 0; i < n; ++i) {
                if (off[i + 1] < off[i]) throw Error("inconsistent offsets");
                out[static_cast<size_t>(i)].input_ids.assign(pi + off[i], pi + off[i + 1]);
                out[static_cast<size_t>(i)].labels.assign(pl + off[i], pl + off[i + 1]);
            }
            log_info("hra: " + source + ": " + std::to_string(n) + " tokenized examples from the cache " + path);
            return out;
        } catch (const std::exception& e) {
            log_warning(path + ": unreadable token cache (" + e.what() + "); tokenizing again");
        }
    }
    auto out = tokenize_records(records, tok, o, source);
    std::vector<int64_t> ids, labels, offsets = {0};
    for (const auto& ex : out) {
        ids.insert(ids.end(), ex.input_ids.begin(), ex.input_ids.end());
        labels.insert(labels.end(), ex.labels.begin(), ex.labels.end());
        offsets.push_back(static_cast<int64_t>(ids.size()));
    }
    auto as_tensor = [](std::vector<int64_t>& v) {
        return at::from_blob(v.data(), {static_cast<int64_t>(v.size())}, at::kLong).clone();
    };
    try {
        io::make_dirs(cache_dir);
        io::save_safetensors(path, {{"input_ids", as_tensor(ids)}, {"labels", as_tensor(labels)}, {"offsets", as_tensor(offsets)}},
                             {{"source", source}});
    } catch (const Error& e) {
        log_warning(std::string("cannot write the token cache: ") + e.what());  // training goes on without it
    }
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
