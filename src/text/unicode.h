// UTF-8 helpers shared by the tokenizers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hra::text {

// Length of the UTF-8 sequence starting at s[i] if it is a valid, complete
// sequence, else 0.
size_t utf8_sequence_length(const std::string& s, size_t i);
// Throws hra::Error ("not valid UTF-8 at byte N") unless s is valid UTF-8.
void require_utf8(const std::string& s, const char* what);
// Splits valid UTF-8 into code points (each as its UTF-8 string).
std::vector<std::string> utf8_chars(const std::string& s);
// The UTF-8 of one code point.
std::string utf8_encode(uint32_t cp);
// True when s ends in the middle of a UTF-8 sequence.
bool ends_with_partial_utf8(const std::string& s);
// Bytes that are not valid UTF-8 replaced by U+FFFD, one per maximal invalid run start.
std::string sanitize_utf8(const std::string& s);

// GPT-2's reversible byte <-> printable code point map used by byte-level BPE.
const std::vector<std::string>& byte_to_unicode();       // 256 entries
int byte_from_unicode(const std::string& ch);            // -1 if not in the map

// Unicode normalisation through ICU: form is "NFC", "NFD", "NFKC" or "NFKD".
std::string normalize_unicode(const std::string& s, const std::string& form);
// Full Unicode lowercase mapping (root locale), as Python's str.lower().
std::string lowercase_unicode(const std::string& s);

}  // namespace hra::text
