// Reading JSON files with errors that name the file.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace hra::io {

// Deepest nesting of arrays and objects any hra reader accepts. nlohmann::json parses
// and frees iteratively, but copying, dumping and the readers' own walks recurse, so a
// file nested 100,000 deep would overflow the stack; real configs and tokenizer files
// nest fewer than 10 levels.
constexpr int kMaxJsonDepth = 128;

// hra::Error naming `source` (and `line`) when `text` nests arrays and objects deeper
// than kMaxJsonDepth; a linear scan, before anything is parsed.
void check_json_depth(const std::string& text, const std::string& source, long line = 0);

// The parsed text; hra::Error ("invalid JSON: ...", or "nested deeper than 128 levels")
// naming `source` (and `line`, for one line of a JSONL file, when > 0) otherwise.
nlohmann::json parse_json(const std::string& text, const std::string& source, long line = 0);
// The parsed file; hra::Error ("invalid JSON: ...") naming `path` otherwise.
nlohmann::json read_json_file(const std::string& path);

// `path` itself when it is a file, else `path`/`name` (e.g. a model folder's
// config.json); hra::Error ("missing NAME") naming `path` when neither exists.
std::string file_in_folder(const std::string& path, const std::string& name);

}  // namespace hra::io
