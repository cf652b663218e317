// hra::Error: the one exception type of the project. It names what was at
// fault (file, key, line) so that every executable can print it in one line.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace hra {

struct ErrorLocation {
    ErrorLocation() = default;
    ErrorLocation(std::string file_, std::string key_ = "", long line_ = 0)
        : file(std::move(file_)), key(std::move(key_)), line(line_) {}

    std::string file;  // path of the file at fault, if any
    std::string key;   // tensor name, JSON key or module path, if any
    long line = 0;     // 1-based line number, 0 when not applicable
};

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message, ErrorLocation where = {});

    const std::string& message() const { return message_; }
    const std::string& file() const { return where_.file; }
    const std::string& key() const { return where_.key; }
    long line() const { return where_.line; }

    // A copy of this error with the file filled in (when it was not set yet).
    Error in_file(const std::string& file) const;
    // A copy at `file` and `line` (an error raised without them), keeping its key.
    Error located(const std::string& file, long line) const;

private:
    std::string message_;
    ErrorLocation where_;
};

// Formats "file:line: key: message" with the empty parts left out.
std::string format_error(const std::string& message, const ErrorLocation& where);

}  // namespace hra
