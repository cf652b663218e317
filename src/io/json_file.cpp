#include "io/json_file.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"

namespace hra::io {

namespace {

// The deepest nesting of [ and { outside strings, stopping early past `limit`
// (a linear scan, before the parser allocates anything).
int nesting_depth(const std::string& text, int limit) {
    int depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
            if (deepest > limit) break;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return deepest;
}

}  // namespace

void check_json_depth(const std::string& text, const std::string& source, long line) {
    if (nesting_depth(text, kMaxJsonDepth) > kMaxJsonDepth)
        throw Error("invalid JSON: nested deeper than " + std::to_string(kMaxJsonDepth) + " levels", {source, "", line});
}

nlohmann::json parse_json(const std::string& text, const std::string& source, long line) {
    check_json_depth(text, source, line);
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("invalid JSON: ") + e.what(), {source, "", line});
    }
}

nlohmann::json read_json_file(const std::string& path) { return parse_json(read_file(path), path); }

std::string file_in_folder(const std::string& path, const std::string& name) {
    std::string file = path;
    if (std::filesystem::is_directory(path)) file = (std::filesystem::path(path) / name).string();
    if (!std::filesystem::is_regular_file(file)) throw Error("missing " + name, {path});
    return file;
}

}  // namespace hra::io
