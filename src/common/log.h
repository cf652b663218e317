// Warnings on stderr, each distinct message printed once per process.
#pragma once

#include <string>

namespace hra {

void warn_once(const std::string& message);

}  // namespace hra
