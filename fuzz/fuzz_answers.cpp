// Answer parsers of the GSM8K and MATH evaluations: a completion and a reference (split at
// the first NUL byte) through the seed and strict GSM8K extractors and MATH's equivalence
// (\boxed{...} extraction, is_equiv in both protocols, numeric and symbolic comparison).
#include <string>

#include "eval/gsm8k.h"
#include "eval/math_answer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string in(reinterpret_cast<const char*>(data), size);
    const size_t nul = in.find('\0');
    const std::string completion = in.substr(0, nul), reference = nul == std::string::npos ? "" : in.substr(nul + 1);
    for (auto p : {hra::eval::Protocol::Seed, hra::eval::Protocol::Strict})
        hra::fuzz::expect_named_errors([&] { (void)hra::eval::gsm8k_score(completion, reference, p); });
    hra::fuzz::expect_named_errors([&] { (void)hra::eval::math_equal(completion, reference); });
    // strip_string raises where the seed's Python does (by contract); is_equiv is the caller that catches.
    for (auto p : {hra::eval::Protocol::Seed, hra::eval::Protocol::Strict})
        hra::fuzz::expect_named_errors([&] { (void)hra::eval::is_equiv(completion, reference, p); });
    hra::fuzz::expect_named_errors([&] {
        if (auto boxed = hra::eval::last_boxed_only_string(completion)) (void)hra::eval::remove_boxed(*boxed);
        (void)hra::eval::math_extract(completion);
    });
    return 0;
}
