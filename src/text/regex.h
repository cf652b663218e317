// PCRE2 regular expressions with UTF and Unicode properties (the
// pre-tokenizer patterns of GPT-2, Llama 3 and Qwen2 use \p{L}, \p{N}, (?!\S)).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace hra::text {

class Regex {
public:
    // hra::Error (naming the pattern and offset) when the pattern does not compile.
    explicit Regex(const std::string& pattern);
    ~Regex();
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Byte ranges [begin, end) of the successive non-overlapping matches; hra::Error when the
    // subject is not valid UTF-8.
    std::vector<std::pair<size_t, size_t>> find_all(const std::string& subject) const;
    const std::string& pattern() const { return pattern_; }

private:
    std::string pattern_;
    void* code_ = nullptr;  // pcre2_code_8
};

}  // namespace hra::text
