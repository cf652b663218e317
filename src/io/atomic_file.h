// Writing files so that a crash or an error never leaves a half-written file
// in place of a good one: write to a temporary name in the same folder,
// fsync, then rename over the target.
#pragma once

#include <functional>
#include <ostream>
#include <string>

namespace hra::io {

// Calls `write` with a stream on a temporary file beside `path`, then renames
// it to `path`. On any error (including one thrown by `write`) the temporary
// file is removed, `path` is untouched, and hra::Error is thrown.
void write_atomically(const std::string& path, const std::function<void(std::ostream&)>& write);

// Convenience: the whole content at once.
void write_file_atomically(const std::string& path, const std::string& content);

// Reads a whole file; hra::Error naming the file when it cannot.
std::string read_file(const std::string& path);

// Creates a folder and its parents (no error when it exists).
void make_dirs(const std::string& path);

}  // namespace hra::io
