#include "text/unicode.h"

#include <map>
#include <mutex>

#include <unicode/normalizer2.h>
#include <unicode/locid.h>
#include <unicode/unistr.h>

#include "common/error.h"

namespace hra::text {

size_t utf8_sequence_length(const std::string& s, size_t i) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) {
        n = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, cp = c & 0x07;
    } else {
        return 0;
    }
    if (i + n > s.size()) return 0;
    for (size_t k = 1; k < n; ++k) {
        const auto cc = static_cast<unsigned char>(s[i + k]);
        if ((cc & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (cc & 0x3F);
    }
    // Reject overlong forms, surrogates and code points above U+10FFFF.
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

void require_utf8(const std::string& s, const char* what) {
    for (size_t i = 0; i < s.size();) {
        const size_t n = utf8_sequence_length(s, i);
        if (!n) throw Error(std::string(what) + " is not valid UTF-8 (at byte " + std::to_string(i) + ")");
        i += n;
    }
}

std::vector<std::string> utf8_chars(const std::string& s) {
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
        size_t n = utf8_sequence_length(s, i);
        if (!n) n = 1;  // callers validate first; keep going on stray bytes
        out.push_back(s.substr(i, n));
        i += n;
    }
    return out;
}

std::string utf8_encode(uint32_t cp) {
    std::string out;
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    return out;
}

bool ends_with_partial_utf8(const std::string& s) {
    // Look back at most 3 bytes for a lead byte whose sequence is cut off.
    for (size_t back = 1; back <= 3 && back <= s.size(); ++back) {
        const auto c = static_cast<unsigned char>(s[s.size() - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte
        size_t need = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
        return need > back;
    }
    return false;
}

std::string sanitize_utf8(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size();) {
        const size_t n = utf8_sequence_length(s, i);
        if (n) {
            out.append(s, i, n);
            i += n;
        } else {
            out += "\xEF\xBF\xBD";
            ++i;
        }
    }
    return out;
}

const std::vector<std::string>& byte_to_unicode() {
    static const std::vector<std::string> table = [] {
        // Printable bytes map to themselves; the others to 256, 257, ... in byte order.
        std::vector<std::string> t(256);
        uint32_t next = 256;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            t[b] = utf8_encode(printable ? static_cast<uint32_t>(b) : next++);
        }
        return t;
    }();
    return table;
}

int byte_from_unicode(const std::string& ch) {
    static const std::map<std::string, int> reverse = [] {
        std::map<std::string, int> r;
        for (int b = 0; b < 256; ++b) r[byte_to_unicode()[b]] = b;
        return r;
    }();
    auto it = reverse.find(ch);
    return it == reverse.end() ? -1 : it->second;
}

std::string normalize_unicode(const std::string& s, const std::string& form) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = nullptr;
    if (form == "NFC") n = icu::Normalizer2::getNFCInstance(status);
    else if (form == "NFD") n = icu::Normalizer2::getNFDInstance(status);
    else if (form == "NFKC") n = icu::Normalizer2::getNFKCInstance(status);
    else if (form == "NFKD") n = icu::Normalizer2::getNFKDInstance(status);
    else throw Error("unknown Unicode normalisation form '" + form + "'");
    if (U_FAILURE(status) || !n) throw Error("ICU could not load the " + form + " normaliser");
    icu::UnicodeString out = n->normalize(icu::UnicodeString::fromUTF8(s), status);
    if (U_FAILURE(status)) throw Error("ICU " + form + " normalisation failed");
    std::string utf8;
    out.toUTF8String(utf8);
    return utf8;
}

std::string lowercase_unicode(const std::string& s) {
    icu::UnicodeString u = icu::UnicodeString::fromUTF8(s);
    u.toLower(icu::Locale::getRoot());
    std::string utf8;
    u.toUTF8String(utf8);
    return utf8;
}

}  // namespace hra::text
