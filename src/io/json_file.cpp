#include "io/json_file.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"

namespace hra::io {

nlohmann::json parse_json(const std::string& text, const std::string& source) {
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("invalid JSON: ") + e.what(), {source});
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
