// GSM8K answer extraction and scoring, with two protocols:
//  seed:   bug for bug the HRA repository's gsm8k_inference.py
//          (extract_answer_number) and grader.py (math_equal), which measured
//          the paper's numbers;
//  strict: the whole final number, compared exactly.
// Differences (seed vs strict):
//  - marker: the exact, case-sensitive "The answer is: " (last occurrence) vs
//    "The answer is:" with any spacing/case, else "####", else the last number;
//  - number: at most one ',', '.' or '/' separator, so "1,450,000" reads 1450,
//    vs whole numbers with thousands separators, sign (also U+2212), decimals
//    and fractions;
//  - comparison: rounded half-to-even to an integer, equal or within 1e-4
//    relative, also accepting 100x and x/100 of the gold answer, vs exact
//    rational equality.
#pragma once

#include <optional>
#include <string>

namespace hra::eval {

enum class Protocol { Seed, Strict };
Protocol parse_protocol(const std::string& name);
const char* protocol_name(Protocol p);

// Exact rational number p/q (q > 0), from decimal text.
struct Rational {
    long double num = 0;  // integers up to 2^64 exactly
    long double den = 1;
    std::string text;     // as written in the source
};

// The gold answer of a GSM8K reference: the text after "#### " (commas
// removed), or the whole field when it is a bare number.
std::optional<Rational> gsm8k_gold(const std::string& reference);

// seed: extract_answer_number(completion); nullopt where it returns None.
// A zero denominator written "00" (which made the seed raise) gives nullopt.
std::optional<double> gsm8k_seed_extract(const std::string& completion);
// strict extraction.
std::optional<Rational> gsm8k_strict_extract(const std::string& completion);

struct Gsm8kScore {
    bool correct = false;
    std::string extracted;  // the extracted answer as text ("" when none)
};
Gsm8kScore gsm8k_score(const std::string& completion, const std::string& reference, Protocol protocol);

}  // namespace hra::eval
