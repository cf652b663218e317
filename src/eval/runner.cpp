#include "eval/runner.h"

#include <chrono>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "data/batch.h"
#include "data/dataset.h"
#include "eval/math_answer.h"
#include "io/atomic_file.h"
#include "models/generate.h"
#include "text/tokenizer.h"
#include "io/json_file.h"

namespace hra::eval {

using json = nlohmann::json;

std::string seed_eval_prompt(const std::string& question) {
    std::string p = kDefaultPromptTemplate;
    return p.replace(p.find("{query}"), 7, question) + " Let's think step by step.";
}

namespace {

struct Scored {
    bool correct;
    std::string extracted, reference;
};

Scored score_one(const std::string& task, const std::string& completion, const std::string& answer, Protocol p) {
    if (task == "gsm8k") {
        auto s = gsm8k_score(completion, answer, p);
        auto gold = gsm8k_gold(answer);
        return {s.correct, s.extracted, gold ? gold->text : ""};
    }
    if (task == "math") {
        auto s = math_score(completion, answer, p);
        return {s.correct, s.extracted, s.reference};
    }
    throw Error("unknown task '" + task + "' (expected gsm8k or math)");
}

void check_task(const std::string& task) {
    if (task != "gsm8k" && task != "math") throw Error("unknown task '" + task + "' (expected gsm8k or math)");
}

std::vector<std::pair<json, int64_t>> read_jsonl(const std::string& path, io::BadRecords& bad) {
    std::istringstream in(io::read_file(path));  // bounded when `path` is a device or a pipe
    std::vector<std::pair<json, int64_t>> out;
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
        ++n;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            out.emplace_back(io::parse_json(line, "", static_cast<long>(n)), n);
        } catch (const Error& e) {
            bad.add(e.message(), static_cast<long>(n));
        }
    }
    if (out.empty()) bad.fail_empty("no records");
    return out;
}

// Errors carry the field as their key; the caller adds file and line.
std::string string_field(const json& j, const std::string& name) {
    if (!j.is_object() || !j.contains(name)) throw Error("missing field '" + name + "'", {"", name});
    if (j[name].is_string()) return j[name].get<std::string>();
    if (j[name].is_number()) return j[name].dump();
    throw Error("field '" + name + "' must be a string or a number", {"", name});
}

json summary(const std::string& task, Protocol p, int64_t n, int64_t correct, const io::BadRecords& bad) {
    bad.report();
    return {{"task", task}, {"protocol", protocol_name(p)}, {"n", n}, {"correct", correct},
            {"accuracy", n ? static_cast<double>(correct) / static_cast<double>(n) : 0.0},
            {"skipped", bad.count()}};
}

}  // namespace

json score_predictions(const std::string& path, const ScoreOptions& o) {
    std::string scored;
    check_task(o.task);
    int64_t n = 0, correct = 0;
    io::BadRecords bad(path, o.on_bad_record);
    for (const auto& [rec, line] : read_jsonl(path, bad)) {
        Scored s;
        try {
            const std::string completion = string_field(rec, o.completion_field);
            const std::string answer = string_field(rec, o.answer_field);
            s = score_one(o.task, completion, answer, o.protocol);
        } catch (const Error& e) {
            bad.add(e, static_cast<long>(line));
            continue;
        }
        ++n;
        correct += s.correct;
        json out = rec;
        out["extracted"] = s.extracted;
        out["reference"] = s.reference;
        out["correct"] = s.correct;
        scored += out.dump() + "\n";
    }
    if (n == 0) bad.fail_empty("no usable record");
    if (!o.output.empty()) io::write_file_atomically(o.output, scored);
    return summary(o.task, o.protocol, n, correct, bad);
}

json generate_and_score(LlamaForCausalLMImpl& model, const Tokenizer& tok, const GenerateEvalOptions& o) {
    check_task(o.task);
    io::BadRecords bad(o.data, o.on_bad_record);
    auto records = read_jsonl(o.data, bad);
    auto pick = [&](const json& j, const std::string& chosen, std::initializer_list<const char*> defaults) {
        if (!chosen.empty()) return chosen;
        for (const char* d : defaults)
            if (j.contains(d)) return std::string(d);
        return std::string(*defaults.begin());
    };
    SamplingOptions s;
    s.max_new_tokens = o.max_new_tokens;
    const bool instruction = o.template_name == "metamath" || o.template_name == "alpaca";
    if (instruction) s.stop = {"Instruction:", "Instruction", "Response:", "Response"};  // the seed's vLLM stop strings
    if (auto eos = tok.eos_id()) s.eos_ids = {*eos};
    for (const char* end : {"<|im_end|>", "<|eot_id|>"})  // chat turns end with these
        if (o.template_name != "metamath" && o.template_name != "alpaca")
            if (auto id = tok.token_id(end)) s.eos_ids.push_back(*id);
    std::string out;
    int64_t n = 0, correct = 0;
    const bool math = o.task == "math";
    struct Item {
        std::vector<int64_t> ids;
        std::string prompt, answer;
        int64_t line;
    };
    GenerationPrompt gp;
    gp.template_name = o.template_name;
    gp.template_text = o.template_text;
    gp.step_by_step = o.step_by_step;
    std::vector<Item> items;
    for (const auto& [rec, line] : records) {
        if (o.limit && static_cast<int64_t>(items.size()) >= *o.limit) break;
        const std::string qf = pick(rec, o.question_field, math ? std::initializer_list<const char*>{"instruction", "problem"}
                                                                  : std::initializer_list<const char*>{"question"});
        const std::string af = pick(rec, o.answer_field, math ? std::initializer_list<const char*>{"output", "solution"}
                                                                : std::initializer_list<const char*>{"answer"});
        try {
            gp.query = string_field(rec, qf);
            auto ids = encode_generation_prompt(tok, gp);
            // The prompt as text in the predictions file (chat templates: decoded, special tokens shown).
            std::string shown = tok.decode(ids, /*skip_special=*/false);
            if (instruction) {
                shown = seed_eval_prompt(gp.query);
                if (!o.step_by_step) shown.resize(shown.size() - std::string(" Let's think step by step.").size());
            }
            items.push_back({std::move(ids), shown, string_field(rec, af), line});
        } catch (const Error& e) {
            bad.add(e, static_cast<long>(line));
        }
    }
    if (items.empty()) bad.fail_empty("no usable record");
    const auto t0 = std::chrono::steady_clock::now();
    const size_t bs = static_cast<size_t>(std::max<int64_t>(1, o.batch_size));
    for (size_t start = 0; start < items.size(); start += bs) {
        std::vector<std::vector<int64_t>> prompts;
        for (size_t i = start; i < std::min(items.size(), start + bs); ++i) prompts.push_back(items[i].ids);
        auto results = generate_batch(model, tok, prompts, s);
        for (size_t k = 0; k < results.size(); ++k) {
            const auto& it = items[start + k];
            Scored sc;
            try {
                sc = score_one(o.task, results[k].text, it.answer, o.protocol);
            } catch (const Error& e) {
                bad.add(e, static_cast<long>(it.line));  // a reference the grader cannot read
                continue;
            }
            ++n;
            correct += sc.correct;
            out += json{{"prompt", it.prompt}, {"completion", results[k].text}, {"extracted", sc.extracted},
                        {"reference", sc.reference}, {"correct", sc.correct}}
                       .dump() +
                   "\n";
        }
        const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        show_progress(strprintf("hra: %lld/%zu scored, %lld correct, %.2f questions/s", static_cast<long long>(n),
                                items.size(), static_cast<long long>(correct), static_cast<double>(n) / secs));
    }
    clear_progress();
    const double per_s =
        static_cast<double>(n) / std::max(1e-9, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    log_info(strprintf("hra: %lld/%zu scored, %lld correct, %.2f questions/s", static_cast<long long>(n), items.size(),
                       static_cast<long long>(correct), per_s));
    if (!o.output.empty()) io::write_file_atomically(o.output, out);
    auto result = summary(o.task, o.protocol, n, correct, bad);
    result["questions_per_s"] = per_s;
    return result;
}

json perplexity(LlamaForCausalLMImpl& model, const Tokenizer& tok, const std::string& data, const DataOptions& o,
                int64_t batch_size) {
    auto examples = tokenize_records(read_records(data, o), tok, o, data);
    torch::NoGradGuard ng;
    model.eval();
    double sum = 0;
    int64_t tokens = 0;
    // The padding id of training (train/tasks/causal_lm.cpp); masked positions do not count.
    PadOptions po;
    po.pad_id = model.config().pad_token_id.value_or(tok.eos_id().value_or(0));
    for (size_t start = 0; start < examples.size(); start += static_cast<size_t>(batch_size)) {
        const size_t end = std::min(examples.size(), start + static_cast<size_t>(batch_size));
        TokenRows ids, labels;
        for (size_t i = start; i < end; ++i) {
            ids.push_back(&examples[i].input_ids);
            labels.push_back(&examples[i].labels);
        }
        auto b = pad_batch(ids, po, labels);
        LlamaInputs in;
        in.input_ids = b.ids;
        in.attention_mask = b.mask;
        auto logits = model.forward(in).logits;
        const int64_t v = logits.size(-1), len = b.ids.size(1);
        auto targets = b.labels.narrow(1, 1, len - 1).reshape({-1});
        sum += torch::nn::functional::cross_entropy(logits.narrow(1, 0, len - 1).reshape({-1, v}).to(torch::kFloat), targets,
                                                    torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum))
                   .item<double>();
        tokens += targets.ne(-100).sum().item<int64_t>();
    }
    const double loss = tokens ? sum / static_cast<double>(tokens) : 0;
    return {{"task", "perplexity"}, {"examples", examples.size()}, {"tokens", tokens}, {"loss", loss}, {"perplexity", std::exp(loss)}};
}

}  // namespace hra::eval
