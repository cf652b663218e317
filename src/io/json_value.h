// Typed config values: a value of the wrong type, a fraction or an out-of-range
// number where an integer is expected is an hra::Error naming the file and the
// key (nlohmann's own conversion truncates 8.5 to 8, and turning 1e60 into an
// int64 is undefined behaviour).
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace hra::io {

template <class T>
struct is_vector : std::false_type {};
template <class U, class A>
struct is_vector<std::vector<U, A>> : std::true_type {};

template <class T>
T json_get(const nlohmann::json& v, const char* key, const std::string& source) {
    if constexpr (is_vector<T>::value) {
        if (!v.is_array()) throw Error("expected a list, got " + v.dump(), {source, key});
        T out;
        for (const auto& e : v) out.push_back(json_get<typename T::value_type>(e, key, source));
        return out;
    } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
        if (v.is_number_float()) {
            const double d = v.get<double>();
            // Integral values only, and within T (the bounds as doubles: 2^63 is exact, and < excludes it).
            if (!std::isfinite(d) || d != std::floor(d) ||
                d < static_cast<double>(std::numeric_limits<T>::min()) ||
                !(d < std::ldexp(1.0, std::numeric_limits<T>::digits)))
                throw Error("expected an integer, got " + v.dump(), {source, key});
            return static_cast<T>(d);
        }
        if (v.is_number_integer()) {
            // Signed and unsigned JSON integers, checked against T's range.
            const bool negative = v.is_number_unsigned() ? false : v.get<int64_t>() < 0;
            if (negative ? (std::is_unsigned_v<T> || v.get<int64_t>() < static_cast<int64_t>(std::numeric_limits<T>::min()))
                         : v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max()))
                throw Error("integer out of range: " + v.dump(), {source, key});
            return negative ? static_cast<T>(v.get<int64_t>()) : static_cast<T>(v.get<uint64_t>());
        }
    }
    try {
        return v.get<T>();
    } catch (const nlohmann::json::exception& e) {
        throw Error(std::string("wrong type: ") + e.what(), {source, key});
    }
}

template <class T>
T json_value_or(const nlohmann::json& j, const char* key, T fallback, const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) return fallback;
    return json_get<T>(j[key], key, source);
}

}  // namespace hra::io
