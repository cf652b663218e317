#include "text/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/error.h"
#include "text/unicode.h"

namespace hra::text {

Regex::Regex(const std::string& pattern) : pattern_(pattern) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        throw Error("invalid regular expression '" + pattern + "' at offset " + std::to_string(offset) + ": " +
                    reinterpret_cast<const char*>(msg));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // best effort; falls back to the interpreter
    code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

std::vector<std::pair<size_t, size_t>> Regex::find_all(const std::string& subject) const {
    // Matching runs with PCRE2_NO_UTF_CHECK (one check here instead of one per match): on
    // invalid UTF-8 that is undefined behaviour (the JIT read out of bounds, found by fuzz_answers).
    require_utf8(subject, "text for a regular expression");
    auto* code = static_cast<pcre2_code*>(code_);
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
    std::vector<std::pair<size_t, size_t>> out;
    size_t start = 0;
    while (start <= subject.size()) {
        const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start,
                                   PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            pcre2_match_data_free(md);
            throw Error("regular expression '" + pattern_ + "' failed on the input (PCRE2 error " + std::to_string(rc) + ")");
        }
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        const size_t b = ov[0], e = ov[1];
        if (e > b) {
            out.emplace_back(b, e);
            start = e;
        } else {
            // Empty match: step over one character.
            if (b >= subject.size()) break;
            const size_t n = utf8_sequence_length(subject, b);
            start = b + (n ? n : 1);
        }
    }
    pcre2_match_data_free(md);
    return out;
}

}  // namespace hra::text
