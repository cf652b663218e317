// Reading JSON files with errors that name the file.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace hra::io {

// The parsed file; hra::Error ("invalid JSON: ...") naming `path` otherwise.
nlohmann::json read_json_file(const std::string& path);

}  // namespace hra::io
