#include "eval/python_num.h"

#include <cfenv>
#include <cmath>
#include <cstdlib>

#include <unicode/uchar.h>

#include "text/unicode.h"

namespace hra::eval {

std::u32string to_u32(const std::string& s) {
    std::u32string out;
    for (size_t i = 0; i < s.size();) {
        const size_t n = text::utf8_sequence_length(s, i);
        if (!n) {  // stray byte: keep it as a code point of its own
            out.push_back(static_cast<unsigned char>(s[i]));
            ++i;
            continue;
        }
        const auto c = static_cast<unsigned char>(s[i]);
        char32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
        for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
        out.push_back(cp);
        i += n;
    }
    return out;
}

std::string to_utf8(const std::u32string& s) {
    std::string out;
    for (char32_t c : s) out += text::utf8_encode(static_cast<uint32_t>(c));
    return out;
}

int unicode_digit(char32_t c) {
    if (c >= '0' && c <= '9') return static_cast<int>(c - '0');
    if (c < 0x80) return -1;
    if (u_charType(static_cast<UChar32>(c)) != U_DECIMAL_DIGIT_NUMBER) return -1;
    return u_charDigitValue(static_cast<UChar32>(c));
}

namespace {

bool is_py_space(char32_t c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

std::u32string strip32(const std::u32string& s) {
    size_t b = 0, e = s.size();
    while (b < e && is_py_space(s[b])) ++b;
    while (e > b && is_py_space(s[e - 1])) --e;
    return s.substr(b, e - b);
}

// Digits with single underscores between them, converted to ASCII; empty on failure.
std::string digit_run(const std::u32string& s, size_t& i) {
    std::string out;
    bool last_underscore = false;
    while (i < s.size()) {
        const int d = unicode_digit(s[i]);
        if (d >= 0) {
            out.push_back(static_cast<char>('0' + d));
            last_underscore = false;
            ++i;
        } else if (s[i] == '_' && !out.empty() && !last_underscore && i + 1 < s.size() && unicode_digit(s[i + 1]) >= 0) {
            last_underscore = true;
            ++i;
        } else {
            break;
        }
    }
    return out;
}

}  // namespace

std::optional<double> python_float(const std::string& text) {
    const std::u32string s = strip32(to_u32(text));
    size_t i = 0;
    std::string ascii;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ascii.push_back(static_cast<char>(s[i++]));
    // inf / infinity / nan
    std::string word;
    for (size_t k = i; k < s.size(); ++k) {
        if (s[k] >= 0x80) {
            word.clear();
            break;
        }
        word.push_back(static_cast<char>(std::tolower(static_cast<int>(s[k]))));
    }
    if (word == "inf" || word == "infinity") return ascii == "-" ? -INFINITY : INFINITY;
    if (word == "nan") return NAN;
    const std::string whole = digit_run(s, i);
    ascii += whole;
    bool have_digits = !whole.empty();
    if (i < s.size() && s[i] == '.') {
        ++i;
        const std::string frac = digit_run(s, i);
        ascii += "." + frac;
        have_digits = have_digits || !frac.empty();
    }
    if (!have_digits) return std::nullopt;
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        ascii.push_back('e');
        if (i < s.size() && (s[i] == '+' || s[i] == '-')) ascii.push_back(static_cast<char>(s[i++]));
        const std::string exp = digit_run(s, i);
        if (exp.empty()) return std::nullopt;
        ascii += exp;
    }
    if (i != s.size()) return std::nullopt;
    return std::strtod(ascii.c_str(), nullptr);
}

std::optional<std::string> python_int_text(const std::string& text) {
    const std::u32string s = strip32(to_u32(text));
    size_t i = 0;
    bool negative = false;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) negative = s[i++] == '-';
    std::string digits = digit_run(s, i);
    if (digits.empty() || i != s.size()) return std::nullopt;
    const size_t nz = digits.find_first_not_of('0');
    digits = nz == std::string::npos ? "0" : digits.substr(nz);
    return (negative && digits != "0" ? "-" : "") + digits;
}

std::string python_strip(const std::string& s) { return to_utf8(strip32(to_u32(s))); }

std::string python_strip_chars(const std::string& s, const std::string& chars) {
    size_t b = 0, e = s.size();
    while (b < e && chars.find(s[b]) != std::string::npos) ++b;
    while (e > b && chars.find(s[e - 1]) != std::string::npos) --e;
    return s.substr(b, e - b);
}

bool isclose(double a, double b, double rel_tol) {
    if (a == b) return true;
    if (std::isinf(a) || std::isinf(b)) return false;
    const double diff = std::fabs(b - a);
    return diff <= std::fabs(rel_tol * b) || diff <= std::fabs(rel_tol * a);
}

double python_round(double x) {
    const int mode = std::fegetround();
    std::fesetround(FE_TONEAREST);
    const double r = std::nearbyint(x);
    std::fesetround(mode);
    return r;
}

}  // namespace hra::eval
