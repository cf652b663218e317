// GSM8K and MATH scoring: the seed protocol against the seed's own Python
// code (tests/fixtures/eval), the strict protocol on hand-written cases and on
// every real GSM8K test answer, and the Python-number rules underneath.
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "eval/gsm8k.h"
#include "eval/math_answer.h"
#include "eval/python_num.h"
#include "io/atomic_file.h"
#include "text/regex.h"
#include "test_util.h"

using namespace hra::eval;

namespace {
using hra::test::fixture;
}  // namespace

TEST(PythonNumbers, FloatIntRoundIsclose) {
    EXPECT_EQ(*python_float(" 1_000.5 "), 1000.5);
    EXPECT_EQ(*python_float("\xD9\xA1\xD9\xA2"), 12.0);  // Arabic-Indic digits
    EXPECT_EQ(*python_float(".5"), 0.5);
    EXPECT_EQ(*python_float("1."), 1.0);
    EXPECT_TRUE(std::isinf(*python_float("-Infinity")));
    EXPECT_TRUE(std::isnan(*python_float("nan")));
    EXPECT_EQ(*python_float("1e5"), 1e5);
    for (const char* bad : {"", ".", "1__0", "_1", "1_", "1,0", "e5", "--1", "0x10"}) EXPECT_FALSE(python_float(bad)) << bad;
    EXPECT_EQ(*python_int_text("007"), "7");
    EXPECT_EQ(*python_int_text("-0"), "0");
    EXPECT_EQ(*python_int_text(" +1_2 "), "12");
    EXPECT_FALSE(python_int_text("1.0"));
    EXPECT_EQ(python_round(2.5), 2);
    EXPECT_EQ(python_round(3.5), 4);
    EXPECT_EQ(python_round(-2.5), -2);
    EXPECT_TRUE(isclose(100.0, 100.009, 1e-4));
    EXPECT_FALSE(isclose(100.0, 100.02, 1e-4));
    EXPECT_TRUE(isclose(INFINITY, INFINITY, 1e-4));
    EXPECT_FALSE(isclose(NAN, NAN, 1e-4));
}

TEST(Gsm8kSeed, MatchesTheSeedsPythonCode) {
    auto cases = nlohmann::json::parse(hra::io::read_file(fixture("eval/seed_cases.json")));
    int n = 0;
    for (const auto& c : cases["gsm8k"]) {
        const std::string completion = c["completion"].get<std::string>();
        auto got = gsm8k_seed_extract(completion);
        if (c["extracted"].is_null()) {
            EXPECT_FALSE(got.has_value()) << completion;  // None, or the seed raised
        } else {
            ASSERT_TRUE(got.has_value()) << completion;
            EXPECT_EQ(*got, std::stod(c["extracted"].get<std::string>())) << completion;
        }
        EXPECT_EQ(gsm8k_score(completion, "#### " + c["gold"].get<std::string>(), Protocol::Seed).correct,
                  c["correct"].get<bool>())
            << completion;
        ++n;
    }
    EXPECT_GE(n, 30);
}

TEST(Gsm8kSeed, HundredfoldAndToleranceRules) {
    EXPECT_TRUE(gsm8k_score("The answer is: 1800", "#### 18", Protocol::Seed).correct);
    EXPECT_TRUE(gsm8k_score("The answer is: 18", "#### 1,800", Protocol::Seed).correct);
    EXPECT_FALSE(gsm8k_score("The answer is: 1800", "#### 18", Protocol::Strict).correct);
    EXPECT_FALSE(gsm8k_score("The answer is: 19", "#### 18", Protocol::Seed).correct);
}

TEST(Gsm8kStrict, WholeNumbersExactly) {
    struct Case {
        const char* completion;
        const char* gold;
        bool correct;
        const char* extracted;
    };
    const Case cases[] = {
        {"The answer is: 1,450,000", "1450000", true, "1,450,000"},
        {"so 3 + 4 = 7.\nThe answer is:7", "7", true, "7"},
        {"THE ANSWER IS :  -12", "-12", true, "-12"},
        {"The answer is: \xE2\x88\x92" "12", "-12", true, "\xE2\x88\x92" "12"},
        {"The answer is: 2.5", "2", false, "2.5"},
        {"The answer is: 2.50", "2.5", true, "2.50"},
        {"The answer is: 3/4 of them", "0.75", true, "3/4"},
        {"The answer is: $18.", "18", true, "18"},
        {"She has 5 apples.\n#### 5", "5", true, "5"},
        {"First 12, then 30, finally 42 apples", "42", true, "42"},
        {"no number here", "3", false, ""},
        {"The answer is: 1,2,3", "123", false, "1"},
        {"The answer is: 1800", "18", false, "1800"},
    };
    for (const auto& c : cases) {
        auto s = gsm8k_score(c.completion, std::string("#### ") + c.gold, Protocol::Strict);
        EXPECT_EQ(s.correct, c.correct) << c.completion;
        EXPECT_EQ(s.extracted, c.extracted) << c.completion;
    }
}

// A completion with bytes that are not UTF-8 (a model can emit half a character) is scored as
// Python scores its decoded text (U+FFFD in their place); PCRE2 read out of bounds on it before
// (fuzz_answers found it), and regular expressions now refuse invalid UTF-8 by name.
TEST(Gsm8kStrict, InvalidUtf8InACompletion) {
    EXPECT_TRUE(gsm8k_score("so \xff\xfe 9 eggs. The answer is: 18 \xC3", "#### 18", Protocol::Strict).correct);
    EXPECT_TRUE(gsm8k_score("so \xff\xfe 9 eggs. The answer is: 18", "#### 18", Protocol::Seed).correct);
    EXPECT_THROW(hra::text::Regex("a").find_all("a\xff"), hra::Error);
}

TEST(Gsm8kRealAnswers, EveryTestSolutionScoresItselfUnderStrict) {
    std::ifstream in(fixture("gsm8k/test.jsonl"));
    std::string line;
    int n = 0, seed_ok = 0;
    while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line);
        const std::string answer = j["answer"].get<std::string>();
        // The reference solution itself, ending in "#### N".
        EXPECT_TRUE(gsm8k_score(answer, answer, Protocol::Strict).correct) << answer;
        // "The answer is: N" with N as the dataset writes it: the seed reads at most one separator.
        const std::string gold_text = answer.substr(answer.find("#### ") + 5);
        seed_ok += gsm8k_score("The answer is: " + gold_text, answer, Protocol::Seed).correct;
        ++n;
    }
    EXPECT_EQ(n, 1319);
    // Only golds written with two or more thousands separators fail under seed: one in the test set.
    EXPECT_EQ(seed_ok, 1318);
}

TEST(MathSeed, MatchesTheSeedsPythonCode) {
    auto cases = nlohmann::json::parse(hra::io::read_file(fixture("eval/seed_cases.json")));
    int n = 0;
    for (const auto& c : cases["math"]) {
        const std::string p = c["prediction"].get<std::string>(), r = c["reference"].get<std::string>();
        EXPECT_EQ(is_equiv(p, r, Protocol::Seed), c["seed"].get<bool>()) << p << " vs " << r;
        ++n;
    }
    EXPECT_GE(n, 35);
}

TEST(MathEquiv, SeedExceptBranchVsStrict) {
    // strip_string raises (int("x") in fix_a_slash_b; "\sqrt" at the end): the seed then accepts anything.
    EXPECT_TRUE(is_equiv("x/2", "7", Protocol::Seed));
    EXPECT_FALSE(is_equiv("x/2", "7", Protocol::Strict));
    EXPECT_TRUE(is_equiv("x/2", "x/2", Protocol::Strict));
    EXPECT_TRUE(is_equiv("\\sqrt", "2", Protocol::Seed));
    EXPECT_FALSE(is_equiv("\\sqrt", "2", Protocol::Strict));
}

TEST(MathEquiv, SymbolicOnlyForPythonSyntax) {
    EXPECT_TRUE(math_equal("x+1", "1+x"));
    EXPECT_TRUE(math_equal("x**2-1", "(x-1)*(x+1)"));
    EXPECT_TRUE(math_equal("sqrt(8)", "2*sqrt(2)"));
    EXPECT_TRUE(math_equal("2*pi", "pi+pi"));
    EXPECT_TRUE(math_equal("1/3", "0.33333"));  // numeric closeness, 1e-3
    EXPECT_FALSE(math_equal("x+2", "x+1"));
    EXPECT_FALSE(math_equal("\\frac{1}{3}", "1/3"));  // LaTeX is never parsed
    EXPECT_FALSE(math_equal("2x", "x*2"));           // no implicit multiplication in Python syntax
    // Exact powers too large to compute are not answers (fuzz_answers hung on 6 ** -3 ** 91); ordinary ones still are.
    EXPECT_FALSE(math_equal("6 ** -3 ** 91", "0"));
    // ... and float or symbolic exponents too large (a float 33^(37^6) took 1.6 GB), and exp/sin of huge arguments.
    EXPECT_FALSE(math_equal("1.61**-33**37**6.", "0"));
    EXPECT_FALSE(math_equal("2.0**(pi*10**6)", "0"));
    EXPECT_FALSE(math_equal("sin(10.0**99999)", "0"));
    EXPECT_FALSE(math_equal("(2**99999)**99999.", "0"));  // an exact base under a float exponent
    EXPECT_FALSE(math_equal("(x+1)**100000", "0"));        // expand() would make 100,001 terms
    EXPECT_FALSE(math_equal("((x+1)**100)**100", "0"));    // GiNaC multiplies the exponents
    EXPECT_TRUE(math_equal("(x+1)**2", "x**2+2*x+1"));
    EXPECT_TRUE(math_equal("sqrt(2)**2", "2"));
    EXPECT_TRUE(math_equal("2**10", "1024"));
    EXPECT_TRUE(math_equal("2.0**0.5", "sqrt(2)"));
    EXPECT_TRUE(math_equal("exp(log(3))", "3"));
    EXPECT_TRUE(math_equal("2**100", "1267650600228229401496703205376"));
}

TEST(MathExtraction, BoxedReferenceAndMarker) {
    EXPECT_EQ(*last_boxed_only_string("so \\boxed{1} and \\boxed{\\frac{1}{2}}."), "\\boxed{\\frac{1}{2}}");
    EXPECT_EQ(*remove_boxed("\\boxed{\\frac{1}{2}}"), "\\frac{1}{2}");
    EXPECT_FALSE(remove_boxed("\\fbox{2}"));
    EXPECT_FALSE(last_boxed_only_string("no box"));
    EXPECT_FALSE(last_boxed_only_string("\\boxed{open"));
    EXPECT_EQ(*math_extract("work...\nThe answer is: \\frac{1}{2}.\nMore text"), "\\frac{1}{2}");
    EXPECT_EQ(*math_extract("The answer is: 5. "), "5");
    EXPECT_FALSE(math_extract("the answer is 5"));
    auto s = math_score("The answer is: 0.5", "Thus $x = \\boxed{\\frac12}$.", Protocol::Strict);
    EXPECT_TRUE(s.correct);
    EXPECT_EQ(s.reference, "\\frac12");
    EXPECT_FALSE(math_score("The answer is: 3", "no boxed answer", Protocol::Seed).correct);
}
