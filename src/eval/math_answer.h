// MATH answer extraction and equivalence, ported from the HRA repository's
// llama/inference/{MATH_inference,util,grader}.py (Hendrycks' math_equivalence
// plus the CRITIC grader).
//
// Symbolic equality: the seed tried sympy's parse_latex (absent from its
// environment, so LaTeX never parsed) and then parse_expr (Python syntax).
// hra parses the Python-syntax subset (numbers, names, + - * / **,
// parentheses, sqrt/exp/log/sin/cos/tan, pi) with GiNaC and tests a − b == 0
// after normalisation, then numeric closeness (1e-3). Python constructs
// outside that subset are not compared symbolically.
#pragma once

#include <optional>
#include <string>

#include "eval/gsm8k.h"

namespace hra::eval {

// The last "\boxed{...}" (or "\fbox{...}") of a solution, braces balanced; nullopt if none.
std::optional<std::string> last_boxed_only_string(const std::string& s);
// "\boxed{X}" -> X; nullopt when not of that form.
std::optional<std::string> remove_boxed(const std::string& s);

// util.strip_string; throws (like the Python raises) where the seed's code would.
std::string strip_string(const std::string& s);
// grader.math_equal(prediction, reference) on strings.
bool math_equal(const std::string& prediction, const std::string& reference);
// util.is_equiv(prediction, reference). seed: the original except-branch
// (math_equal(prediction, prediction), true for any non-empty prediction);
// strict: math_equal(prediction, reference) there.
bool is_equiv(const std::string& prediction, const std::string& reference, Protocol protocol);

// The prediction: text after the last "The answer is: ", cut at the first
// ".\n", stripped, one trailing "." dropped; nullopt without the marker.
std::optional<std::string> math_extract(const std::string& completion);

struct MathScore {
    bool correct = false;
    std::string extracted, reference;
};
// `solution`: the reference solution (its last \boxed{} is the answer).
MathScore math_score(const std::string& completion, const std::string& solution, Protocol protocol);

}  // namespace hra::eval
