#include "eval/glue.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <numeric>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace hra::glue {

namespace {

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::vector<std::string> split_tabs(const std::string& line) {
    std::vector<std::string> out;
    size_t pos = 0;
    for (;;) {
        const size_t tab = line.find('\t', pos);
        out.push_back(line.substr(pos, tab == std::string::npos ? std::string::npos : tab - pos));
        if (tab == std::string::npos) return out;
        pos = tab + 1;
    }
}

struct Layout {
    std::string a, b, label;  // header names
};

Layout layout(const Task& t) {
    if (t.name == "sst2") return {"sentence", "", "label"};
    if (t.name == "mrpc") return {"#1 String", "#2 String", "Quality"};
    if (t.name == "stsb") return {"sentence1", "sentence2", "score"};
    if (t.name == "qqp") return {"question1", "question2", "is_duplicate"};
    if (t.name == "mnli" || t.name == "mnli-mm") return {"sentence1", "sentence2", "gold_label"};
    if (t.name == "qnli") return {"question", "sentence", "label"};
    return {"sentence1", "sentence2", "label"};  // rte, wnli
}

}  // namespace

const std::vector<std::string>& task_names() {
    static const std::vector<std::string> names = {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli"};
    return names;
}

Task task(const std::string& given) {
    std::string n = lower(given);
    if (n.rfind("glue-", 0) == 0) n = n.substr(5);
    if (n == "sst-2") n = "sst2";
    if (n == "sts-b") n = "stsb";
    if (n == "mnli-m" || n == "mnli_matched") n = "mnli";
    if (n == "mnli_mismatched") n = "mnli-mm";
    const std::vector<std::string> binary = {"0", "1"};
    const std::vector<std::string> nli2 = {"entailment", "not_entailment"};
    if (n == "cola") return {n, "CoLA", "dev.tsv", {"unacceptable", "acceptable"}, false};
    if (n == "sst2") return {n, "SST-2", "dev.tsv", {"negative", "positive"}, false};
    if (n == "mrpc") return {n, "MRPC", "dev.tsv", {"not_equivalent", "equivalent"}, true};
    if (n == "stsb") return {n, "STS-B", "dev.tsv", {}, true};
    if (n == "qqp") return {n, "QQP", "dev.tsv", {"not_duplicate", "duplicate"}, true};
    if (n == "mnli") return {n, "MNLI", "dev_matched.tsv", {"entailment", "neutral", "contradiction"}, true};
    if (n == "mnli-mm") return {n, "MNLI", "dev_mismatched.tsv", {"entailment", "neutral", "contradiction"}, true};
    if (n == "qnli") return {n, "QNLI", "dev.tsv", nli2, true};
    if (n == "rte") return {n, "RTE", "dev.tsv", nli2, true};
    if (n == "wnli") return {n, "WNLI", "dev.tsv", {"not_entailment", "entailment"}, true};
    std::string all;
    for (const auto& t : task_names()) all += (all.empty() ? "" : ", ") + t;
    throw Error("unknown GLUE task '" + given + "' (expected one of " + all + ")");
}

std::string train_path(const Task& t, const std::string& dir) {
    return (std::filesystem::path(dir) / t.folder / "train.tsv").string();
}
std::string dev_path(const Task& t, const std::string& dir) {
    return (std::filesystem::path(dir) / t.folder / t.dev_file).string();
}

// Labels as the files write them: CoLA, SST-2, MRPC, QQP and WNLI use 0/1 in
// HF's order; MNLI, QNLI and RTE use the names.
static double label_from_text(const Task& t, const std::string& text, const std::string& path, int64_t line) {
    if (t.regression()) {
        char* end = nullptr;
        const double v = text.empty() ? NAN : std::strtod(text.c_str(), &end);
        if (end == text.c_str() + text.size() && std::isfinite(v)) return v;
        throw Error("score '" + text + "' is not a number", {path, "", line});
    }
    for (size_t i = 0; i < t.labels.size(); ++i)
        if (text == t.labels[i] || text == std::to_string(i)) return static_cast<double>(i);
    throw Error("unknown label '" + text + "' for " + t.name, {path, "", line});
}

std::vector<Example> read_tsv(const Task& t, const std::string& path, io::OnBadRecord on_bad_record) {
    if (!std::filesystem::is_regular_file(path)) throw Error("no such GLUE file", {path});
    std::string text = io::read_file(path);
    if (text.compare(0, 3, "\xEF\xBB\xBF") == 0) text = text.substr(3);
    std::istringstream in(text);
    std::string line;
    int64_t number = 0;
    std::vector<Example> out;
    int ia = -1, ib = -1, il = -1;
    size_t columns = 0;
    io::BadRecords bad(path, on_bad_record);
    if (t.name == "cola") {
        ia = 3, il = 1, columns = 4;
    } else {
        if (!std::getline(in, line)) throw Error("empty GLUE file", {path});
        ++number;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        const auto header = split_tabs(line);
        columns = header.size();
        const auto l = layout(t);
        auto find = [&](const std::string& name) {
            auto it = std::find(header.begin(), header.end(), name);
            return it == header.end() ? -1 : static_cast<int>(it - header.begin());
        };
        ia = find(l.a);
        ib = l.b.empty() ? -1 : find(l.b);
        il = find(l.label);
        if (ia < 0 || (!l.b.empty() && ib < 0))
            throw Error("header lacks the column '" + (ia < 0 ? l.a : l.b) + "' of " + t.name, {path, "", 1});
    }
    while (std::getline(in, line)) {
        ++number;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) continue;
        const auto f = split_tabs(line);
        // MNLI's train.tsv has one annotator label, dev files five: only the header decides.
        if (f.size() != columns) {
            bad.add("row has " + std::to_string(f.size()) + " fields, expected " + std::to_string(columns),
                    static_cast<long>(number));
            continue;
        }
        Example e;
        e.line = number;
        e.a = f[static_cast<size_t>(ia)];
        if (ib >= 0) e.b = f[static_cast<size_t>(ib)];
        try {
            e.label = il >= 0 ? label_from_text(t, f[static_cast<size_t>(il)], path, number) : -1;
        } catch (const Error& err) {
            bad.add(err, static_cast<long>(number));
            continue;
        }
        out.push_back(std::move(e));
    }
    if (out.empty()) bad.fail_empty("no examples in the GLUE file");
    bad.report();
    return out;
}

double parse_label(const Task& t, const nlohmann::json& v, const std::string& file, long line) {
    if (v.is_number()) {
        const double x = v.get<double>();
        if (t.regression()) return x;
        if (x == std::floor(x) && x >= 0 && x < static_cast<double>(t.labels.size())) return x;
        throw Error("class id " + v.dump() + " is out of range for " + t.name, {file, "", line});
    }
    if (v.is_string()) return label_from_text(t, v.get<std::string>(), file, line);
    throw Error("expected a number or a label name, got " + v.dump(), {file, "", line});
}

double accuracy(const std::vector<int64_t>& p, const std::vector<int64_t>& g) {
    if (p.empty()) return 0;
    size_t ok = 0;
    for (size_t i = 0; i < p.size(); ++i) ok += p[i] == g[i];
    return static_cast<double>(ok) / static_cast<double>(p.size());
}

namespace {
struct Confusion {
    double tp = 0, tn = 0, fp = 0, fn = 0;
};
Confusion confusion(const std::vector<int64_t>& p, const std::vector<int64_t>& g) {
    Confusion c;
    for (size_t i = 0; i < p.size(); ++i) {
        if (p[i] == 1 && g[i] == 1) ++c.tp;
        else if (p[i] == 1) ++c.fp;
        else if (g[i] == 1) ++c.fn;
        else ++c.tn;
    }
    return c;
}
}  // namespace

double f1_binary(const std::vector<int64_t>& p, const std::vector<int64_t>& g) {
    const auto c = confusion(p, g);
    const double d = 2 * c.tp + c.fp + c.fn;
    return d > 0 ? 2 * c.tp / d : 0.0;
}

double matthews(const std::vector<int64_t>& p, const std::vector<int64_t>& g) {
    const auto c = confusion(p, g);
    const double d = (c.tp + c.fp) * (c.tp + c.fn) * (c.tn + c.fp) * (c.tn + c.fn);
    return d > 0 ? (c.tp * c.tn - c.fp * c.fn) / std::sqrt(d) : 0.0;
}

std::optional<double> pearson(const std::vector<double>& x, const std::vector<double>& y) {
    const size_t n = x.size();
    if (n < 2 || y.size() != n) return std::nullopt;
    const double mx = std::accumulate(x.begin(), x.end(), 0.0) / static_cast<double>(n);
    const double my = std::accumulate(y.begin(), y.end(), 0.0) / static_cast<double>(n);
    double sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < n; ++i) {
        sxy += (x[i] - mx) * (y[i] - my);
        sxx += (x[i] - mx) * (x[i] - mx);
        syy += (y[i] - my) * (y[i] - my);
    }
    if (sxx == 0 || syy == 0) return std::nullopt;
    return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

std::vector<double> average_ranks(const std::vector<double>& x) {
    std::vector<size_t> order(x.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
    std::vector<double> r(x.size());
    for (size_t i = 0; i < order.size();) {
        size_t j = i;
        while (j + 1 < order.size() && x[order[j + 1]] == x[order[i]]) ++j;
        const double avg = (static_cast<double>(i) + static_cast<double>(j)) / 2.0 + 1.0;
        for (size_t k = i; k <= j; ++k) r[order[k]] = avg;
        i = j + 1;
    }
    return r;
}

std::optional<double> spearman(const std::vector<double>& x, const std::vector<double>& y) {
    return pearson(average_ranks(x), average_ranks(y));
}

std::string main_metric(const Task& t) {
    if (t.name == "cola") return "mcc";
    if (t.name == "stsb") return "corr_mean";
    return "accuracy";
}

nlohmann::json metrics(const Task& t, const std::vector<double>& pred, const std::vector<double>& gold) {
    if (pred.size() != gold.size()) throw Error("predictions and labels differ in number");
    if (pred.empty()) throw Error("no predictions to score");
    nlohmann::json j;
    j["task"] = t.name;
    j["n"] = pred.size();
    if (t.regression()) {
        auto opt = [](const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
        const auto p = pearson(pred, gold), s = spearman(pred, gold);
        j["pearson"] = opt(p);
        j["spearman"] = opt(s);
        j["corr_mean"] = p && s ? nlohmann::json((*p + *s) / 2) : nlohmann::json(nullptr);
        return j;
    }
    std::vector<int64_t> p(pred.size()), g(gold.size());
    for (size_t i = 0; i < pred.size(); ++i) p[i] = std::llround(pred[i]), g[i] = std::llround(gold[i]);
    j["accuracy"] = accuracy(p, g);
    if (t.name == "mrpc" || t.name == "qqp") j["f1"] = f1_binary(p, g);
    if (t.name == "cola") j["mcc"] = matthews(p, g);
    return j;
}

nlohmann::json score_predictions_file(const Task& t, const std::string& path, io::OnBadRecord on_bad_record) {
    if (!std::filesystem::is_regular_file(path)) throw Error("no such predictions file", {path});
    std::istringstream in(io::read_file(path));
    std::string line;
    int64_t number = 0;
    std::vector<double> pred, gold;
    io::BadRecords bad(path, on_bad_record);
    while (std::getline(in, line)) {
        ++number;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        try {
            const nlohmann::json r = io::parse_json(line, "");
            for (const char* k : {"prediction", "label"})
                if (!r.is_object() || !r.contains(k)) throw Error(std::string("missing field '") + k + "'", {"", k});
            const double p = parse_label(t, r["prediction"]), g = parse_label(t, r["label"]);
            pred.push_back(p);
            gold.push_back(g);
        } catch (const Error& e) {
            bad.add(e, static_cast<long>(number));
        }
    }
    if (pred.empty()) bad.fail_empty("no predictions in the file");
    bad.report();
    auto m = metrics(t, pred, gold);
    m["skipped"] = bad.count();
    return m;
}

}  // namespace hra::glue
