// A typed config value with a default: absent or null keys give `fallback`,
// a value of the wrong type is an hra::Error naming the file and the key.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace hra::io {

template <class T>
T json_value_or(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    try {
        return j[key].get<T>();
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("wrong type: ") + e.what(), {source, key});
    }
}

}  // namespace hra::io
