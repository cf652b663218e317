#include "common/error.h"

namespace hra {

std::string format_error(const std::string& message, const ErrorLocation& where) {
    std::string out;
    if (!where.file.empty()) {
        out += where.file;
        if (where.line > 0) out += ":" + std::to_string(where.line);
        out += ": ";
    }
    if (!where.key.empty()) out += "'" + where.key + "': ";
    return out + message;
}

Error::Error(const std::string& message, ErrorLocation where)
    : std::runtime_error(format_error(message, where)), message_(message), where_(std::move(where)) {}

Error Error::in_file(const std::string& file) const {
    if (!where_.file.empty()) return *this;
    ErrorLocation where = where_;
    where.file = file;
    return Error(message_, where);
}

Error Error::located(const std::string& file, long line) const {
    ErrorLocation where = where_;
    where.file = file;
    where.line = line;
    return Error(message_, where);
}

}  // namespace hra
