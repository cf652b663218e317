#include "eval/gsm8k.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/error.h"
#include "eval/python_num.h"
#include "text/regex.h"
#include "text/unicode.h"

namespace hra::eval {

Protocol parse_protocol(const std::string& name) {
    if (name == "seed") return Protocol::Seed;
    if (name == "strict") return Protocol::Strict;
    throw Error("unknown protocol '" + name + "' (expected seed or strict)");
}

const char* protocol_name(Protocol p) { return p == Protocol::Seed ? "seed" : "strict"; }

namespace {

std::string remove_all(std::string s, char c) {
    s.erase(std::remove(s.begin(), s.end(), c), s.end());
    return s;
}

// Digits (any Unicode decimal digit) to ASCII.
std::string ascii_digits(const std::string& s) {
    std::string out;
    for (char32_t c : to_u32(s)) {
        const int d = unicode_digit(c);
        if (d >= 0) out.push_back(static_cast<char>('0' + d));
        else out += to_utf8(std::u32string(1, c));
    }
    return out;
}

// Python: is_number(s) in gsm8k_inference.py (float(s), or unicodedata.numeric for one character).
bool seed_is_number(const std::string& s) {
    if (python_float(s)) return true;
    const auto u = to_u32(s);
    return u.size() == 1 && unicode_digit(u[0]) >= 0;
}

// Exact rational of a decimal text "[-+]d[.d][/d[.d]]" (digits ASCII, no separators).
std::optional<Rational> rational_of(const std::string& text) {
    const size_t slash = text.find('/');
    auto decimal = [](const std::string& s, long double& num, long double& den) {
        size_t i = 0;
        bool neg = false;
        if (i < s.size() && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
        num = 0, den = 1;
        bool any = false, dot = false;
        for (; i < s.size(); ++i) {
            if (s[i] == '.') {
                if (dot) return false;
                dot = true;
                continue;
            }
            if (s[i] < '0' || s[i] > '9') return false;
            num = num * 10 + (s[i] - '0');
            if (dot) den *= 10;
            any = true;
        }
        if (neg) num = -num;
        return any;
    };
    Rational r;
    r.text = text;
    if (slash == std::string::npos) {
        if (!decimal(text, r.num, r.den)) return std::nullopt;
        return r;
    }
    long double n1, d1, n2, d2;
    if (!decimal(text.substr(0, slash), n1, d1) || !decimal(text.substr(slash + 1), n2, d2) || n2 == 0) return std::nullopt;
    r.num = n1 * d2;
    r.den = d1 * n2;
    if (r.den < 0) r.num = -r.num, r.den = -r.den;
    return r;
}

bool same(const Rational& a, const Rational& b) { return a.num * b.den == b.num * a.den; }

}  // namespace

std::optional<Rational> gsm8k_gold(const std::string& reference) {
    const size_t m = reference.find("#### ");
    std::string ans = m == std::string::npos ? reference : reference.substr(m + 5);
    const size_t nl = ans.find('\n');  // split('#### ')[1] holds the rest of the text
    if (nl != std::string::npos) ans = ans.substr(0, nl);
    ans = python_strip(remove_all(ascii_digits(ans), ','));
    if (!ans.empty() && ans.compare(0, 3, "\xE2\x88\x92") == 0) ans = "-" + ans.substr(3);
    return rational_of(ans);
}

// Completions are read as text: bytes that are not UTF-8 become U+FFFD (one per byte, where
// Python's errors="replace" puts one per bad sequence; numbers are found the same), and the
// regular expressions only ever see valid UTF-8.
std::optional<double> gsm8k_seed_extract(const std::string& raw) {
    const std::string completion = text::sanitize_utf8(raw);
    const std::string marker = "The answer is: ";
    const size_t at = completion.rfind(marker);
    if (at == std::string::npos) return std::nullopt;
    const std::string tail = python_strip(completion.substr(at + marker.size()));
    static const text::Regex number(R"([\-+]?\d*[\.,/]?\d+)");
    const auto found = number.find_all(tail);
    if (found.empty()) return std::nullopt;
    const std::string match = tail.substr(found[0].first, found[0].second - found[0].first);
    const size_t slash = match.find('/');
    if (slash != std::string::npos) {
        const std::string numerator = match.substr(0, slash), denominator = match.substr(slash + 1);
        if (!seed_is_number(denominator) || !seed_is_number(numerator)) return std::nullopt;
        if (denominator == "0") {
            auto v = python_float(remove_all(numerator, ','));
            if (!v) return std::nullopt;
            return python_round(*v);
        }
        // Fraction(text): an all-zero denominator raised ZeroDivisionError in the seed.
        auto num = python_float(ascii_digits(numerator)), den = python_float(ascii_digits(denominator));
        if (!num || !den || *den == 0) return std::nullopt;
        return python_round(*num / *den);
    }
    auto v = python_float(remove_all(match, ','));
    if (!v || std::isinf(*v)) return std::nullopt;
    return python_round(*v);
}

std::optional<Rational> gsm8k_strict_extract(const std::string& raw) {
    const std::string completion = text::sanitize_utf8(raw);
    static const text::Regex marker(R"((?i)the\s+answer\s+is\s*:)");
    static const text::Regex hashes(R"(####)");
    static const text::Regex number(
        R"((?:[-+]|\x{2212})?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:/(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)?)");
    auto first_number = [&](const std::string& s, bool last) -> std::optional<Rational> {
        std::optional<Rational> out;
        for (const auto& [b, e] : number.find_all(s)) {
            std::string t = s.substr(b, e - b);
            std::string clean;
            for (char32_t c : to_u32(t)) {
                if (c == 0x2212) clean.push_back('-');
                else if (c == ',' || c == ' ' || c == '\t') continue;
                else if (unicode_digit(c) >= 0) clean.push_back(static_cast<char>('0' + unicode_digit(c)));
                else clean += to_utf8(std::u32string(1, c));
            }
            auto r = rational_of(clean);
            if (!r) continue;  // a bare sign or dot
            r->text = python_strip(t);
            out = r;
            if (!last) return out;
        }
        return out;
    };
    auto after_last = [&](const text::Regex& re) -> std::optional<std::string> {
        const auto hits = re.find_all(completion);
        if (hits.empty()) return std::nullopt;
        return completion.substr(hits.back().second);
    };
    if (auto tail = after_last(marker)) return first_number(*tail, false);
    if (auto tail = after_last(hashes)) return first_number(*tail, false);
    return first_number(completion, true);
}

Gsm8kScore gsm8k_score(const std::string& completion, const std::string& reference, Protocol protocol) {
    Gsm8kScore s;
    auto gold = gsm8k_gold(reference);
    if (!gold) throw Error("reference has no numeric answer: '" + reference.substr(0, 80) + "'");
    if (protocol == Protocol::Strict) {
        auto got = gsm8k_strict_extract(completion);
        if (!got) return s;
        s.extracted = got->text;
        s.correct = same(*got, *gold);
        return s;
    }
    auto got = gsm8k_seed_extract(completion);
    if (!got) return s;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.0f", *got);
    s.extracted = buf;
    const double ref = static_cast<double>(gold->num / gold->den);
    // float(y_pred) == float(answer) or math_equal(y_pred, answer)
    if (*got == ref) {
        s.correct = true;
    } else {
        for (double item : {ref / 100, ref, ref * 100})
            if (isclose(item, *got, 1e-4)) s.correct = true;
    }
    return s;
}

}  // namespace hra::eval
