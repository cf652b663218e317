// Reading JSON files with errors that name the file.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace hra::io {

// The parsed text; hra::Error ("invalid JSON: ...") naming `source` otherwise.
nlohmann::json parse_json(const std::string& text, const std::string& source);
// The parsed file; hra::Error ("invalid JSON: ...") naming `path` otherwise.
nlohmann::json read_json_file(const std::string& path);

// `path` itself when it is a file, else `path`/`name` (e.g. a model folder's
// config.json); hra::Error ("missing NAME") naming `path` when neither exists.
std::string file_in_folder(const std::string& path, const std::string& name);

}  // namespace hra::io
