#include "io/json_file.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/atomic_file.h"

namespace hra::io {

nlohmann::json read_json_file(const std::string& path) {
    const std::string text = read_file(path);
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("invalid JSON: ") + e.what(), {path});
    }
}

}  // namespace hra::io
