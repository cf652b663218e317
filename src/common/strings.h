// Small string helpers shared by every layer (C++17 has no starts_with/ends_with).
#pragma once

#include <string>
#include <vector>

namespace hra {

inline bool starts_with(const std::string& s, const std::string& prefix) {
    return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Every occurrence of `from` (non-empty) replaced by `to`, left to right; the
// replacement text is not searched again.
inline std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    std::string out;
    size_t pos = 0;
    for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) out += s.substr(pos, hit - pos) + to;
    return out + s.substr(pos);
}

// "a, b, c", or the first `most` then ", ... (N in all)".
inline std::string join_names(const std::vector<std::string>& names, size_t most = static_cast<size_t>(-1)) {
    std::string s;
    for (size_t i = 0; i < names.size() && i < most; ++i) s += (i ? ", " : "") + names[i];
    if (names.size() > most) s += ", ... (" + std::to_string(names.size()) + " in all)";
    return s;
}

}  // namespace hra
