#include "common/log.h"

#include <cstdio>
#include <mutex>
#include <set>

namespace hra {

void warn_once(const std::string& message) {
    static std::mutex mu;
    static std::set<std::string> seen;
    std::lock_guard<std::mutex> lock(mu);
    if (seen.insert(message).second) std::fprintf(stderr, "hra: warning: %s\n", message.c_str());
}

}  // namespace hra
