#include "eval/runner.h"

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "data/dataset.h"
#include "eval/math_answer.h"
#include "io/atomic_file.h"
#include "models/generate.h"
#include "text/tokenizer.h"

namespace hra::eval {

using json = nlohmann::json;

std::string seed_eval_prompt(const std::string& question) {
    return "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
           "### Instruction:\n" +
           question + "\n\n### Response: Let's think step by step.";
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

std::vector<std::pair<json, int64_t>> read_jsonl(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw Error("cannot open", {path});
    std::vector<std::pair<json, int64_t>> out;
    std::string line;
    int64_t n = 0;
    while (std::getline(in, line)) {
        ++n;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            out.emplace_back(json::parse(line), n);
        } catch (const json::exception& e) {
            throw Error(std::string("invalid JSON: ") + e.what(), {path, "", n});
        }
    }
    if (out.empty()) throw Error("no records", {path});
    return out;
}

std::string string_field(const json& j, const std::string& name, const std::string& path, int64_t line) {
    if (!j.is_object() || !j.contains(name)) throw Error("missing field '" + name + "'", {path, "", line});
    if (j[name].is_string()) return j[name].get<std::string>();
    if (j[name].is_number()) return j[name].dump();
    throw Error("field '" + name + "' must be a string or a number", {path, "", line});
}

json summary(const std::string& task, Protocol p, int64_t n, int64_t correct) {
    return {{"task", task}, {"protocol", protocol_name(p)}, {"n", n}, {"correct", correct},
            {"accuracy", n ? static_cast<double>(correct) / static_cast<double>(n) : 0.0}};
}

}  // namespace

json score_predictions(const std::string& path, const ScoreOptions& o) {
    std::string scored;
    int64_t n = 0, correct = 0;
    for (const auto& [rec, line] : read_jsonl(path)) {
        const std::string completion = string_field(rec, o.completion_field, path, line);
        const std::string answer = string_field(rec, o.answer_field, path, line);
        Scored s;
        try {
            s = score_one(o.task, completion, answer, o.protocol);
        } catch (const Error& e) {
            throw Error(e.message(), {path, "", line});
        }
        ++n;
        correct += s.correct;
        json out = rec;
        out["extracted"] = s.extracted;
        out["reference"] = s.reference;
        out["correct"] = s.correct;
        scored += out.dump() + "\n";
    }
    if (!o.output.empty()) io::write_file_atomically(o.output, scored);
    return summary(o.task, o.protocol, n, correct);
}

json generate_and_score(LlamaForCausalLMImpl& model, const Tokenizer& tok, const GenerateEvalOptions& o) {
    auto records = read_jsonl(o.data);
    auto pick = [&](const json& j, const std::string& chosen, std::initializer_list<const char*> defaults) {
        if (!chosen.empty()) return chosen;
        for (const char* d : defaults)
            if (j.contains(d)) return std::string(d);
        return std::string(*defaults.begin());
    };
    SamplingOptions s;
    s.max_new_tokens = o.max_new_tokens;
    s.stop = {"Instruction:", "Instruction", "Response:", "Response"};  // the seed's vLLM stop strings
    if (auto eos = tok.eos_id()) s.eos_ids = {*eos};
    std::string out;
    int64_t n = 0, correct = 0;
    const bool math = o.task == "math";
    for (const auto& [rec, line] : records) {
        if (o.limit && n >= *o.limit) break;
        const std::string qf = pick(rec, o.question_field, math ? std::initializer_list<const char*>{"instruction", "problem"}
                                                                  : std::initializer_list<const char*>{"question"});
        const std::string af = pick(rec, o.answer_field, math ? std::initializer_list<const char*>{"output", "solution"}
                                                                : std::initializer_list<const char*>{"answer"});
        const std::string prompt = seed_eval_prompt(string_field(rec, qf, o.data, line));
        const std::string answer = string_field(rec, af, o.data, line);
        auto res = generate(model, tok, tok.encode(prompt, true), s);
        Scored sc;
        try {
            sc = score_one(o.task, res.text, answer, o.protocol);
        } catch (const Error& e) {
            throw Error(e.message(), {o.data, "", line});
        }
        ++n;
        correct += sc.correct;
        out += json{{"prompt", prompt}, {"completion", res.text}, {"extracted", sc.extracted}, {"reference", sc.reference},
                    {"correct", sc.correct}}
                   .dump() +
               "\n";
        if (!o.quiet) std::fprintf(stderr, "\rhra: %lld/%zu scored, %lld correct", static_cast<long long>(n),
                                   o.limit ? std::min<size_t>(records.size(), static_cast<size_t>(*o.limit)) : records.size(),
                                   static_cast<long long>(correct));
    }
    if (!o.quiet) std::fprintf(stderr, "\n");
    if (!o.output.empty()) io::write_file_atomically(o.output, out);
    return summary(o.task, o.protocol, n, correct);
}

json perplexity(LlamaForCausalLMImpl& model, const Tokenizer& tok, const std::string& data, const DataOptions& o,
                int64_t batch_size) {
    auto examples = tokenize_records(read_records(data, o), tok, o, data);
    torch::NoGradGuard ng;
    model.eval();
    double sum = 0;
    int64_t tokens = 0;
    const int64_t pad = tok.eos_id().value_or(0);
    for (size_t start = 0; start < examples.size(); start += static_cast<size_t>(batch_size)) {
        const size_t end = std::min(examples.size(), start + static_cast<size_t>(batch_size));
        int64_t len = 0;
        for (size_t i = start; i < end; ++i) len = std::max<int64_t>(len, static_cast<int64_t>(examples[i].input_ids.size()));
        auto ids = torch::full({static_cast<int64_t>(end - start), len}, pad, torch::kLong);
        auto mask = torch::zeros_like(ids), labels = torch::full_like(ids, -100);
        for (size_t i = start; i < end; ++i)
            for (size_t t = 0; t < examples[i].input_ids.size(); ++t) {
                ids[static_cast<int64_t>(i - start)][static_cast<int64_t>(t)] = examples[i].input_ids[t];
                mask[static_cast<int64_t>(i - start)][static_cast<int64_t>(t)] = 1;
                labels[static_cast<int64_t>(i - start)][static_cast<int64_t>(t)] = examples[i].labels[t];
            }
        LlamaInputs in;
        in.input_ids = ids;
        in.attention_mask = mask;
        auto logits = model.forward(in).logits;
        const int64_t v = logits.size(-1);
        auto targets = labels.narrow(1, 1, len - 1).reshape({-1});
        sum += torch::nn::functional::cross_entropy(logits.narrow(1, 0, len - 1).reshape({-1, v}).to(torch::kFloat), targets,
                                                    torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum))
                   .item<double>();
        tokens += targets.ne(-100).sum().item<int64_t>();
    }
    const double loss = tokens ? sum / static_cast<double>(tokens) : 0;
    return {{"task", "perplexity"}, {"examples", examples.size()}, {"tokens", tokens}, {"loss", loss}, {"perplexity", std::exp(loss)}};
}

}  // namespace hra::eval
